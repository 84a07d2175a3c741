//! `migrate ingress-nginx` against a real kube-apiserver with the Gateway API (experimental,
//! v1.5.1) and Envoy Gateway (v1.9.1) CRDs installed:
//! - every golden output (one per annotation and path type, and the realistic estate) is
//!   accepted by server-side apply, so the policies' field names and values pass upstream's
//!   schemas and CEL rules, not only our goldens;
//! - live mode reads Ingresses, IngressClasses, Services and auth Secrets from the cluster, and
//!   `--apply` creates the result next to the Ingresses with its own field manager, deletes
//!   nothing, prints the cut-over steps and is idempotent.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use eg_e2e::{shared_cluster, with_temp_namespace};
use eg_operator::migrate::input::read_yaml;
use eg_operator::migrate::{Input, Options, convert};
use eg_operator::migrate_cmd::{FIELD_MANAGER, apply};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

fn golden_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/migrate/golden")
}

async fn ensure_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(name).await?.is_none() {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        namespaces.create(&PostParams::default(), &ns).await?;
    }
    Ok(())
}

#[tokio::test]
async fn every_golden_output_is_accepted_by_the_apiserver() -> anyhow::Result<()> {
    let client = shared_cluster().client();
    let mut cases: Vec<_> = std::fs::read_dir(golden_dir())?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    cases.sort();
    let mut applied = 0;
    for case in cases {
        let mut input = Input::default();
        let text = std::fs::read_to_string(case.join("input.yaml"))?;
        read_yaml(&mut input, "input.yaml", &text)?;
        let migration = convert(&input, &Options::default());
        let namespaces: BTreeSet<&str> = migration
            .objects
            .iter()
            .filter_map(|o| o["metadata"]["namespace"].as_str())
            .collect();
        for ns in namespaces {
            ensure_namespace(&client, ns).await?;
        }
        let done = apply(&client, &migration.objects)
            .await
            .map_err(|e| anyhow::anyhow!("case {}: {e}", case.display()))?;
        assert_eq!(done.len(), migration.objects.len());
        applied += done.len();
    }
    eprintln!("the apiserver accepted {applied} migrated objects");
    assert!(applied > 100, "only {applied} objects applied");
    Ok(())
}

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("valid object")
}

#[tokio::test]
async fn live_mode_applies_next_to_the_ingresses_and_deletes_nothing() {
    with_temp_namespace(|client, ns| async move {
        let ingress: Ingress = serde_json::from_value(json!({
            "metadata": {"name": "shop", "namespace": ns, "annotations": {
                "nginx.ingress.kubernetes.io/auth-type": "basic",
                "nginx.ingress.kubernetes.io/auth-secret": "users",
                "nginx.ingress.kubernetes.io/limit-rps": "5",
            }},
            "spec": {"ingressClassName": "nginx", "rules": [{"host": "shop.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"name": "http"}}}},
            ]}}]},
        }))?;
        Api::<Ingress>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &ingress)
            .await?;
        let core = |kind: &str| ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", kind));
        Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &core("Service"))
            .create(&PostParams::default(), &object(json!({
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"ports": [{"name": "http", "port": 8080}]},
            })))
            .await?;
        Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &core("Secret"))
            .create(&PostParams::default(), &object(json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "users"},
                "stringData": {"auth": "alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n"},
            })))
            .await?;

        let run = || {
            Command::new(env!("CARGO_BIN_EXE_eg-operator"))
                .args(["migrate", "ingress-nginx", "--apply", "--strict"])
                .arg("--kubeconfig")
                .arg(shared_cluster().kubeconfig_path())
                .args(["--namespace", &ns, "--gateway-namespace", &ns])
                .output()
        };
        let output = run()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert!(stderr.contains("no Ingress was changed or deleted"), "{stderr}");
        assert!(stderr.contains("Cut over host by host"), "{stderr}");
        // The manifests also went to stdout.
        assert!(String::from_utf8_lossy(&output.stdout).contains("kind: HTTPRoute"));

        let api = |group: &str, version: &str, kind: &str| {
            Api::<DynamicObject>::namespaced_with(
                client.clone(),
                &ns,
                &ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind)),
            )
        };
        let route = api("gateway.networking.k8s.io", "v1", "HTTPRoute")
            .get("shop-shop-example-com")
            .await?;
        // The named port was resolved through the live Service.
        assert_eq!(route.data["spec"]["rules"][0]["backendRefs"][0]["port"], 8080);
        let managers: Vec<String> = route
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|m| m.manager.clone())
            .collect();
        assert_eq!(managers, [FIELD_MANAGER]);
        api("gateway.networking.k8s.io", "v1", "Gateway").get("nginx").await?;
        let policy = api("gateway.envoyproxy.io", "v1alpha1", "SecurityPolicy").get("shop").await?;
        assert_eq!(policy.data["spec"]["basicAuth"]["users"]["name"], "users-htpasswd");
        api("gateway.envoyproxy.io", "v1alpha1", "BackendTrafficPolicy").get("shop").await?;
        api("", "v1", "Secret").get("users-htpasswd").await?;
        // Nothing deleted: the Ingress is still there, untouched.
        Api::<Ingress>::namespaced(client.clone(), &ns).get("shop").await?;

        // Running it again changes nothing and still succeeds.
        let again = run()?;
        assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
        Ok(())
    })
    .await;
}
