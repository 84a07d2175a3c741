//! `eg-operator controller` as the operator deploys it, as a process: it reads the
//! configuration file the operator writes, serves xDS over mutual TLS with the environment's
//! certificates, and a real Envoy booted from the generated bootstrap with its Gateway's
//! certificate carries requests for an HTTPRoute created in the real apiserver to a backend on a
//! test host. The same certificate claiming another Gateway is refused, and the controller says so.

// Shared with the eg-e2e tests that start proxies with real mutual TLS.
#[path = "../../tests/tests/common/certs.rs"]
mod certs;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use certs::certificates_for;
use eg_e2e::backend::Echo;
use eg_e2e::envoy::EnvoyProcess;
use eg_e2e::manifests::{apply, http_gateway, service_with_endpoint};
use eg_e2e::netns::EchoHost;
use eg_e2e::process::{Lifetime, ManagedProcess};
use eg_e2e::{LOOPBACK, free_port, shared_cluster, with_temp_namespace};
use eg_operator::control_plane::config::{ControllerConfig, EnvironmentRef, XdsConfig};
use eg_operator::environment::names::Names;
use eg_operator::xds::bootstrap::{AdsFlavour, BootstrapSpec, XdsTlsFiles, bootstrap};
use kube::Api;
use serde_json::json;

#[tokio::test]
async fn controller_process_serves_an_httproute_over_mtls_xds() {
    with_temp_namespace(|client, ns| async move {
        let dir = tempfile::tempdir()?;
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };

        // The environment's certificates, as the operator stores them.
        let names = Names::new(&ns, "env");
        let (certs, public) = certificates_for(&names, (&ns, "public"));
        let server_dir = dir.path().join("server");
        std::fs::create_dir_all(&server_dir)?;
        std::fs::write(server_dir.join("tls.crt"), &certs.xds_server.cert)?;
        std::fs::write(server_dir.join("tls.key"), &certs.xds_server.key)?;
        std::fs::write(server_dir.join("ca.crt"), &certs.trust_bundle)?;

        let controller_name = names.controller_name();
        let xds_port = free_port(LOOPBACK)?;
        let config = ControllerConfig {
            environment: EnvironmentRef { namespace: ns.clone(), name: "env".into() },
            gateway_class_name: format!("gc-{ns}"),
            controller_name: controller_name.clone(),
            watch_namespaces: vec![ns.clone()],
            leader_election: true,
            xds: XdsConfig { port: xds_port, cert_dir: server_dir.clone() },
            proxy_defaults: Default::default(),
            image_repository: String::new(),
            version: String::new(),
            backend_api: false,
        };
        let config_path = write("config.yaml", &serde_yaml_ng::to_string(&config)?);

        let health = SocketAddr::new(LOOPBACK, free_port(LOOPBACK)?);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_eg-operator"));
        cmd.arg("controller")
            .arg("--config")
            .arg(&config_path)
            .arg(format!("--xds-address=127.0.0.1:{xds_port}"))
            .arg(format!("--health-address={health}"))
            .arg("--listener-ip=127.0.0.1")
            .env("KUBECONFIG", shared_cluster().kubeconfig_path())
            .env("POD_NAME", "controller-0");
        let controller = ManagedProcess::spawn("controller", cmd, &dir.path().join("controller.log"), Lifetime::Owned)?;

        // A backend on a test host behind a Service.
        let echo_bin = Path::new(env!("CARGO_BIN_EXE_eg-operator")).with_file_name("eg-echo");
        let echo = EchoHost::start("shop", &echo_bin).await?;
        service_with_endpoint(&client, &ns, "shop", echo.address()).await;
        let port = free_port(LOOPBACK)?;
        http_gateway(&client, &ns, "public", &format!("gc-{ns}"), &controller_name, port).await;
        apply(&client, Some(&ns), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "shop"},
            "spec": {"parentRefs": [{"name": "public"}], "rules": [{"backendRefs": [{"name": "shop", "port": 80}]}]}})).await;

        // A proxy of the Gateway, with the Gateway's client certificate.
        let files = XdsTlsFiles {
            ca_cert: write("ca.crt", &public.ca_crt).display().to_string(),
            client_cert: write("client.crt", &public.tls_crt).display().to_string(),
            client_key: write("client.key", &public.tls_key).display().to_string(),
            server_name: names.xds_dns_names()[0].clone(),
        };
        let proxy = |cluster: String| BootstrapSpec {
            node_id: "proxy-0".into(),
            node_cluster: cluster,
            admin: SocketAddr::new(LOOPBACK, 0),
            xds_server: SocketAddr::new(LOOPBACK, xds_port).into(),
            flavour: AdsFlavour::Delta,
            tls: Some(files.clone()),
        };
        let envoy = EnvoyProcess::start(&bootstrap(&proxy(format!("{ns}/public"))).to_string()).await?;

        let start = Instant::now();
        loop {
            let answer = reqwest::get(format!("http://127.0.0.1:{port}/cart")).await;
            if let Ok(resp) = answer
                && resp.status() == 200
                && let Ok(echo) = resp.json::<Echo>().await
            {
                assert_eq!(echo.backend, "shop");
                assert_eq!(echo.path, "/cart");
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no 200 through the controller's Envoy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let healthz = reqwest::get(format!("http://{health}/readyz")).await?;
        assert_eq!(healthz.status(), 200);

        // The replica won its lease and wrote status.
        let routes: Api<gateway_api::apis::standard::httproutes::HttpRoute> =
            Api::namespaced(client.clone(), &ns);
        let start = Instant::now();
        loop {
            let accepted = routes.get("shop").await?.status.and_then(|s| {
                s.parents
                    .into_iter()
                    .flat_map(|p| p.conditions)
                    .find(|c| c.type_ == "Accepted" && c.status == "True")
            });
            if accepted.is_some() {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "no route status from the leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let lease: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), &ns);
        let holder = lease.get("env-envoy-gateway-leader").await?.spec.and_then(|s| s.holder_identity);
        assert_eq!(holder.as_deref(), Some("controller-0"));

        // The same certificate claiming another Gateway (with a listener of its own) is refused,
        // and the controller logs it.
        let private_port = free_port(LOOPBACK)?;
        http_gateway(&client, &ns, "private", &format!("gc-{ns}"), &controller_name, private_port).await;
        let impostor = EnvoyProcess::start_unready(&bootstrap(&proxy(format!("{ns}/private"))).to_string()).await?;
        let start = Instant::now();
        let refusal = loop {
            let log = controller.log_tail(usize::MAX);
            if let Some(line) = log.lines().find(|l| l.contains("xDS stream refused") && l.contains(&format!("{ns}/private"))) {
                break line.to_owned();
            }
            assert!(start.elapsed() < Duration::from_secs(15), "no refusal in the controller's log:\n{log}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(refusal.contains("mismatch") && refusal.contains(&format!("{ns}/public")), "{refusal}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let dump = impostor.config_dump().await?.to_string();
        assert!(!dump.contains(&format!("\"port_value\":{private_port}")), "the impostor got none of private's listeners");
        impostor.stop();
        envoy.stop();
        Ok(())
    })
    .await;
}
