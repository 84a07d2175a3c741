//! The EnvoyGateway environment pipeline on a real apiserver: objects applied in waves with the
//! specified replicas, anti-affinity, PDB, Service and certificates; a converged environment
//! reconciles with zero mutating API calls (counted); spec edits change only what they must;
//! removed fields prune their objects; environments stay isolated; conflicts change nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use eg_crds::{EnvoyGateway, EnvoyGatewaySpec};
use eg_e2e::pod_status::report_pods_ready;
use eg_e2e::{counting_client, with_temp_namespace};
use eg_graph::Action;
use eg_operator::environment::apply::ApplyOutcome;
use eg_operator::environment::reconcile::{
    OperatorSettings, ReconcileOutcome, reconcile_environment,
};
use gateway_api::apis::standard::gatewayclasses::GatewayClass;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

fn settings() -> OperatorSettings {
    OperatorSettings::new("quay.io/eg-operator/eg-operator")
}

async fn create_eg(client: &Client, ns: &str, name: &str, spec: serde_json::Value) -> EnvoyGateway {
    let spec: EnvoyGatewaySpec = serde_json::from_value(spec).expect("spec");
    let api: Api<EnvoyGateway> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &EnvoyGateway::new(name, spec))
        .await
        .expect("create EnvoyGateway")
}

async fn pass(client: &Client, eg: &EnvoyGateway) -> ReconcileOutcome {
    reconcile_environment(client, eg, &settings(), SystemTime::now())
        .await
        .expect("reconcile pass")
}

/// Passes until the environment is complete, reporting the control plane's pods ready as a
/// kubelet would in between (see `pod_status`).
async fn converge(client: &Client, eg: &EnvoyGateway) -> ReconcileOutcome {
    let ns = eg.metadata.namespace.clone().expect("namespace");
    let name = eg.metadata.name.clone().expect("name");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let outcome = pass(client, eg).await;
        assert!(
            outcome.conflicts.is_empty(),
            "conflicts: {:?}",
            outcome.conflicts
        );
        if matches!(outcome.applied, Some(ApplyOutcome::Complete { .. })) {
            return outcome;
        }
        assert!(
            Instant::now() < deadline,
            "not converged: {:?}",
            outcome.applied
        );
        let selector =
            format!("app.kubernetes.io/name=envoy-gateway,app.kubernetes.io/instance={name}");
        report_pods_ready(client, &ns, &selector)
            .await
            .expect("pod status");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn environment_applies_in_waves_converges_and_then_writes_nothing() {
    with_temp_namespace(|client, ns| async move {
        let class = format!("class-{ns}");
        let eg = create_eg(
            &client,
            &ns,
            "prod",
            json!({"gatewayClassName": class, "controlPlane": {"replicas": 2}}),
        )
        .await;

        // First pass: everything up to the Deployment, which is not available yet; the
        // GatewayClass and PDB (later waves) wait for it.
        let first = pass(&client, &eg).await;
        let (creates, ..) = first.plan.counts();
        assert_eq!(
            creates,
            first.plan.steps.len(),
            "all creates on an empty cluster"
        );
        match &first.applied {
            Some(ApplyOutcome::Waiting { id, rule, .. }) => {
                assert_eq!(id.kind, "Deployment");
                assert_eq!(rule, "Deployment Available");
            }
            other => panic!("expected to wait for the Deployment, got {other:?}"),
        }
        let classes: Api<GatewayClass> = Api::all(client.clone());
        assert!(
            classes.get_opt(&class).await?.is_none(),
            "class must wait for its controller"
        );

        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let d = deployments.get("prod-envoy-gateway").await?;
        let spec = d.spec.clone().expect("spec");
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.expect("pod spec");
        let terms = pod
            .affinity
            .and_then(|a| a.pod_anti_affinity)
            .and_then(|p| p.preferred_during_scheduling_ignored_during_execution)
            .expect("preferred anti-affinity");
        let keys: Vec<(i32, String)> = terms
            .iter()
            .map(|t| (t.weight, t.pod_affinity_term.topology_key.clone()))
            .collect();
        assert_eq!(
            keys,
            [
                (100, "kubernetes.io/hostname".to_owned()),
                (50, "topology.kubernetes.io/zone".to_owned())
            ]
        );
        let container = &pod.containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some("quay.io/eg-operator/eg-operator:v0.1.0")
        );
        let sc = container
            .security_context
            .as_ref()
            .expect("security context");
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.run_as_non_root, Some(true));

        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        let svc = services.get("prod-envoy-gateway").await?;
        let ports: Vec<i32> = svc
            .spec
            .expect("spec")
            .ports
            .expect("ports")
            .iter()
            .map(|p| p.port)
            .collect();
        assert_eq!(ports, [18000, 19001]);

        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let server = secrets.get("prod-envoy-gateway-xds-server").await?;
        let data = server.data.expect("data");
        assert!(
            data.contains_key("ca.crt")
                && data.contains_key("tls.crt")
                && data.contains_key("tls.key")
        );

        // Converge: the Deployment becomes available, then the last wave lands.
        let done = converge(&client, &eg).await;
        assert!(matches!(done.applied, Some(ApplyOutcome::Complete { .. })));
        let gc = classes.get(&class).await?;
        assert_eq!(
            gc.spec.controller_name,
            format!("operator.gateway.envoyproxy.io/{ns}.prod")
        );
        let params = gc.spec.parameters_ref.as_ref().expect("parametersRef");
        assert_eq!((params.kind.as_str(), params.name.as_str()), ("EnvoyProxy", "prod-envoy-gateway-proxy"));
        // The class-wide EnvoyProxy carries spec.proxy in upstream's fields, and the upstream
        // CRD's schema accepted it.
        let proxies: Api<kube::api::DynamicObject> = Api::namespaced_with(
            client.clone(),
            &ns,
            &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                "gateway.envoyproxy.io",
                "v1alpha1",
                "EnvoyProxy",
            )),
        );
        let proxy = proxies.get("prod-envoy-gateway-proxy").await?;
        let k8s = &proxy.data["spec"]["provider"]["kubernetes"];
        assert_eq!(k8s["envoyDeployment"]["replicas"], 2);
        assert_eq!(k8s["envoyService"]["type"], "LoadBalancer");
        let term = &k8s["envoyDeployment"]["pod"]["affinity"]["podAntiAffinity"]
            ["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
        assert_eq!(term["matchLabelKeys"][0], "gateway.envoyproxy.io/owning-gateway-name");

        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
        let pdb = pdbs.get("prod-envoy-gateway").await?;
        assert_eq!(
            pdb.spec.expect("spec").max_unavailable,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
        );

        // A converged environment: the next pass plans nothing and makes no mutating call.
        let log = Arc::new(Mutex::new(Vec::new()));
        let counted = counting_client(log.clone());
        let quiet = pass(&counted, &eg).await;
        assert!(!quiet.plan.has_changes(), "{}", quiet.plan.render_text());
        assert!(
            quiet.issued.is_empty(),
            "certificates must be kept: {:?}",
            quiet.issued
        );
        let calls = log.lock().expect("log").clone();
        let mutating: Vec<&String> = calls.iter().filter(|c| !c.starts_with("GET ")).collect();
        assert!(mutating.is_empty(), "mutating calls: {mutating:?}");
        assert!(!calls.is_empty(), "the pass must have read the cluster");
        eprintln!("converged pass: {} GETs, 0 writes", calls.len());
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn spec_edits_touch_only_what_they_change_and_removed_fields_prune() {
    with_temp_namespace(|client, ns| async move {
        let class = format!("class-{ns}");
        let api: Api<EnvoyGateway> = Api::namespaced(client.clone(), &ns);
        create_eg(
            &client,
            &ns,
            "edit",
            json!({"gatewayClassName": class, "controlPlane": {"replicas": 2}}),
        )
        .await;
        let eg = api.get("edit").await?;
        converge(&client, &eg).await;

        // replicas 2 -> 3: only the Deployment's replicas change.
        let eg = api
            .patch(
                "edit",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"controlPlane": {"replicas": 3}}})),
            )
            .await?;
        let outcome = pass(&client, &eg).await;
        let updates: Vec<(String, Vec<String>)> = outcome
            .plan
            .steps
            .iter()
            .filter_map(|s| match &s.action {
                Action::Update { changes } => Some((
                    s.id.to_string(),
                    changes.iter().map(|c| c.path.clone()).collect(),
                )),
                _ => None,
            })
            .collect();
        assert_eq!(
            updates,
            [(
                format!("Deployment {ns}/edit-envoy-gateway"),
                vec![".spec.replicas".to_owned()]
            )],
            "{}",
            outcome.plan.render_text()
        );
        assert_eq!(outcome.plan.counts().0, 0, "no creates");
        assert_eq!(outcome.plan.counts().3, 0, "no deletes");

        // replicas -> 1: no PDB is wanted any more, so it is pruned.
        let eg = api
            .patch(
                "edit",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"controlPlane": {"replicas": 1}}})),
            )
            .await?;
        let done = converge(&client, &eg).await;
        let deletes: Vec<String> = done
            .plan
            .steps
            .iter()
            .filter(|s| s.action == Action::Delete)
            .map(|s| s.id.to_string())
            .collect();
        assert_eq!(
            deletes,
            [format!("PodDisruptionBudget {ns}/edit-envoy-gateway")]
        );
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
        assert!(pdbs.get_opt("edit-envoy-gateway").await?.is_none());
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn two_environments_stay_isolated_and_a_class_conflict_changes_nothing() {
    with_temp_namespace(|client, ns_a| async move {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let ns_b = format!("{ns_a}-b");
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns_b}}))?,
            )
            .await?;
        let class = format!("class-{ns_a}");
        let a = create_eg(&client, &ns_a, "env", json!({"gatewayClassName": class})).await;
        let b = create_eg(
            &client,
            &ns_b,
            "env",
            json!({"gatewayClassName": format!("{class}-b")}),
        )
        .await;
        converge(&client, &a).await;
        converge(&client, &b).await;

        // Each environment owns only its own objects: a pass over either changes nothing of
        // the other, and their cluster-scoped names differ.
        assert!(!pass(&client, &a).await.plan.has_changes());
        assert!(!pass(&client, &b).await.plan.has_changes());
        let roles: Api<ClusterRole> = Api::all(client.clone());
        assert!(
            roles
                .get_opt(&format!("eg-operator:{ns_a}:env"))
                .await?
                .is_some()
        );
        assert!(
            roles
                .get_opt(&format!("eg-operator:{ns_b}:env"))
                .await?
                .is_some()
        );

        // A third EnvoyGateway claims A's class: conflict, and nothing is written for it.
        let c = create_eg(&client, &ns_b, "thief", json!({"gatewayClassName": class})).await;
        let outcome = pass(&client, &c).await;
        assert!(outcome.applied.is_none());
        let conflicts: Vec<String> = outcome.conflicts.iter().map(ToString::to_string).collect();
        assert_eq!(conflicts, [format!("GatewayClass {class}")]);
        let ns_roles: Api<Role> = Api::namespaced(client.clone(), &ns_b);
        assert!(
            ns_roles.get_opt("thief-envoy-gateway").await?.is_none(),
            "nothing applied"
        );
        let classes: Api<GatewayClass> = Api::all(client.clone());
        let gc = classes.get(&class).await?;
        assert_eq!(
            gc.spec.controller_name,
            format!("operator.gateway.envoyproxy.io/{ns_a}.env"),
            "the owner's class is untouched"
        );

        let _ = namespaces.delete(&ns_b, &DeleteParams::background()).await;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn live_plan_shows_nothing_for_a_converged_environment_and_the_diff_of_an_edit() {
    with_temp_namespace(|client, ns| async move {
        let class = format!("class-{ns}");
        let spec = json!({"gatewayClassName": class, "controlPlane": {"replicas": 2}});
        let eg = create_eg(&client, &ns, "live", spec.clone()).await;
        converge(&client, &eg).await;

        let manifest = |spec: serde_json::Value| -> EnvoyGateway {
            serde_json::from_value(json!({
                "apiVersion": "operator.gateway.envoyproxy.io/v1alpha1",
                "kind": "EnvoyGateway",
                "metadata": {"name": "live"},
                "spec": spec,
            }))
            .expect("manifest")
        };
        let file = std::path::Path::new("live.yaml");
        let image = settings().image_repository;
        let same = eg_operator::plan::live_plan(
            &client,
            file,
            manifest(spec),
            Some(&ns),
            &image,
            SystemTime::now(),
        )
        .await?;
        assert!(!same.plan.has_changes(), "{}", same.plan.render_text());

        let edited = eg_operator::plan::live_plan(
            &client,
            file,
            manifest(json!({"gatewayClassName": class, "controlPlane": {"replicas": 4}})),
            Some(&ns),
            &image,
            SystemTime::now(),
        )
        .await?;
        let text = edited.plan.render_text();
        assert!(
            text.contains(&format!(
                "  ~ Deployment {ns}/live-envoy-gateway\n      .spec.replicas: 2 -> 4\n"
            )),
            "{text}"
        );
        assert_eq!(
            edited.plan.counts(),
            (0, 1, edited.plan.steps.len() - 1, 0),
            "{text}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn certificates_rotate_with_both_cas_trusted_during_rotation() {
    with_temp_namespace(|client, ns| async move {
        let class = format!("class-{ns}");
        let eg = create_eg(
            &client,
            &ns,
            "rot",
            json!({"gatewayClassName": class, "certificates": {"duration": "1h", "renewBefore": "20m"}}),
        )
        .await;
        let t0 = SystemTime::now();
        let first = reconcile_environment(&client, &eg, &settings(), t0).await?;
        assert_eq!(first.issued.len(), 3);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let read = |name: &'static str| {
            let secrets = secrets.clone();
            async move {
                let data = secrets.get(name).await.expect("secret").data.expect("data");
                let text = |k: &str| String::from_utf8(data[k].0.clone()).expect("utf-8 PEM");
                (text("ca.crt"), text("tls.crt"))
            }
        };
        let (bundle_before, server_before) = read("rot-envoy-gateway-xds-server").await;
        assert_eq!(bundle_before.matches("BEGIN CERTIFICATE").count(), 1);

        // 45 minutes later the 1 h CA is within its 20 m renewBefore.
        let later = t0 + Duration::from_secs(45 * 60);
        let rotated = reconcile_environment(&client, &eg, &settings(), later).await?;
        let which: Vec<&str> = rotated.issued.iter().map(|i| i.which).collect();
        assert_eq!(which, ["CA", "xDS server", "proxy issuer"]);
        let (bundle_after, server_after) = read("rot-envoy-gateway-xds-server").await;
        assert_ne!(server_after, server_before);
        assert_eq!(
            bundle_after.matches("BEGIN CERTIFICATE").count(),
            2,
            "old and new CA are both trusted during the rotation"
        );
        let old_ca = bundle_before.trim();
        assert!(bundle_after.contains(old_ca), "the previous CA stays in the bundle");
        let (client_bundle, _) = read("rot-envoy-gateway-proxy-issuer").await;
        assert_eq!(client_bundle, bundle_after, "proxies get the same trust bundle");

        // Once the old CA has expired it leaves the bundle, and nothing else is reissued.
        let after_expiry = t0 + Duration::from_secs(70 * 60);
        let settled = reconcile_environment(&client, &eg, &settings(), after_expiry).await?;
        assert!(settled.issued.is_empty(), "{:?}", settled.issued);
        let (bundle_final, _) = read("rot-envoy-gateway-xds-server").await;
        assert_eq!(bundle_final.matches("BEGIN CERTIFICATE").count(), 1);
        assert!(!bundle_final.contains(old_ca));
        Ok(())
    })
    .await;
}
