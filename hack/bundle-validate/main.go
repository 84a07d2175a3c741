// Command bundle-validate checks an OLM registry+v1 bundle directory the way
// `operator-sdk bundle validate DIR --select-optional suite=operatorframework` does, with the
// same validator library (github.com/operator-framework/api/pkg/validation) and bundle-format
// check (github.com/operator-framework/operator-registry/pkg/lib/bundle). It exists because the
// operator-sdk module is not served by the module proxy this project can reach.
//
// Unlike operator-sdk, it exits non-zero on warnings too: the project's bar is zero of both.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	apimanifests "github.com/operator-framework/api/pkg/manifests"
	apivalidation "github.com/operator-framework/api/pkg/validation"
	apierrors "github.com/operator-framework/api/pkg/validation/errors"
	registrybundle "github.com/operator-framework/operator-registry/pkg/lib/bundle"
	"github.com/sirupsen/logrus"
	k8svalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func main() {
	if len(os.Args) < 2 || len(os.Args) > 3 {
		fmt.Fprintln(os.Stderr, "usage: bundle-validate BUNDLE_DIR [K8S_VERSION]")
		os.Exit(2)
	}
	dir := os.Args[1]
	optional := map[string]string{}
	if len(os.Args) == 3 {
		optional["k8s-version"] = os.Args[2]
	}
	errs, warns := validate(dir, optional)
	for _, w := range warns {
		fmt.Printf("WARNING: %s\n", w)
	}
	for _, e := range errs {
		fmt.Printf("ERROR: %s\n", e)
	}
	if len(errs)+len(warns) > 0 {
		fmt.Printf("bundle %s: %d errors, %d warnings\n", dir, len(errs), len(warns))
		os.Exit(1)
	}
	fmt.Printf("bundle %s: all validators passed with no errors and no warnings\n", dir)
}

func validate(dir string, optional map[string]string) (errs, warns []string) {
	logger := logrus.NewEntry(logrus.New())
	logger.Logger.SetLevel(logrus.WarnLevel)
	// Format: annotations.yaml, media type, manifests/ and metadata/ layout.
	if err := registrybundle.NewImageValidator(nil, logger).ValidateBundleFormat(dir); err != nil {
		errs = append(errs, fmt.Sprintf("bundle format: %v", err))
	}
	manifests := filepath.Join(dir, registrybundle.ManifestsDir)
	bundle, err := apimanifests.GetBundleFromDir(manifests)
	if err != nil {
		return append(errs, fmt.Sprintf("reading bundle: %v", err)), warns
	}
	var results []apierrors.ManifestResult
	// Every object is of a kind registry+v1 supports and has valid metadata.
	objects := apierrors.ManifestResult{Name: bundle.Name}
	for _, u := range bundle.Objects {
		gvk := u.GetObjectKind().GroupVersionKind()
		if gvk.Kind == "ClusterServiceVersion" || gvk.Kind == "CustomResourceDefinition" {
			continue
		}
		if ok, _ := registrybundle.IsSupported(gvk.Kind); !ok {
			objects.Add(apierrors.ErrInvalidBundle("kind not supported in registry+v1 bundles", gvk))
		}
		noName := func(string, bool) []string { return nil }
		if e := k8svalidation.ValidateObjectMetaAccessor(metav1.Object(u), false, noName, field.NewPath("metadata")); len(e) > 0 {
			objects.Add(apierrors.ErrFailedValidation(e.ToAggregate().Error(), u.GetName()))
		}
	}
	results = append(results, objects)
	// The default validators.
	results = append(results, apivalidation.BundleValidator.Validate(bundle)...)
	if bundle.CSV == nil {
		errs = append(errs, "no ClusterServiceVersion in bundle")
	} else {
		results = append(results, apivalidation.ClusterServiceVersionValidator.Validate(bundle.CSV)...)
	}
	var crds []interface{}
	for _, crd := range bundle.V1CRDs {
		crds = append(crds, crd)
	}
	results = append(results, apivalidation.CustomResourceDefinitionValidator.Validate(crds...)...)
	// The suite=operatorframework optional validators.
	all := bundle.ObjectsToValidate()
	for _, obj := range bundle.Objects {
		all = append(all, obj)
	}
	all = append(all, optional)
	for _, v := range []interface {
		Validate(...interface{}) []apierrors.ManifestResult
	}{
		apivalidation.OperatorHubV2Validator,
		apivalidation.StandardCapabilitiesValidator,
		apivalidation.StandardCategoriesValidator,
		apivalidation.GoodPracticesValidator,
		apivalidation.AlphaDeprecatedAPIsValidator,
	} {
		results = append(results, v.Validate(all...)...)
	}
	for _, r := range results {
		for _, e := range r.Errors {
			errs = append(errs, fmt.Sprintf("%s: %s", r.Name, e.Error()))
		}
		for _, w := range r.Warnings {
			warns = append(warns, fmt.Sprintf("%s: %s", r.Name, w.Error()))
		}
	}
	return errs, warns
}
