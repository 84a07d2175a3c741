//! The committed OLM bundle on the real apiserver: its CRDs install, and the operator, running as
//! the CSV's service account with exactly the CSV's RBAC (what OLM creates from
//! `clusterPermissions` and `permissions`), wins its leader Lease and takes an EnvoyGateway in
//! another namespace to Ready, then removes it through the finalizer. A forbidden call anywhere
//! on that path fails the test, so the CSV's permissions are enough; they are generated from the
//! operator's code (`environment::permissions`), so they are also no more than it uses.
//!
//! Only this test binary runs a controller here: it watches every namespace.

use std::path::{Path, PathBuf};
use std::time::Duration;

use eg_crds::{EnvoyGateway, EnvoyGatewaySpec};
use eg_e2e::cluster::{install_crds, read_crds_dir};
use eg_e2e::{eventually, shared_cluster, until_environment_ready, with_temp_namespace};
use eg_operator::environment::controller::run;
use eg_operator::environment::reconcile::OperatorSettings;
use eg_operator::leader::lease::{self, LeaseConfig};
use eg_operator::metrics::Metrics;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const SERVICE_ACCOUNT: &str = "eg-operator";

fn bundle_manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bundle/manifests")
}

fn read_csv() -> Value {
    let path = bundle_manifests().join("eg-operator.clusterserviceversion.yaml");
    let text = std::fs::read_to_string(&path).expect("read the committed CSV");
    serde_yaml_ng::from_str(&text).expect("CSV is YAML")
}

/// The rules of the CSV's `clusterPermissions` or `permissions` for the operator's account.
fn rules(csv: &Value, field: &str) -> Vec<PolicyRule> {
    let entries = csv["spec"]["install"]["spec"][field]
        .as_array()
        .unwrap_or_else(|| panic!("CSV has no {field}"));
    let entry = entries
        .iter()
        .find(|e| e["serviceAccountName"] == SERVICE_ACCOUNT)
        .unwrap_or_else(|| panic!("{field} has no entry for {SERVICE_ACCOUNT}"));
    serde_json::from_value(entry["rules"].clone()).expect("rules are PolicyRules")
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        ..ObjectMeta::default()
    }
}

/// What OLM creates from the CSV's install strategy: the ServiceAccount, a ClusterRole and
/// binding from `clusterPermissions`, a Role and binding in the install namespace from
/// `permissions`. Returns the cluster-scoped name to clean up.
async fn install_csv_rbac(admin: &Client, csv: &Value, ns: &str) -> anyhow::Result<String> {
    let pp = PostParams::default();
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create(
            &pp,
            &ServiceAccount {
                metadata: meta(SERVICE_ACCOUNT, Some(ns)),
                ..ServiceAccount::default()
            },
        )
        .await?;
    let subject: k8s_openapi::api::rbac::v1::Subject = serde_json::from_value(json!({
        "kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": ns,
    }))?;
    let cluster_name = format!("eg-operator-{ns}");
    Api::<ClusterRole>::all(admin.clone())
        .create(
            &pp,
            &ClusterRole {
                metadata: meta(&cluster_name, None),
                rules: Some(rules(csv, "clusterPermissions")),
                ..ClusterRole::default()
            },
        )
        .await?;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &pp,
            &ClusterRoleBinding {
                metadata: meta(&cluster_name, None),
                role_ref: serde_json::from_value(json!({
                    "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_name,
                }))?,
                subjects: Some(vec![subject.clone()]),
            },
        )
        .await?;
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(
            &pp,
            &Role {
                metadata: meta(SERVICE_ACCOUNT, Some(ns)),
                rules: Some(rules(csv, "permissions")),
            },
        )
        .await?;
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(
            &pp,
            &RoleBinding {
                metadata: meta(SERVICE_ACCOUNT, Some(ns)),
                role_ref: serde_json::from_value(json!({
                    "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SERVICE_ACCOUNT,
                }))?,
                subjects: Some(vec![subject]),
            },
        )
        .await?;
    Ok(cluster_name)
}

#[tokio::test]
async fn the_operator_reconciles_with_exactly_the_csv_permissions() {
    with_temp_namespace(|admin, operator_ns| async move {
        // The bundle's CRDs install (they are also what the harness installed: same source).
        let crds = read_crds_dir(&bundle_manifests())?;
        assert_eq!(crds.len(), eg_crds::all().len());
        install_crds(&admin, &crds).await?;

        let csv = read_csv();
        let mut config = shared_cluster().config();
        config.auth_info.impersonate = Some(format!(
            "system:serviceaccount:{operator_ns}:{SERVICE_ACCOUNT}"
        ));
        let operator = Client::try_from(config)?;
        // Impersonation is in effect: with no RBAC yet, the account may not even list.
        let denied = Api::<EnvoyGateway>::all(operator.clone())
            .list(&Default::default())
            .await;
        assert!(
            matches!(&denied, Err(kube::Error::Api(e)) if e.code == 403),
            "{denied:?}"
        );
        let cluster_rbac = install_csv_rbac(&admin, &csv, &operator_ns).await?;

        // Leader election in the install namespace, as the Deployment runs it.
        let (mut leading, election) = lease::run(
            operator.clone(),
            LeaseConfig {
                namespace: operator_ns.clone(),
                name: "eg-operator-leader".into(),
                identity: "csv-permissions-test".into(),
                lease_duration: Duration::from_secs(15),
                retry_period: Duration::from_secs(1),
            },
        );
        tokio::time::timeout(Duration::from_secs(30), leading.wait_for(|l| *l))
            .await
            .map_err(|_| anyhow::anyhow!("the CSV's account never won its Lease"))??;

        let controller = tokio::spawn(run(
            operator.clone(),
            OperatorSettings::new(eg_operator::cli::DEFAULT_IMAGE_REPOSITORY),
            Metrics::new(),
        ));

        // The environment lives in another namespace: cluster-wide permissions at work.
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        let env_ns = format!("{operator_ns}-env");
        namespaces
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: meta(&env_ns, None),
                    ..Namespace::default()
                },
            )
            .await?;
        let api: Api<EnvoyGateway> = Api::namespaced(admin.clone(), &env_ns);
        let spec: EnvoyGatewaySpec = serde_json::from_value(json!({
            "gatewayClassName": format!("class-{env_ns}"),
            "watchNamespaces": [env_ns.clone(), operator_ns.clone()],
        }))?;
        api.create(&PostParams::default(), &EnvoyGateway::new("prod", spec))
            .await?;
        let converged = until_environment_ready(&admin, &env_ns, "prod", None).await;
        assert_eq!(
            converged.status.and_then(|s| s.version).as_deref(),
            Some(eg_crds::envoy_gateway::DEFAULT_VERSION)
        );

        // Deletion: the finalizer removes cluster-scoped and cross-namespace objects.
        api.delete("prod", &DeleteParams::default()).await?;
        eventually("EnvoyGateway deleted", Duration::from_secs(30), || {
            let api = api.clone();
            async move { api.get_opt("prod").await.ok().filter(Option::is_none) }
        })
        .await;
        let classes: Api<gateway_api::apis::standard::gatewayclasses::GatewayClass> =
            Api::all(admin.clone());
        assert!(classes.get_opt(&format!("class-{env_ns}")).await?.is_none());

        controller.abort();
        election.abort();
        let dp = DeleteParams::default();
        let _ = namespaces.delete(&env_ns, &dp).await;
        let _ = Api::<ClusterRoleBinding>::all(admin.clone())
            .delete(&cluster_rbac, &dp)
            .await;
        let _ = Api::<ClusterRole>::all(admin.clone())
            .delete(&cluster_rbac, &dp)
            .await;
        Ok(())
    })
    .await;
}
