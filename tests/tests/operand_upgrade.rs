//! Operand upgrades on the real apiserver, driven by the operator's controller: changing
//! `spec.version` rolls the control plane first and moves `status.version` only once it is
//! Available (status shows the target and progress meanwhile); a control plane that never
//! becomes Available halts the upgrade Degraded past the gate timeout; setting `spec.version`
//! back rolls back the same way; a version more than one minor away is refused before anything
//! changes. No kubelet runs: the test reports the control plane's pods ready where one would.
//!
//! Only this test binary runs a controller here: it watches every namespace.

use std::time::Duration;

use eg_crds::envoy_gateway::UpgradePhase;
use eg_crds::{EnvoyGateway, EnvoyGatewaySpec};
use eg_e2e::{eg_condition, eventually, until_environment_ready, with_temp_namespace};
use eg_operator::environment::controller::run;
use eg_operator::environment::reconcile::OperatorSettings;
use eg_operator::metrics::Metrics;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

const DEPLOYMENT: &str = "prod-envoy-gateway";

fn image(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

async fn set_version(api: &Api<EnvoyGateway>, version: &str) -> anyhow::Result<()> {
    api.patch(
        "prod",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"version": version}})),
    )
    .await?;
    Ok(())
}

/// Waits for the EnvoyGateway's condition `type_` to have `status` and `reason`.
async fn condition_is(
    api: &Api<EnvoyGateway>,
    type_: &str,
    status: &str,
    reason: &str,
) -> EnvoyGateway {
    eventually(
        &format!("{type_}={status} ({reason})"),
        Duration::from_secs(45),
        || {
            let api = api.clone();
            async move {
                let eg = api.get("prod").await.ok()?;
                eg_condition(&eg, type_)
                    .is_some_and(|c| c.0 == status && c.1 == reason)
                    .then_some(eg)
            }
        },
    )
    .await
}

#[tokio::test]
async fn upgrades_roll_the_control_plane_first_halt_on_a_failed_gate_and_roll_back() {
    with_temp_namespace(|client, ns| async move {
        let settings = OperatorSettings {
            runnable_versions: ["0.1.0", "0.2.0", "0.3.0", "0.5.0"]
                .map(String::from)
                .to_vec(),
            upgrade_gate_timeout: Duration::from_secs(4),
            ..OperatorSettings::new(eg_operator::cli::DEFAULT_IMAGE_REPOSITORY)
        };
        let controller = tokio::spawn(run(client.clone(), settings, Metrics::new()));
        let api: Api<EnvoyGateway> = Api::namespaced(client.clone(), &ns);
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let spec: EnvoyGatewaySpec = serde_json::from_value(json!({
            "version": "0.1.0",
            "gatewayClassName": format!("class-{ns}"),
        }))?;
        api.create(&PostParams::default(), &EnvoyGateway::new("prod", spec))
            .await?;
        until_environment_ready(&client, &ns, "prod", Some("0.1.0")).await;

        // Upgrade: the control plane rolls first; the running version waits for it.
        set_version(&api, "0.2.0").await?;
        let upgrading = condition_is(&api, "Progressing", "True", "Upgrading").await;
        let status = upgrading.status.clone().expect("status");
        assert_eq!(status.version.as_deref(), Some("0.1.0"));
        assert_eq!(status.target_version.as_deref(), Some("0.2.0"));
        let record = status.upgrade.expect("upgrade record");
        assert_eq!(
            (record.from.as_str(), record.to.as_str()),
            ("0.1.0", "0.2.0")
        );
        assert_eq!(record.phase, UpgradePhase::ControlPlane);
        assert!(image(&deployments.get(DEPLOYMENT).await?).ends_with(":v0.2.0"));
        let upgraded = until_environment_ready(&client, &ns, "prod", Some("0.2.0")).await;
        let status = upgraded.status.expect("status");
        assert_eq!(status.target_version, None);
        assert_eq!(
            status.upgrade.map(|u| u.phase),
            Some(UpgradePhase::Complete)
        );

        // A control plane that never becomes Available: halted and Degraded past the gate,
        // still reporting the version that runs.
        set_version(&api, "0.3.0").await?;
        let halted = condition_is(&api, "Degraded", "True", "UpgradeHalted").await;
        let status = halted.status.clone().expect("status");
        assert_eq!(status.version.as_deref(), Some("0.2.0"));
        assert_eq!(status.target_version.as_deref(), Some("0.3.0"));
        assert_eq!(
            status.upgrade.as_ref().map(|u| u.phase),
            Some(UpgradePhase::Halted)
        );
        let (_, _, message) = eg_condition(&halted, "Degraded").expect("Degraded");
        assert!(message.contains("did not become Available"), "{message}");

        // Rollback: spec.version set back rolls the control plane back the same way.
        set_version(&api, "0.2.0").await?;
        let back = until_environment_ready(&client, &ns, "prod", Some("0.2.0")).await;
        let record = back.status.and_then(|s| s.upgrade).expect("upgrade record");
        assert_eq!(
            (record.from.as_str(), record.to.as_str(), record.phase),
            ("0.3.0", "0.2.0", UpgradePhase::Complete)
        );
        assert!(image(&deployments.get(DEPLOYMENT).await?).ends_with(":v0.2.0"));
        assert_eq!(
            eg_condition(&api.get("prod").await?, "Degraded").map(|c| c.0),
            Some("False".into())
        );

        // More than one minor at once: refused before anything changes.
        let before = deployments.get(DEPLOYMENT).await?;
        set_version(&api, "0.5.0").await?;
        let refused = condition_is(&api, "Degraded", "True", "InvalidSpec").await;
        let (_, _, message) = eg_condition(&refused, "Degraded").expect("Degraded");
        assert!(message.contains("one minor version"), "{message}");
        let after = deployments.get(DEPLOYMENT).await?;
        // Its spec did not change (status may, as the Deployment controller settles).
        assert_eq!(after.metadata.generation, before.metadata.generation);
        assert_eq!(image(&after), image(&before));
        controller.abort();
        Ok(())
    })
    .await;
}
