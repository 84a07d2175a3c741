//! Proxy fleets in operand upgrades, on the real apiserver with everything of an environment
//! running but the kubelet: the operator's controller, and the control plane as the operator
//! configured it (its fleet task from the control plane's ConfigMap, its translator and xDS
//! server in-process) serving two Gateways, each with a real Envoy, so `Programmed` comes from
//! real ACKs. The test reports pods ready where a kubelet would, one workload at a time, which
//! lets it hold any gate closed.
//!
//! Proven: the control plane rolls first and no proxy changes before it is Available; a new
//! control plane process renders the unchanged fleets without a write; then fleets roll one
//! Gateway at a time (namespace/name order), each only after the previous one is Available and
//! Programmed; a control plane that never becomes Available halts before any proxy changes; a
//! fleet that never becomes Available halts the upgrade Degraded with the Gateway named, the
//! next fleet untouched; setting `spec.version` back rolls back only what moved; a restarted
//! operator and control plane send no write and leave the proxy Deployments untouched
//! (resourceVersion). "Untouched" mid-upgrade means the Deployment's generation did not move.
//!
//! Only this test binary runs an operator controller here: it watches every namespace.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eg_crds::envoy_gateway::UpgradePhase;
use eg_crds::{EnvoyGateway, EnvoyGatewaySpec};
use eg_e2e::manifests::apply;
use eg_e2e::pod_status::report_pods_ready;
use eg_e2e::{LOOPBACK, counting_client, eg_condition, eventually, free_port, with_temp_namespace};
use eg_operator::control_plane::config::ControllerConfig;
use eg_operator::control_plane::process::fleet_config;
use eg_operator::environment::controller::run;
use eg_operator::environment::names::Names;
use eg_operator::environment::reconcile::OperatorSettings;
use eg_operator::fleet::OPERAND_VERSION_ANNOTATION;
use eg_operator::metrics::Metrics;
use eg_operator::xds::bootstrap::AdsFlavour;
use gateway_api::apis::standard::gateways::Gateway;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinHandle;

mod common;

const LIMIT: Duration = Duration::from_secs(60);
const GATE: Duration = Duration::from_secs(12);
const GATEWAYS: [&str; 2] = ["a", "b"];

struct Env {
    client: Client,
    ns: String,
    egs: Api<EnvoyGateway>,
    deployments: Api<Deployment>,
}

impl Env {
    /// `(operand-version annotation, shutdown-manager image, generation)` of the fleet
    /// Deployment of Gateway `gw`: the generation moves with every change to its spec (a
    /// resourceVersion also moves with the Deployment controller's status updates).
    async fn fleet(&self, gw: &str) -> Option<(String, String, String)> {
        let d = self
            .deployments
            .get_opt(&format!("envoy-{gw}"))
            .await
            .ok()??;
        let version = d.annotations().get(OPERAND_VERSION_ANNOTATION)?.clone();
        let sidecar = d
            .spec
            .as_ref()?
            .template
            .spec
            .as_ref()?
            .init_containers
            .iter()
            .flatten()
            .find(|c| c.name == "shutdown-manager")?
            .image
            .clone()?;
        Some((version, sidecar, d.metadata.generation?.to_string()))
    }

    /// Whether the fleet Deployment of `gw` is Available with every replica updated.
    async fn available(&self, gw: &str) -> bool {
        let d = self
            .deployments
            .get_opt(&format!("envoy-{gw}"))
            .await
            .ok()
            .flatten();
        d.and_then(|d| serde_json::to_value(d).ok())
            .is_some_and(|d| eg_graph::Readiness::DeploymentAvailable.is_ready(&d))
    }

    async fn fleet_version(&self, gw: &str) -> String {
        self.fleet(gw).await.map(|f| f.0).unwrap_or_default()
    }

    /// Generation of every fleet Deployment.
    async fn generations(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for gw in GATEWAYS {
            out.insert(gw.to_owned(), self.fleet(gw).await.expect("fleet").2);
        }
        out
    }

    /// resourceVersion of every fleet Deployment once the Deployment controller stopped
    /// updating their status (the same for three seconds).
    async fn settled_resource_versions(&self) -> BTreeMap<String, String> {
        let read = || async {
            let mut out = BTreeMap::new();
            for gw in GATEWAYS {
                let d = self.deployments.get(&format!("envoy-{gw}")).await.ok()?;
                out.insert(gw.to_owned(), d.resource_version()?);
            }
            Some(out)
        };
        eventually("fleet Deployments settled", LIMIT, || async {
            let first = read().await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            (read().await? == first).then_some(first)
        })
        .await
    }

    /// Reports Gateway `gw`'s proxy pods ready (the kubelet stand-in).
    async fn proxies_ready(&self, gw: &str) {
        let selector: Vec<String> = eg_operator::fleet::build::selector(&self.ns, gw)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = report_pods_ready(&self.client, &self.ns, &selector.join(",")).await;
    }

    async fn control_plane_ready(&self) {
        let selector = "app.kubernetes.io/name=envoy-gateway,app.kubernetes.io/instance=prod";
        let _ = report_pods_ready(&self.client, &self.ns, selector).await;
    }

    async fn control_plane_image(&self) -> String {
        let d = self.deployments.get("prod-envoy-gateway").await.ok();
        d.and_then(|d| d.spec?.template.spec?.containers.first()?.image.clone())
            .unwrap_or_default()
    }

    async fn set_version(&self, version: &str) {
        self.egs
            .patch(
                "prod",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"version": version}})),
            )
            .await
            .expect("patch spec.version");
    }

    async fn eg(&self) -> EnvoyGateway {
        self.egs.get("prod").await.expect("EnvoyGateway")
    }

    /// The control plane's fleet task, configured from the ConfigMap the operator wrote, as a
    /// control-plane process starting now would be.
    async fn start_fleets(&self) -> (JoinHandle<()>, tokio::sync::watch::Sender<bool>) {
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.ns);
        let cm = cms.get("prod-envoy-gateway-config").await.expect("config");
        let text = cm.data.expect("data")["config.yaml"].clone();
        let config: ControllerConfig = serde_yaml_ng::from_str(&text).expect("config.yaml");
        let (leader, leading) = tokio::sync::watch::channel(true);
        let task = tokio::spawn(eg_operator::fleet::run::run(
            self.client.clone(),
            fleet_config(&config),
            leading,
        ));
        (task, leader)
    }

    /// Reports the pods of `gateways` and the control plane ready until the environment is
    /// Ready at `version`.
    async fn until_ready(&self, version: &str, gateways: &[&str]) -> EnvoyGateway {
        eventually(&format!("Ready at {version}"), LIMIT, || async {
            self.control_plane_ready().await;
            for gw in gateways {
                self.proxies_ready(gw).await;
            }
            let eg = self.eg().await;
            let at = eg.status.as_ref().and_then(|s| s.version.as_deref()) == Some(version);
            (at && eg_condition(&eg, "Ready").is_some_and(|c| c.0 == "True")).then_some(eg)
        })
        .await
    }
}

fn phase(eg: &EnvoyGateway) -> Option<UpgradePhase> {
    eg.status.as_ref()?.upgrade.as_ref().map(|u| u.phase)
}

fn allowed(eg: &EnvoyGateway) -> Vec<(String, String)> {
    eg.status
        .as_ref()
        .and_then(|s| s.upgrade.as_ref())
        .map(|u| {
            u.proxies
                .iter()
                .map(|p| (p.gateway.clone(), p.version.clone()))
                .collect()
        })
        .unwrap_or_default()
}

async fn programmed(gateways: &Api<Gateway>, name: &str) -> bool {
    gateways
        .get(name)
        .await
        .ok()
        .and_then(|g| g.status?.conditions)
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Programmed" && c.status == "True")
}

#[tokio::test]
async fn proxy_fleets_roll_one_gateway_at_a_time_halt_roll_back_and_survive_restarts() {
    with_temp_namespace(|client, ns| async move {
        let settings = OperatorSettings {
            runnable_versions: ["0.1.0", "0.2.0", "0.3.0"].map(String::from).to_vec(),
            upgrade_gate_timeout: GATE,
            ..OperatorSettings::new(eg_operator::cli::DEFAULT_IMAGE_REPOSITORY)
        };
        let operator = tokio::spawn(run(client.clone(), settings.clone(), Metrics::new()));
        let env = Env {
            client: client.clone(),
            ns: ns.clone(),
            egs: Api::namespaced(client.clone(), &ns),
            deployments: Api::namespaced(client.clone(), &ns),
        };
        let class = format!("class-{ns}");
        let spec: EnvoyGatewaySpec = serde_json::from_value(json!({
            "version": "0.1.0",
            "gatewayClassName": class,
            "watchNamespaces": [ns],
            "proxy": {"replicas": 1, "service": {"type": "ClusterIP"}},
        }))?;
        env.egs
            .create(&PostParams::default(), &EnvoyGateway::new("prod", spec))
            .await?;
        env.until_ready("0.1.0", &[]).await;

        // The control plane: fleets, translation, xDS; a real Envoy per Gateway.
        let (fleets, _leader) = env.start_fleets().await;
        let controller_name = Names::new(&ns, "prod").controller_name();
        let control_plane =
            common::start_control_plane(client.clone(), &controller_name, vec![ns.clone()]).await;
        let gateways: Api<Gateway> = Api::namespaced(client.clone(), &ns);
        let mut envoys = Vec::new();
        for gw in GATEWAYS {
            let port = free_port(LOOPBACK)?;
            apply(
                &client,
                Some(&ns),
                json!({
                    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                    "metadata": {"name": gw},
                    "spec": {"gatewayClassName": class, "listeners": [
                        {"name": "http", "protocol": "HTTP", "port": port}
                    ]}
                }),
            )
            .await;
            envoys.push(common::envoy_for(control_plane.xds, &ns, gw, AdsFlavour::Delta).await);
        }
        eventually("fleets at 0.1.0, Available, Programmed", LIMIT, || async {
            let mut all = true;
            for gw in GATEWAYS {
                env.proxies_ready(gw).await;
                all &= env.fleet_version(gw).await == "0.1.0"
                    && env.available(gw).await
                    && programmed(&gateways, gw).await;
            }
            all.then_some(())
        })
        .await;
        let (_, sidecar, _) = env.fleet("a").await.expect("fleet a");
        assert!(sidecar.ends_with(":v0.1.0"), "{sidecar}");
        let steady = env.generations().await;

        // Upgrade: the control plane first; no proxy moves while it is not Available.
        env.set_version("0.2.0").await;
        eventually("control plane rolled to v0.2.0", LIMIT, || async {
            env.control_plane_image()
                .await
                .ends_with(":v0.2.0")
                .then_some(())
        })
        .await;
        let eg = env.eg().await;
        assert_eq!(phase(&eg), Some(UpgradePhase::ControlPlane));
        assert!(allowed(&eg).is_empty());
        // A new control plane process (the one the roll starts) renders the unchanged fleets at
        // their pinned version: nothing written, no proxy restarted.
        fleets.abort();
        let (fleets, _leader) = env.start_fleets().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            env.generations().await,
            steady,
            "no fleet write before the control plane is Available"
        );

        // Control plane Available: Gateway a rolls, b waits for a.
        eventually("fleet a rolls to 0.2.0", LIMIT, || async {
            env.control_plane_ready().await;
            (env.fleet_version("a").await == "0.2.0").then_some(())
        })
        .await;
        let (_, sidecar, _) = env.fleet("a").await.expect("fleet a");
        assert!(sidecar.ends_with(":v0.2.0"), "{sidecar}");
        let eg = env.eg().await;
        assert_eq!(phase(&eg), Some(UpgradePhase::Proxies));
        assert_eq!(allowed(&eg), [(format!("{ns}/a"), "0.2.0".to_owned())]);
        let (_, _, progress) = eg_condition(&eg, "Progressing").expect("Progressing");
        assert!(progress.contains(&format!("{ns}/a")), "{progress}");
        assert_eq!(
            eg.status.as_ref().and_then(|s| s.version.as_deref()),
            Some("0.1.0")
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            env.fleet("b").await.map(|f| f.2),
            Some(steady["b"].clone()),
            "b waits while a is not Available"
        );

        // a Available (and still Programmed: its Envoy ACKs): b rolls.
        eventually("fleet b rolls to 0.2.0", LIMIT, || async {
            env.proxies_ready("a").await;
            (env.fleet_version("b").await == "0.2.0").then_some(())
        })
        .await;
        let upgraded = env.until_ready("0.2.0", &["a", "b"]).await;
        let record = upgraded
            .status
            .as_ref()
            .and_then(|s| s.upgrade.clone())
            .expect("record");
        assert_eq!(record.phase, UpgradePhase::Complete);
        assert!(
            record
                .proxies
                .iter()
                .all(|p| p.ready && p.version == "0.2.0")
        );
        assert_eq!(
            upgraded
                .status
                .as_ref()
                .and_then(|s| s.target_version.clone()),
            None
        );
        let at_two = env.generations().await;

        // A control plane that never becomes Available halts before any proxy changes.
        env.set_version("0.3.0").await;
        let halted = eventually("control-plane halt", LIMIT, || async {
            let eg = env.eg().await;
            eg_condition(&eg, "Degraded")
                .is_some_and(|c| c.1 == "UpgradeHalted")
                .then_some(eg)
        })
        .await;
        let (_, _, message) = eg_condition(&halted, "Degraded").expect("Degraded");
        assert!(
            message.contains("control plane 0.3.0 did not become Available"),
            "{message}"
        );
        assert_eq!(env.generations().await, at_two);
        env.set_version("0.2.0").await;
        env.until_ready("0.2.0", &[]).await;
        assert_eq!(
            env.generations().await,
            at_two,
            "fleets never moved, so nothing rolls back"
        );

        // A fleet that never becomes Available halts the upgrade, the next fleet untouched.
        env.set_version("0.3.0").await;
        eventually("fleet a rolls to 0.3.0", LIMIT, || async {
            env.control_plane_ready().await;
            (env.fleet_version("a").await == "0.3.0").then_some(())
        })
        .await;
        let halted = eventually("fleet halt", LIMIT, || async {
            let eg = env.eg().await;
            eg_condition(&eg, "Degraded")
                .is_some_and(|c| c.0 == "True" && c.1 == "UpgradeHalted")
                .then_some(eg)
        })
        .await;
        let (_, _, message) = eg_condition(&halted, "Degraded").expect("Degraded");
        assert!(
            message.contains(&format!(
                "proxy fleet of Gateway {ns}/a did not become Available"
            )),
            "{message}"
        );
        assert_eq!(phase(&halted), Some(UpgradePhase::Halted));
        assert_eq!(
            halted.status.as_ref().and_then(|s| s.version.as_deref()),
            Some("0.2.0")
        );
        assert_eq!(env.fleet("b").await.map(|f| f.2), Some(at_two["b"].clone()));

        // Rollback: spec.version set back; the control plane, then fleet a, return to 0.2.0;
        // b never moved and is not touched.
        env.set_version("0.2.0").await;
        let back = env.until_ready("0.2.0", &["a"]).await;
        let record = back
            .status
            .as_ref()
            .and_then(|s| s.upgrade.clone())
            .expect("record");
        assert_eq!(
            (record.from.as_str(), record.to.as_str(), record.phase),
            ("0.3.0", "0.2.0", UpgradePhase::Complete)
        );
        assert_eq!(env.fleet_version("a").await, "0.2.0");
        assert_eq!(env.fleet("b").await.map(|f| f.2), Some(at_two["b"].clone()));
        assert_eq!(
            eg_condition(&back, "Degraded").map(|c| c.0),
            Some("False".into())
        );

        // Each step was announced.
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
        let notes: Vec<(String, String)> = events
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect();
        for (reason, note) in [
            ("UpgradingProxies", format!("Gateway {ns}/b may run 0.2.0")),
            (
                "UpgradeHalted",
                format!("Gateway {ns}/a did not become Available"),
            ),
            ("UpgradeComplete", "upgrade from 0.1.0 to 0.2.0".to_owned()),
        ] {
            assert!(
                notes.iter().any(|(r, n)| r == reason && n.contains(&note)),
                "{reason}: {note} in {notes:?}"
            );
        }

        // Operator and control plane restart: an unchanged environment's proxies are not touched.
        eventually("fleet a settled", LIMIT, || async {
            env.proxies_ready("a").await;
            env.available("a").await.then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        operator.abort();
        fleets.abort();
        let _ = operator.await;
        let _ = fleets.await;
        let before = env.settled_resource_versions().await;
        let eg_before = env.eg().await.resource_version();
        // Both new processes' requests are recorded.
        let log = Arc::new(Mutex::new(Vec::new()));
        let counting = Env {
            client: counting_client(log.clone()),
            ns: ns.clone(),
            egs: env.egs.clone(),
            deployments: env.deployments.clone(),
        };
        let metrics = Metrics::new();
        let operator = tokio::spawn(run(counting.client.clone(), settings, metrics.clone()));
        let (fleets, _leader) = counting.start_fleets().await;
        eventually("a pass of the new operator", LIMIT, || {
            let text = metrics.encode();
            async move { text.contains("verdict=\"ready\"").then_some(()) }
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let calls = log.lock().map(|l| l.clone()).unwrap_or_default();
        let mutating: Vec<&String> = calls.iter().filter(|c| !c.starts_with("GET ")).collect();
        assert!(mutating.is_empty(), "mutating calls: {mutating:?}");
        assert!(
            calls.iter().any(|c| c.contains("/deployments")),
            "the fleets were looked at"
        );
        assert_eq!(
            env.settled_resource_versions().await,
            before,
            "proxy Deployments untouched"
        );
        assert_eq!(
            env.eg().await.resource_version(),
            eg_before,
            "status unchanged"
        );
        operator.abort();
        fleets.abort();
        drop(envoys);
        Ok(())
    })
    .await;
}
