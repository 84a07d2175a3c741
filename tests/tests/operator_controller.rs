//! `eg-operator operator`'s controller loop on the real apiserver: an EnvoyGateway goes from
//! Progressing (waiting for its control plane) to Ready with its version recorded, Events are
//! published, an invalid spec is reported as Degraded without touching what runs, and deleting
//! the EnvoyGateway removes its cluster-scoped objects through the finalizer.
//!
//! Only this test binary runs a controller: it watches every namespace.

use std::time::Duration;

use eg_crds::{EnvoyGateway, EnvoyGatewaySpec};
use eg_e2e::{eg_condition, eventually, until_environment_ready, with_temp_namespace};
use eg_operator::environment::controller::{FINALIZER, run};
use eg_operator::environment::reconcile::OperatorSettings;
use eg_operator::metrics::Metrics;
use gateway_api::apis::standard::gatewayclasses::GatewayClass;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

#[tokio::test]
async fn operator_drives_an_environment_through_its_lifecycle() {
    with_temp_namespace(|client, ns| async move {
        let metrics = Metrics::new();
        let controller = tokio::spawn(run(
            client.clone(),
            OperatorSettings::new("quay.io/eg-operator/eg-operator"),
            metrics.clone(),
        ));
        let class = format!("class-{ns}");
        let api: Api<EnvoyGateway> = Api::namespaced(client.clone(), &ns);
        let spec: EnvoyGatewaySpec = serde_json::from_value(json!({"gatewayClassName": class}))?;
        api.create(&PostParams::default(), &EnvoyGateway::new("prod", spec))
            .await?;

        let waiting = eventually("Progressing=True", Duration::from_secs(30), || {
            let api = api.clone();
            async move {
                let eg = api.get("prod").await.ok()?;
                eg_condition(&eg, "Progressing")
                    .filter(|c| c.0 == "True")
                    .map(|c| (eg, c))
            }
        })
        .await;
        assert_eq!(waiting.1.1, "Waiting");
        assert!(
            waiting.1.2.contains("Deployment Available"),
            "{:?}",
            waiting.1
        );
        assert!(waiting.0.finalizers().iter().any(|f| f == FINALIZER));

        // The control plane's pods report Ready (kubelet stand-in) and the environment converges.
        let ready = until_environment_ready(&client, &ns, "prod", None).await;
        let status = ready.status.clone().expect("status");
        assert_eq!(status.version.as_deref(), Some("0.1.0"));
        assert_eq!(status.observed_generation, ready.metadata.generation);
        let classes: Api<GatewayClass> = Api::all(client.clone());
        assert!(classes.get_opt(&class).await?.is_some());

        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        let reasons: Vec<String> = events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("prod"))
            .filter_map(|e| e.reason)
            .collect();
        assert!(
            reasons.iter().any(|r| r == "Applied"),
            "events: {reasons:?}"
        );
        assert!(
            reasons.iter().any(|r| r == "CertificateIssued"),
            "events: {reasons:?}"
        );

        // A second EnvoyGateway claiming the same GatewayClass: Degraded (Conflict), and the
        // class stays the first one's.
        let spec: EnvoyGatewaySpec = serde_json::from_value(json!({"gatewayClassName": class}))?;
        api.create(&PostParams::default(), &EnvoyGateway::new("thief", spec))
            .await?;
        let conflict = eventually(
            "Degraded=True for the second claimant",
            Duration::from_secs(30),
            || {
                let api = api.clone();
                async move {
                    let eg = api.get("thief").await.ok()?;
                    eg_condition(&eg, "Degraded").filter(|c| c.0 == "True")
                }
            },
        )
        .await;
        assert_eq!(conflict.1, "Conflict");
        assert!(
            conflict.2.contains(&format!("GatewayClass {class}")),
            "{conflict:?}"
        );
        let owner = classes.get(&class).await?.spec.controller_name;
        assert_eq!(owner, format!("operator.gateway.envoyproxy.io/{ns}.prod"));
        api.delete("thief", &DeleteParams::default()).await?;

        // An invalid spec the schema cannot catch: Degraded, and what runs stays.
        api.patch(
            "prod",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"certificates": {"renewBefore": "9000h"}}})),
        )
        .await?;
        let degraded = eventually("Degraded=True", Duration::from_secs(30), || {
            let api = api.clone();
            async move {
                let eg = api.get("prod").await.ok()?;
                eg_condition(&eg, "Degraded").filter(|c| c.0 == "True")
            }
        })
        .await;
        assert_eq!(degraded.1, "InvalidSpec");
        assert!(
            degraded.2.contains("spec.certificates.renewBefore"),
            "{degraded:?}"
        );
        let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
        let role_name = format!("eg-operator:{ns}:prod");
        assert!(cluster_roles.get_opt(&role_name).await?.is_some());
        let exposition = metrics.encode();
        for verdict in ["waiting", "ready", "invalid_spec"] {
            assert!(
                exposition.contains(&format!(
                    "eg_operator_reconciles_total{{verdict=\"{verdict}\"}}"
                )),
                "{exposition}"
            );
        }

        // Deleting the EnvoyGateway removes its cluster-scoped objects, then the finalizer.
        api.delete("prod", &DeleteParams::default()).await?;
        eventually("EnvoyGateway deleted", Duration::from_secs(30), || {
            let api = api.clone();
            async move {
                api.get_opt("prod")
                    .await
                    .ok()
                    .filter(Option::is_none)
                    .map(|_| ())
            }
        })
        .await;
        assert!(cluster_roles.get_opt(&role_name).await?.is_none());
        assert!(classes.get_opt(&class).await?.is_none());
        controller.abort();
        Ok(())
    })
    .await;
}
