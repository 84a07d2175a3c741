//! Proxy fleets on the real apiserver: the controller's fleet task gives a Gateway of its class
//! its Envoy fleet with the class EnvoyProxy's settings honoured, a Gateway-level EnvoyProxy
//! overrides them, a listener change reaches the Service ports, an unknown parametersRef is a
//! condition naming the field while the fleet stays, and deleting the Gateway removes the fleet
//! (owner references + the kube-controller-manager's garbage collector).
//!
//! There is no kubelet: the fleet is proven at the API level.

use std::time::Duration;

use eg_crds::envoy_gateway::{AntiAffinity, ProxySpec};
use eg_e2e::manifests::apply;
use eg_e2e::with_temp_namespace;
use eg_operator::environment::names::Names;
use eg_operator::fleet::build::FleetEnvironment;
use eg_operator::fleet::run::{FleetConfig, run};
use eg_operator::fleet::status::FLEET_CONDITION;
use eg_operator::xds::bootstrap::XdsAddress;
use gateway_api::apis::standard::gateways::Gateway;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::DeleteParams;
use serde_json::{Value, json};

mod common;

const LIMIT: Duration = Duration::from_secs(30);

fn gateway(name: &str, class: &str, ports: &[i32], parameters: Option<&str>) -> Value {
    let listeners: Vec<Value> = ports
        .iter()
        .map(|p| json!({"name": format!("http-{p}"), "protocol": "HTTP", "port": p}))
        .collect();
    let mut gw = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": name},
        "spec": {
            "gatewayClassName": class,
            "infrastructure": {"labels": {"team": "shop"}, "annotations": {"owner": "shop-team"}},
            "listeners": listeners
        }
    });
    if let Some(p) = parameters {
        gw["spec"]["infrastructure"]["parametersRef"] =
            json!({"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": p});
    }
    gw
}

fn fleet_condition(gw: &Gateway) -> Option<(String, String, String)> {
    gw.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == FLEET_CONDITION)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn a_gateway_gets_its_fleet_and_loses_it_with_the_gateway() {
    with_temp_namespace(|client, ns| async move {
        let names = Names::new(&ns, "prod");
        let class = format!("fleet-{ns}");
        let controller_name = format!("example.com/fleet-{ns}");
        // The proxies' client certificate, as the operator writes it.
        apply(
            &client,
            Some(&ns),
            json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": names.xds_client_secret()},
                "stringData": {"ca.crt": "CA", "tls.crt": "CRT", "tls.key": "KEY"}
            }),
        )
        .await;
        apply(
            &client,
            Some(&ns),
            json!({
                "apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyProxy",
                "metadata": {"name": "class-proxy"},
                "spec": {"provider": {"type": "Kubernetes", "kubernetes": {
                    "envoyDeployment": {
                        "pod": {"topologySpreadConstraints": [{
                            "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "ScheduleAnyway"
                        }]},
                        "container": {
                            "image": "envoy:class",
                            "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}}
                        }
                    },
                    "envoyService": {"type": "ClusterIP", "annotations": {"lb": "internal"}},
                    "envoyHpa": {"minReplicas": 2, "maxReplicas": 6, "metrics": [{
                        "type": "Resource",
                        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 65}}
                    }]},
                    "envoyPDB": {"minAvailable": 1}
                }}}
            }),
        )
        .await;
        apply(
            &client,
            None,
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                "metadata": {"name": class},
                "spec": {"controllerName": controller_name, "parametersRef": {
                    "group": "gateway.envoyproxy.io", "kind": "EnvoyProxy",
                    "name": "class-proxy", "namespace": ns
                }}
            }),
        )
        .await;
        apply(&client, Some(&ns), gateway("gw", &class, &[8080], None)).await;

        let (leader, leading) = tokio::sync::watch::channel(true);
        let fleet = tokio::spawn(run(
            client.clone(),
            FleetConfig {
                controller_name,
                watch_namespaces: vec![ns.clone()],
                environment: FleetEnvironment {
                    names: names.clone(),
                    anti_affinity: AntiAffinity::Preferred,
                    xds: XdsAddress::Tcp("127.0.0.1:18000".parse()?),
                    xds_server_name: "prod-envoy-gateway.test.svc".into(),
                },
                proxy_defaults: ProxySpec::default(),
                client_secret: (ns.clone(), names.xds_client_secret()),
                resync: Duration::from_secs(60),
            },
            leading,
        ));

        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        let gateways: Api<Gateway> = Api::namespaced(client.clone(), &ns);

        // The class EnvoyProxy's settings, honoured.
        let (hpa, took) = until!("the fleet's HPA", LIMIT, hpas.get_opt("envoy-gw").await?);
        println!("fleet applied in {took:?}");
        let spec = hpa.spec.clone();
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 6));
        let metric = serde_json::to_value(&spec.metrics)?;
        assert_eq!(metric[0]["resource"]["target"]["averageUtilization"], 65);
        let d = deployments.get("envoy-gw").await?;
        let dv = serde_json::to_value(&d)?;
        assert!(
            d.metadata
                .managed_fields
                .iter()
                .flatten()
                .filter(|m| m.manager.as_deref() == Some("eg-operator"))
                .all(|m| !serde_json::to_string(&m.fields_v1).unwrap_or_default().contains("f:replicas")),
            "the fleet does not own replicas while an HPA exists"
        );
        let pod = &dv["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][0]["image"], "envoy:class");
        assert_eq!(pod["containers"][0]["resources"]["requests"]["cpu"], "250m");
        assert_eq!(
            pod["topologySpreadConstraints"][0]["topologyKey"],
            "topology.kubernetes.io/zone"
        );
        let anti = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"];
        assert_eq!(anti[0]["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname");
        assert_eq!(anti[1]["podAffinityTerm"]["topologyKey"], "topology.kubernetes.io/zone");
        assert_eq!(dv["metadata"]["labels"]["team"], "shop");
        assert_eq!(dv["metadata"]["annotations"]["owner"], "shop-team");
        let owner = &dv["metadata"]["ownerReferences"][0];
        assert_eq!((owner["kind"].as_str(), owner["name"].as_str()), (Some("Gateway"), Some("gw")));
        let pdb = pdbs.get("envoy-gw").await?;
        assert_eq!(
            serde_json::to_value(pdb.spec.and_then(|s| s.min_available))?,
            json!(1)
        );
        assert!(accounts.get_opt("envoy-gw").await?.is_some());
        let svc = services.get("envoy-gw").await?;
        let svc_spec = svc.spec.clone().expect("service spec");
        assert_eq!(svc_spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(
            svc.metadata.annotations.as_ref().and_then(|a| a.get("lb")).map(String::as_str),
            Some("internal")
        );
        let cluster_ip = svc_spec.cluster_ip.clone().expect("cluster IP");

        // Status: addresses from the Service, and the fleet's condition.
        let (gw, _) = until!("Gateway addresses", LIMIT, {
            let gw = gateways.get("gw").await?;
            gw.status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .is_some_and(|a| a.iter().any(|a| a.value == cluster_ip))
                .then_some(gw)
        });
        assert_eq!(fleet_condition(&gw).map(|c| c.0), Some("True".to_owned()));

        // A Gateway-level EnvoyProxy replaces the class one: fixed replicas, no HPA.
        apply(
            &client,
            Some(&ns),
            json!({
                "apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyProxy",
                "metadata": {"name": "gw-proxy"},
                "spec": {"provider": {"type": "Kubernetes", "kubernetes": {
                    "envoyDeployment": {"replicas": 4, "container": {"image": "envoy:gateway"}},
                    "envoyService": {"type": "ClusterIP"}
                }}}
            }),
        )
        .await;
        apply(&client, Some(&ns), gateway("gw", &class, &[8080], Some("gw-proxy"))).await;
        until!("Gateway EnvoyProxy applied", LIMIT, {
            let d = deployments.get("envoy-gw").await?;
            let v = serde_json::to_value(&d)?;
            (v["spec"]["replicas"] == 4 && v["spec"]["template"]["spec"]["containers"][0]["image"] == "envoy:gateway")
                .then_some(())
        });
        until!("HPA pruned", LIMIT, hpas.get_opt("envoy-gw").await?.is_none().then_some(()));
        assert!(pdbs.get_opt("envoy-gw").await?.is_none(), "PDB pruned too");

        // A new listener is a new Service port.
        apply(&client, Some(&ns), gateway("gw", &class, &[8080, 9090], Some("gw-proxy"))).await;
        until!("Service ports follow the listeners", LIMIT, {
            let svc = services.get("envoy-gw").await?;
            let ports: Vec<i32> = svc
                .spec
                .and_then(|s| s.ports)
                .unwrap_or_default()
                .iter()
                .map(|p| p.port)
                .collect();
            (ports == [8080, 9090]).then_some(())
        });

        // An unknown parametersRef: a condition naming the field; the fleet stays as it was.
        apply(&client, Some(&ns), gateway("gw", &class, &[8080, 9090], Some("missing"))).await;
        let (condition, _) = until!("InvalidParameters condition", LIMIT, {
            let gw = gateways.get("gw").await?;
            fleet_condition(&gw).filter(|c| c.0 == "False")
        });
        assert_eq!(condition.1, "InvalidParameters");
        assert!(
            condition.2.contains("spec.infrastructure.parametersRef")
                && condition.2.contains("missing"),
            "{}",
            condition.2
        );
        let d = serde_json::to_value(deployments.get("envoy-gw").await?)?;
        assert_eq!(d["spec"]["replicas"], 4, "the previous fleet stays");

        // Deleting the Gateway removes its fleet through the owner references alone: the fleet
        // task is stopped first, so only the garbage collector can be doing it.
        drop(leader);
        fleet.abort();
        let _ = fleet.await;
        gateways.delete("gw", &DeleteParams::background()).await?;
        let (_, took) = until!("fleet garbage collected", Duration::from_secs(60), {
            let gone = deployments.get_opt("envoy-gw").await?.is_none()
                && services.get_opt("envoy-gw").await?.is_none()
                && accounts.get_opt("envoy-gw").await?.is_none();
            gone.then_some(())
        });
        println!("fleet removed {took:?} after the Gateway");

        let _ = Api::<gateway_api::apis::standard::gatewayclasses::GatewayClass>::all(client.clone())
            .delete(&class, &DeleteParams::default())
            .await;
        Ok(())
    })
    .await;
}

/// The generated bootstrap is real: Envoy starts from the fleet ConfigMap's bootstrap and SDS
/// files, with the environment's certificates as the Secret would mount them, connects to an
/// mTLS xDS server, receives its Gateway's configuration and serves readiness and Prometheus
/// stats. The files are written to a temporary directory instead of `/etc/envoy`, and the fixed
/// pod ports (admin, readiness, stats) become free loopback ports; nothing else is changed.
#[tokio::test]
async fn envoy_runs_from_the_generated_bootstrap_over_mutual_tls() {
    use eg_e2e::envoy::EnvoyProcess;
    use eg_e2e::{LOOPBACK, free_port};
    use eg_operator::environment::certificates::{ExistingCertificates, decide};
    use eg_operator::environment::validate::CertificateLifetimes;
    use eg_operator::fleet::build::{
        ADMIN_ADDRESS, BOOTSTRAP_KEY, CERT_DIR, CONFIG_DIR, READY_PORT, STATS_PORT, bootstrap_files,
    };
    use eg_operator::xds::protocol::Snapshot;
    use eg_operator::xds::server::{AdsServer, ProxyEvent, SnapshotStore};
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
    use tokio_stream::wrappers::TcpListenerStream;

    let names = Names::new("eg-test", "test");
    let certs = decide(
        &ExistingCertificates::default(),
        CertificateLifetimes {
            duration: Duration::from_secs(3600),
            renew_before: Duration::from_secs(600),
        },
        &names,
        std::time::SystemTime::now(),
    )
    .expect("certificates")
    .certificates;

    let store = SnapshotStore::default();
    let ads = AdsServer::new(store.clone());
    let mut events = ads.events();
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0))
        .await
        .expect("bind xDS");
    let xds = listener.local_addr().expect("xDS address");
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &certs.xds_server.cert,
            &certs.xds_server.key,
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(&certs.trust_bundle));
    let server = tonic::transport::Server::builder()
        .tls_config(tls)
        .expect("server TLS")
        .add_service(AggregatedDiscoveryServiceServer::new(ads))
        .serve_with_incoming(TcpListenerStream::new(listener));
    let server = tokio::spawn(server);
    store.set("shop/public", Snapshot::new("1"));

    let environment = FleetEnvironment {
        names: names.clone(),
        anti_affinity: AntiAffinity::Preferred,
        xds: XdsAddress::Tcp(xds),
        xds_server_name: names.xds_dns_names()[0].clone(),
    };
    let files = bootstrap_files(&environment, "shop", "public").expect("bootstrap files");

    let dir = tempfile::tempdir().expect("tempdir");
    let config_dir = dir.path().join("config");
    let cert_dir = dir.path().join("certs");
    std::fs::create_dir_all(&config_dir).expect("config dir");
    std::fs::create_dir_all(&cert_dir).expect("cert dir");
    // The Secret's files, as the kubelet mounts them.
    for (name, text) in [
        ("ca.crt", &certs.trust_bundle),
        ("tls.crt", &certs.xds_client.cert),
        ("tls.key", &certs.xds_client.key),
    ] {
        std::fs::write(cert_dir.join(name), text).expect("write cert");
    }
    let port = |p: u16| free_port(LOOPBACK).map(|f| (p, f)).expect("free port");
    let (ready_port, ready) = port(READY_PORT);
    let (stats_port, stats) = port(STATS_PORT);
    let admin = free_port(LOOPBACK).expect("free port");
    let relocate = |text: &str| {
        text.replace(CONFIG_DIR, &config_dir.display().to_string())
            .replace(CERT_DIR, &cert_dir.display().to_string())
            .replace(
                ADMIN_ADDRESS.split(':').next_back().unwrap_or_default(),
                &admin.to_string(),
            )
            .replace(
                &format!("\"port_value\": {ready_port}"),
                &format!("\"port_value\": {ready}"),
            )
            .replace(
                &format!("\"port_value\": {stats_port}"),
                &format!("\"port_value\": {stats}"),
            )
            .replace("0.0.0.0", "127.0.0.1")
    };
    for (name, text) in &files {
        std::fs::write(config_dir.join(name), relocate(text)).expect("write config");
    }
    let bootstrap = std::fs::read_to_string(config_dir.join(BOOTSTRAP_KEY)).expect("bootstrap");
    let envoy = EnvoyProcess::start(&bootstrap).await.expect("envoy starts");

    // Connected over mTLS as the Gateway the bootstrap names, and ACKed its configuration.
    let acked = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Ok(ProxyEvent::Ack { gateway, .. }) = events.recv().await {
                break gateway;
            }
        }
    })
    .await
    .expect("an ACK from the proxy");
    assert_eq!(acked, "shop/public");

    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let status = http
        .get(format!("http://127.0.0.1:{ready}/ready"))
        .send()
        .await
        .expect("readiness endpoint")
        .status();
    assert_eq!(status, 200);
    let metrics = http
        .get(format!("http://127.0.0.1:{stats}/stats/prometheus"))
        .send()
        .await
        .expect("stats endpoint")
        .text()
        .await
        .expect("stats body");
    assert!(
        metrics.contains("envoy_server_live"),
        "Prometheus stats served"
    );
    let admin_page = http
        .get(format!("http://127.0.0.1:{stats}/config_dump"))
        .send()
        .await
        .expect("stats listener answers")
        .status();
    assert_eq!(
        admin_page, 404,
        "only the stats page of the admin is exposed"
    );
    envoy.stop();
    server.abort();
}
