//! Proxy fleets on the real apiserver: the controller's fleet task gives a Gateway of its class
//! its Envoy fleet with the class EnvoyProxy's settings honoured, a Gateway-level EnvoyProxy
//! overrides them, a listener change reaches the Service ports, an unknown parametersRef is a
//! condition naming the field while the fleet stays, the fleet's certificate Secret holds the
//! Gateway's own client certificate signed by the proxy issuer, and deleting the Gateway removes
//! the fleet (owner references + the kube-controller-manager's garbage collector). With a real
//! Envoy: a proxy is served its own Gateway's configuration and nothing of another's.
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

use common::certs::{certificates_for, gateway_certificate};

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
        // The proxy issuer, as the operator writes it.
        let (certs, _) = certificates_for(&names, (&ns, "gw"));
        apply(
            &client,
            Some(&ns),
            json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": names.proxy_issuer_secret()},
                "stringData": {
                    "ca.crt": certs.trust_bundle,
                    "tls.crt": certs.proxy_issuer.cert,
                    "tls.key": certs.proxy_issuer.key
                }
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
                    image_repository: Some("quay.io/eg-operator/eg-operator".into()),
                    version: "0.0.0-test".into(),
                },
                proxy_defaults: ProxySpec::default(),
                issuer_secret: (ns.clone(), names.proxy_issuer_secret()),
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

        // The fleet's certificate names this Gateway, and a later pass keeps it as it is.
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
        let pem = |s: &k8s_openapi::api::core::v1::Secret, key: &str| {
            String::from_utf8(s.data.as_ref().expect("data")[key].0.clone()).expect("PEM")
        };
        let secret = secrets.get("envoy-gw-xds").await?;
        let chain: Vec<rustls::pki_types::CertificateDer<'static>> =
            rustls::pki_types::pem::PemObject::pem_slice_iter(pem(&secret, "tls.crt").as_bytes())
                .collect::<Result<_, _>>()?;
        assert_eq!(chain.len(), 2, "leaf and proxy issuer");
        let identity = eg_operator::xds::identity::EnvironmentIdentity::new(&ns, "prod");
        assert_eq!(
            eg_operator::xds::identity::certified_gateway(&identity, &chain).as_deref(),
            Ok(format!("{ns}/gw").as_str())
        );
        assert_eq!(pem(&secret, "ca.crt"), certs.trust_bundle);
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
        assert_eq!(
            pem(&secrets.get("envoy-gw-xds").await?, "tls.crt"),
            pem(&secret, "tls.crt"),
            "a later pass keeps a valid certificate"
        );
        until!("HPA pruned", LIMIT, hpas.get_opt("envoy-gw").await?.is_none().then_some(()));
        // Pruning deletes one object after the other: the PDB may follow the HPA a moment later.
        until!("PDB pruned too", LIMIT, pdbs.get_opt("envoy-gw").await?.is_none().then_some(()));

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

/// Ports and files of one proxy started from the generated bootstrap outside a cluster.
struct BootstrappedProxy {
    envoy: eg_e2e::envoy::EnvoyProcess,
    ready: u16,
    stats: u16,
}

/// Starts Envoy from the fleet's bootstrap files for Gateway `namespace/gateway`, with the
/// certificate files in `cert_dir` as the fleet Secret would mount them. The files are written
/// to `dir` instead of `/etc/envoy`, and the fixed pod ports (admin, readiness, stats) become
/// free loopback ports; nothing else is changed.
async fn start_bootstrapped_proxy(
    environment: &eg_operator::fleet::build::FleetEnvironment,
    (namespace, gateway): (&str, &str),
    cert_dir: &std::path::Path,
    dir: &std::path::Path,
    expect_served: bool,
) -> BootstrappedProxy {
    use eg_e2e::envoy::EnvoyProcess;
    use eg_e2e::{LOOPBACK, free_port};
    use eg_operator::fleet::build::{
        ADMIN_ADDRESS, BOOTSTRAP_KEY, CERT_DIR, CONFIG_DIR, READY_PORT, STATS_PORT, bootstrap_files,
    };

    let files = bootstrap_files(environment, namespace, gateway).expect("bootstrap files");
    let config_dir = dir.join(format!("config-{gateway}"));
    std::fs::create_dir_all(&config_dir).expect("config dir");
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
    let envoy = if expect_served {
        EnvoyProcess::start(&bootstrap).await
    } else {
        EnvoyProcess::start_unready(&bootstrap).await
    }
    .expect("envoy starts");
    BootstrappedProxy {
        envoy,
        ready,
        stats,
    }
}

/// The generated bootstrap is real: Envoy starts from the fleet ConfigMap's bootstrap and SDS
/// files, with its Gateway's certificate as the fleet Secret holds it (leaf naming the Gateway,
/// then the proxy issuer), connects to the xDS server over mutual TLS as the controller serves it
/// (the reloading rustls acceptor, peers authorized by certificate), receives its Gateway's
/// configuration and serves readiness and Prometheus stats.
///
/// The same certificate in a proxy whose bootstrap claims another Gateway gets nothing: the
/// stream is refused with PermissionDenied, the server publishes the refusal naming both
/// Gateways, and Envoy itself logs it.
#[tokio::test]
async fn envoy_runs_from_the_generated_bootstrap_over_mutual_tls() {
    use eg_e2e::LOOPBACK;
    use eg_operator::control_plane::xds_tls::ReloadingTls;
    use eg_operator::xds::envoy_config::{eds_cluster, resource};
    use eg_operator::xds::identity::{EnvironmentIdentity, PeerPolicy};
    use eg_operator::xds::protocol::{CLUSTER, Snapshot};
    use eg_operator::xds::server::{AdsServer, ProxyEvent, SnapshotStore};
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;

    let names = Names::new("eg-test", "test");
    let (certs, public) = certificates_for(&names, ("shop", "public"));
    let dir = tempfile::tempdir().expect("tempdir");

    // The xDS server exactly as `eg-operator controller` runs it with TLS.
    let server_dir = dir.path().join("server");
    std::fs::create_dir_all(&server_dir).expect("server dir");
    for (name, text) in [
        ("ca.crt", &certs.trust_bundle),
        ("tls.crt", &certs.xds_server.cert),
        ("tls.key", &certs.xds_server.key),
    ] {
        std::fs::write(server_dir.join(name), text).expect("write server cert");
    }
    let store = SnapshotStore::default();
    let ads = AdsServer::with_peer_policy(
        store.clone(),
        PeerPolicy::Certificate(EnvironmentIdentity::new("eg-test", "test")),
    );
    let mut events = ads.events();
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0))
        .await
        .expect("bind xDS");
    let xds = listener.local_addr().expect("xDS address");
    let tls = ReloadingTls::load(&server_dir).expect("server TLS");
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(ads))
            .serve_with_incoming(tls.incoming(listener)),
    );
    store.set("shop/public", Snapshot::new("1"));
    // Gateway shop/admin has configuration of its own that no proxy of shop/public may see.
    let mut admin_snapshot = Snapshot::new("1");
    admin_snapshot.resources.insert(
        CLUSTER.to_owned(),
        [(
            "admin-secrets".to_owned(),
            resource("admin-secrets", &eds_cluster("admin-secrets")),
        )]
        .into(),
    );
    store.set("shop/admin", admin_snapshot);

    let environment = FleetEnvironment {
        names: names.clone(),
        anti_affinity: AntiAffinity::Preferred,
        xds: XdsAddress::Tcp(xds),
        xds_server_name: names.xds_dns_names()[0].clone(),
        image_repository: None,
        version: String::new(),
    };
    // Gateway shop/public's fleet Secret, as the kubelet mounts it.
    let cert_dir = dir.path().join("certs");
    std::fs::create_dir_all(&cert_dir).expect("cert dir");
    for (name, text) in [
        ("ca.crt", &public.ca_crt),
        ("tls.crt", &public.tls_crt),
        ("tls.key", &public.tls_key),
    ] {
        std::fs::write(cert_dir.join(name), text).expect("write cert");
    }
    assert_eq!(
        public.tls_crt.matches("BEGIN CERTIFICATE").count(),
        2,
        "the proxy presents its leaf and the issuer"
    );

    let BootstrappedProxy {
        envoy,
        ready,
        stats,
    } = start_bootstrapped_proxy(
        &environment,
        ("shop", "public"),
        &cert_dir,
        dir.path(),
        true,
    )
    .await;

    // Connected over mTLS as the Gateway its certificate names, and ACKed its configuration.
    let acked = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match events.recv().await {
                Ok(ProxyEvent::Ack { gateway, .. }) => break Ok(gateway),
                Ok(ProxyEvent::Refused { reason, .. }) => break Err(reason),
                _ => {}
            }
        }
    })
    .await
    .expect("an ACK from the proxy");
    assert_eq!(acked.as_deref(), Ok("shop/public"));

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

    // Rotation: the fleet task writes a new certificate into the Secret and the kubelet moves
    // it into the mounted directory; Envoy's SDS file watch picks it up without a restart.
    let serials = |certs: String| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(&certs).unwrap_or_default();
        let mut out: Vec<String> = v["certificates"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["cert_chain"].as_array().cloned().unwrap_or_default())
            .filter_map(|c| c["serial_number"].as_str().map(str::to_owned))
            .collect();
        out.sort();
        out
    };
    let before = serials(envoy.admin_get("/certs").await.expect("/certs"));
    assert!(!before.is_empty(), "Envoy lists its client certificate");
    let rotated = gateway_certificate(&certs, &names, ("shop", "public"));
    assert_ne!(rotated.tls_crt, public.tls_crt);
    let staging = dir.path().join("staging");
    std::fs::create_dir_all(&staging).expect("staging dir");
    for (name, text) in [("tls.crt", &rotated.tls_crt), ("tls.key", &rotated.tls_key)] {
        std::fs::write(staging.join(name), text).expect("write rotated cert");
        std::fs::rename(staging.join(name), cert_dir.join(name)).expect("move rotated cert");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = serials(envoy.admin_get("/certs").await.expect("/certs"));
        if now != before && !now.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Envoy still holds the old client certificate: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let still_ready = http
        .get(format!("http://127.0.0.1:{ready}/ready"))
        .send()
        .await
        .expect("readiness endpoint")
        .status();
    assert_eq!(still_ready, 200, "rotation needs no restart");

    // The same certificate behind a bootstrap that claims shop/admin: refused, nothing served.
    let impostor = start_bootstrapped_proxy(
        &environment,
        ("shop", "admin"),
        &cert_dir,
        dir.path(),
        false,
    )
    .await;
    let refused = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match events.recv().await {
                Ok(ProxyEvent::Refused {
                    gateway,
                    node,
                    category,
                    reason,
                }) => break (gateway, node, category, reason),
                Ok(ProxyEvent::Connected { gateway, .. }) if gateway == "shop/admin" => {
                    panic!("a proxy with shop/public's certificate was served shop/admin")
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the claim of shop/admin is refused");
    println!("refused: {refused:?}");
    let (gateway, _node, category, reason) = refused;
    assert_eq!((gateway.as_str(), category), ("shop/admin", "mismatch"));
    assert!(
        reason.contains("shop/public") && reason.contains("shop/admin"),
        "{reason}"
    );
    // Envoy keeps retrying; give it time to be (wrongly) served, then look at what it has.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dump = impostor
        .envoy
        .config_dump()
        .await
        .expect("impostor config dump")
        .to_string();
    assert!(
        !dump.contains("admin-secrets"),
        "shop/admin's cluster never reached the impostor"
    );
    // `/ready` answers 503 until the initial configuration arrived.
    let state = http
        .get(format!("http://{}/ready", impostor.envoy.admin_address()))
        .send()
        .await
        .expect("impostor admin")
        .text()
        .await
        .expect("impostor /ready");
    assert!(
        ["PRE_INITIALIZING", "INITIALIZING"].contains(&state.trim()),
        "the impostor never gets its initial configuration, yet it is {state}"
    );
    // Envoy logs the gRPC status with its message percent-encoded, as it travels.
    let log = impostor.envoy.log().replace("%20", " ");
    assert!(
        log.contains("closed: 7") && log.contains("node.cluster claims Gateway shop/admin"),
        "Envoy reports PermissionDenied with the reason:\n{log}"
    );
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(&event, ProxyEvent::Ack { gateway, .. } | ProxyEvent::Connected { gateway, .. } if gateway == "shop/admin"),
            "nothing of shop/admin was served: {event:?}"
        );
    }
    impostor.envoy.stop();
    envoy.stop();
    server.abort();
}
