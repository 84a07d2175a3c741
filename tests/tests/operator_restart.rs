//! Operator self-upgrade on the real apiserver: a new operator process adopts what the previous
//! one created. After the first controller took an environment to Ready and stopped, a fresh
//! controller (what an OLM upgrade starts) reconciles it without a single mutating API call, so
//! no object is recreated and no Deployment rolls.
//!
//! Only this test binary runs controllers here: they watch every namespace.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eg_crds::{EnvoyGateway, EnvoyGatewaySpec};
use eg_e2e::{counting_client, eventually, until_environment_ready, with_temp_namespace};
use eg_operator::environment::controller::run;
use eg_operator::environment::dereference::owned_objects;
use eg_operator::environment::reconcile::OperatorSettings;
use eg_operator::metrics::Metrics;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

fn settings() -> OperatorSettings {
    OperatorSettings::new(eg_operator::cli::DEFAULT_IMAGE_REPOSITORY)
}

/// `kind/namespace/name` → resourceVersion of every object the environment owns.
async fn versions(client: &Client, uid: &str) -> BTreeMap<String, String> {
    owned_objects(client, uid)
        .await
        .expect("list owned objects")
        .into_iter()
        .map(|o| {
            let meta = &o["metadata"];
            (
                format!("{}/{}/{}", o["kind"], meta["namespace"], meta["name"]),
                meta["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_restarted_operator_leaves_an_unchanged_environment_untouched() {
    with_temp_namespace(|client, ns| async move {
        let first = tokio::spawn(run(client.clone(), settings(), Metrics::new()));
        let api: Api<EnvoyGateway> = Api::namespaced(client.clone(), &ns);
        let spec: EnvoyGatewaySpec =
            serde_json::from_value(json!({"gatewayClassName": format!("class-{ns}")}))?;
        api.create(&PostParams::default(), &EnvoyGateway::new("prod", spec))
            .await?;
        let ready = until_environment_ready(&client, &ns, "prod", None).await;
        first.abort();
        let _ = first.await;
        let uid = ready.uid().expect("uid");
        let before = versions(&client, &uid).await;
        let eg_before = api.get("prod").await?.resource_version();
        assert!(before.len() > 5, "{before:?}");

        // The new operator: every request it sends is recorded.
        let log = Arc::new(Mutex::new(Vec::new()));
        let metrics = Metrics::new();
        let second = tokio::spawn(run(
            counting_client(log.clone()),
            settings(),
            metrics.clone(),
        ));
        eventually(
            "a pass of the new operator",
            Duration::from_secs(30),
            || {
                let text = metrics.encode();
                async move { text.contains("verdict=\"ready\"").then_some(()) }
            },
        )
        .await;
        // Let anything it would still do after its first pass happen.
        tokio::time::sleep(Duration::from_secs(2)).await;
        second.abort();

        let calls = log.lock().map(|l| l.clone()).unwrap_or_default();
        let mutating: Vec<&String> = calls.iter().filter(|c| !c.starts_with("GET ")).collect();
        assert!(mutating.is_empty(), "mutating calls: {mutating:?}");
        assert_eq!(versions(&client, &uid).await, before);
        assert_eq!(api.get("prod").await?.resource_version(), eg_before);
        eprintln!("restarted operator: {} GETs, 0 writes", calls.len());
        Ok(())
    })
    .await;
}
