//! Envoy golden tests: the Envoy resources built from each golden case's IR, pinned by the
//! SHA-256 of every resource's encoded body (`envoy.txt` next to `output.yaml`), plus one
//! synthetic many-route case in code.
//!
//! The IR goldens pin what the translator decides; these pin the bytes Envoy receives, so a
//! faster way of building the same configuration (shared encodings, caches) is proven to send
//! exactly what the straightforward one sent. Regenerate with `UPDATE_GOLDEN=1`, then explain
//! the diff.

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use eg_operator::short_hash::short_sha256_hex;
use eg_operator::translate::{Snapshot, snapshot_from_yaml, translate};
use eg_operator::xds::from_ir::{ListenerBinding, snapshot};

const CONTROLLER: &str = "gateway.envoyproxy.io/gatewayclass-controller";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/translate/golden")
}

/// One line per resource: gateway, type, name, version and the digest of the body.
fn render(input: &Snapshot) -> String {
    let binding = ListenerBinding {
        ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port_offset: 0,
    };
    let mut out = String::new();
    for gateway in &translate(input).gateways {
        let snap = snapshot(gateway, binding, "1");
        for (type_url, resources) in &snap.resources {
            let short = type_url.rsplit('.').next().unwrap_or(type_url);
            for (name, r) in resources {
                let _ = writeln!(
                    out,
                    "{} {short} {name} {} {} {}",
                    gateway.name,
                    r.version,
                    r.body.len(),
                    short_sha256_hex(&r.body, 32)
                );
            }
        }
    }
    out
}

fn compare(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        fs::write(path, actual).expect("golden file is writable");
        return;
    }
    let expected = fs::read_to_string(path).unwrap_or_default();
    assert_eq!(
        expected,
        actual,
        "{} differs; run with UPDATE_GOLDEN=1 and review the diff",
        path.display()
    );
}

#[test]
fn golden_cases_build_the_pinned_envoy_resources() {
    let mut cases: Vec<PathBuf> = fs::read_dir(golden_dir())
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .collect();
    cases.sort();
    for dir in cases {
        let text = fs::read_to_string(dir.join("input.yaml")).expect("input.yaml");
        let input = snapshot_from_yaml(CONTROLLER, &text).expect("input loads");
        compare(&dir.join("envoy.txt"), &render(&input));
    }
}

/// Many routes sharing hostnames and backends, with redirects, filters and several listeners:
/// the shapes where sharing work between virtual hosts could go wrong.
fn synthetic() -> Snapshot {
    let mut yaml = String::from(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: eg}
spec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: apps, generation: 1}
spec:
  gatewayClassName: eg
  listeners:
  - {name: http, protocol: HTTP, port: 80}
  - {name: wild, protocol: HTTP, port: 80, hostname: "*.example.com"}
  - {name: alt, protocol: HTTP, port: 8080}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps}
"#,
    );
    for s in 0..4 {
        let _ = write!(
            yaml,
            r#"---
apiVersion: v1
kind: Service
metadata: {{name: svc-{s}, namespace: apps}}
spec: {{ports: [{{name: http, port: 8080, targetPort: 8080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc-{s}-1, namespace: apps, labels: {{kubernetes.io/service-name: svc-{s}}}}}
addressType: IPv4
endpoints: [{{addresses: [10.0.{s}.1]}}, {{addresses: [10.0.{s}.2], conditions: {{ready: true}}}}]
ports: [{{name: http, port: 8080, protocol: TCP}}]
"#
        );
    }
    for i in 0..12 {
        let section = match i % 3 {
            0 => "",
            1 => ", sectionName: http",
            _ => ", sectionName: alt",
        };
        let _ = write!(
            yaml,
            r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: route-{i}, namespace: apps, creationTimestamp: "2026-01-0{day}T00:00:00Z"}}
spec:
  parentRefs: [{{name: public{section}}}]
  hostnames: ["r{i}.example.com", "shared.example.com", "*.example.com", "other-{i}.org"]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /svc/{i}}}, headers: [{{name: x-t, value: "{i}"}}]}}]
    backendRefs: [{{name: svc-{a}, port: 8080, weight: 3}}, {{name: svc-{b}, port: 8080}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: x-route, value: "{i}"}}], remove: [x-drop]}}
  - matches: [{{path: {{type: Exact, value: /old}}}}, {{method: POST}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{path: {{type: ReplaceFullPath, replaceFullPath: /new}}}}
  - matches: [{{path: {{type: RegularExpression, value: "/re/[0-9]+"}}}}]
    backendRefs: [{{name: missing, port: 80}}]
  - backendRefs: [{{name: svc-{a}, port: 8080}}]
    timeouts: {{request: 10s}}
"#,
            day = i % 9 + 1,
            a = i % 4,
            b = (i + 1) % 4,
        );
    }
    snapshot_from_yaml(CONTROLLER, &yaml).expect("synthetic snapshot loads")
}

#[test]
fn synthetic_case_builds_the_pinned_envoy_resources() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/translate/envoy-synthetic.txt");
    compare(&path, &render(&synthetic()));
}
