//! The incremental translator and Envoy builder against the from-scratch ones: after every edit
//! of a random sequence, `Translator::translate` must equal `translate` and
//! `SnapshotBuilder::build` must equal `snapshot`, byte for byte. Caches may only skip work,
//! never change an answer.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use eg_operator::translate::{Snapshot, Translator, snapshot_from_yaml, translate};
use eg_operator::xds::from_ir::{ListenerBinding, SnapshotBuilder, snapshot};
use eg_operator::xds::protocol::ROUTE;

const CONTROLLER: &str = "gateway.envoyproxy.io/gatewayclass-controller";
const BINDING: ListenerBinding = ListenerBinding {
    ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
    port_offset: 0,
};

/// A small deterministic PRNG (xorshift64*), so failures reproduce without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).expect("fits usize")
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

fn parse(yaml: &str) -> Snapshot {
    snapshot_from_yaml(CONTROLLER, yaml).expect("generated YAML loads")
}

/// The fixed part: a class, a Gateway whose listeners vary, Services and their endpoints.
fn world(rng: &mut Rng) -> Snapshot {
    let listener_sets = [
        "[{name: http, protocol: HTTP, port: 80}]",
        "[{name: http, protocol: HTTP, port: 80}, {name: wild, protocol: HTTP, port: 80, hostname: '*.example.com'}]",
        "[{name: http, protocol: HTTP, port: 80}, {name: alt, protocol: HTTP, port: 8080, hostname: a.example.com}]",
        "[{name: http, protocol: HTTP, port: 80, allowedRoutes: {namespaces: {from: All}}}]",
    ];
    let mut yaml = format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: eg}}
spec: {{controllerName: {CONTROLLER}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: public, namespace: apps}}
spec: {{gatewayClassName: eg, listeners: {}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: apps}}
",
        listener_sets[rng.below(listener_sets.len())]
    );
    for s in 0..3 {
        let port = if rng.below(5) == 0 { 9090 } else { 8080 };
        let ip = rng.below(4);
        yaml.push_str(&format!(
            "---
apiVersion: v1
kind: Service
metadata: {{name: svc-{s}, namespace: apps}}
spec: {{ports: [{{name: http, port: {port}, targetPort: 8080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc-{s}-1, namespace: apps, labels: {{kubernetes.io/service-name: svc-{s}}}}}
addressType: IPv4
endpoints: [{{addresses: [10.0.{s}.{ip}]}}]
ports: [{{name: http, port: 8080, protocol: TCP}}]
"
        ));
    }
    parse(&yaml)
}

/// A random HTTPRoute named `route-{i}`.
fn route(rng: &mut Rng, i: usize) -> Snapshot {
    let hosts = [
        "a.example.com",
        "b.example.com",
        "*.example.com",
        "x.org",
        "shared.example.com",
    ];
    let hostnames: Vec<&str> = (0..rng.below(3)).map(|_| rng.pick(&hosts)).collect();
    let parent = rng.pick(&[
        "{name: public}",
        "{name: public, sectionName: http}",
        "{name: public, sectionName: wild}",
        "{name: public, port: 8080}",
        "{name: other}",
    ]);
    let mut rules = String::new();
    for _ in 0..=rng.below(3) {
        let path = rng.pick(&[
            "{type: PathPrefix, value: /}",
            "{type: PathPrefix, value: /api}",
            "{type: Exact, value: /api}",
            "{type: RegularExpression, value: '/r/[0-9]+'}",
            "{type: RegularExpression, value: '/bad/('}",
        ]);
        let action = rng.pick(&[
            "backendRefs: [{name: svc-0, port: 8080}]",
            "backendRefs: [{name: svc-1, port: 8080, weight: 3}, {name: svc-2, port: 8080}]",
            "backendRefs: [{name: missing, port: 8080}]",
            "filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]",
            "filters: [{type: RequestRedirect, requestRedirect: {hostname: r.example.com}}]",
        ]);
        rules.push_str(&format!("  - matches: [{{path: {path}}}]\n    {action}\n"));
    }
    parse(&format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: route-{i}, namespace: apps, creationTimestamp: '2026-01-0{}T00:00:00Z'}}
spec:
  parentRefs: [{parent}]
  hostnames: {hostnames:?}
  rules:
{rules}",
        rng.below(3) + 1
    ))
}

fn check(step: usize, s: &Snapshot, translator: &mut Translator, builder: &mut SnapshotBuilder) {
    let fresh = translate(s);
    let incremental = translator.translate(s);
    assert_eq!(incremental, fresh, "translation differs at step {step}");
    for gateway in &incremental.gateways {
        let mut built = builder.build(gateway, BINDING, "v");
        let fresh = snapshot(gateway, BINDING, "v");
        // Besides the fresh snapshot's resources the builder keeps guard route tables for
        // connections older than a listener's ext_authz filters (xds::authz_guard); they are
        // tagged route tables no fresh snapshot has.
        if let Some(tables) = built.resources.get_mut(ROUTE) {
            let fresh_tables = fresh.resources.get(ROUTE);
            tables.retain(|name, _| {
                let extra = fresh_tables.is_none_or(|t| !t.contains_key(name));
                assert!(
                    !extra
                        || name.contains("@authz-")
                        || fresh_tables.is_some_and(|t| t
                            .keys()
                            .any(|k| k.starts_with(&format!("{name}@authz-")))),
                    "step {step}: route table {name} is neither fresh nor a guard"
                );
                !extra
            });
        }
        assert_eq!(
            built, fresh,
            "Envoy snapshot of {} differs at step {step}",
            gateway.name
        );
    }
    builder.finish_round();
}

#[test]
fn random_edits_translate_incrementally_as_from_scratch() {
    for seed in 1..=6_u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut s = world(&mut rng);
        for i in 0..8 {
            s.http_routes.extend(route(&mut rng, i).http_routes);
        }
        let mut translator = Translator::new();
        let mut builder = SnapshotBuilder::new();
        for step in 0..60 {
            check(step, &s, &mut translator, &mut builder);
            match rng.below(10) {
                // Most edits touch one route: the case memoisation is for.
                0..=4 => {
                    let i = rng.below(10);
                    let new = route(&mut rng, i).http_routes;
                    let name = format!("route-{i}");
                    match s
                        .http_routes
                        .iter()
                        .position(|r| r.metadata.name.as_deref() == Some(name.as_str()))
                    {
                        Some(at) => s.http_routes[at] = new[0].clone(),
                        None => s.http_routes.extend(new),
                    }
                }
                5 if !s.http_routes.is_empty() => {
                    let at = rng.below(s.http_routes.len());
                    s.http_routes.remove(at);
                }
                // Endpoints only.
                6 => s.endpoint_slices = world(&mut rng).endpoint_slices,
                // Services, listeners: everything a route depends on.
                7 => {
                    let w = world(&mut rng);
                    s.services = w.services;
                    s.endpoint_slices = w.endpoint_slices;
                }
                8 => s.gateways = world(&mut rng).gateways,
                // No change at all.
                _ => {}
            }
        }
    }
}

/// The golden corpus (TLS, grants, conflicts, filters …), with objects dropped and restored.
#[test]
fn golden_inputs_translate_incrementally_as_from_scratch() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/translate/golden");
    let mut dirs: Vec<_> = fs::read_dir(root)
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .collect();
    dirs.sort();
    let mut translator = Translator::new();
    let mut builder = SnapshotBuilder::new();
    let mut rng = Rng(7);
    let mut step = 0;
    for dir in dirs {
        let text = fs::read_to_string(dir.join("input.yaml")).expect("input.yaml");
        let full = parse(&text);
        check(step, &full, &mut translator, &mut builder);
        for _ in 0..6 {
            step += 1;
            let mut s = full.clone();
            if !s.http_routes.is_empty() {
                let at = rng.below(s.http_routes.len());
                s.http_routes.remove(at);
            }
            if rng.below(2) == 0 && !s.secrets.is_empty() {
                s.secrets.pop();
            }
            if rng.below(2) == 0 && !s.reference_grants.is_empty() {
                s.reference_grants.pop();
            }
            check(step, &s, &mut translator, &mut builder);
            check(step, &full, &mut translator, &mut builder);
        }
    }
}

/// A route table of many virtual hosts, edited the ways the builder splices a table from its
/// previous build: one host replaced in place, hosts inserted and removed (the rest shift),
/// a host moved, several changed at once.
#[test]
fn large_route_tables_splice_as_from_scratch() {
    let route = |i: usize, host: &str, path: &str| {
        parse(&format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: route-{i}, namespace: apps}}
spec:
  parentRefs: [{{name: public}}]
  hostnames: [{host}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    backendRefs: [{{name: svc-{}, port: 8080}}]
",
            i % 3
        ))
        .http_routes
        .remove(0)
    };
    let mut s = world(&mut Rng(11));
    s.http_routes = (0..40)
        .map(|i| route(i, &format!("h{i:02}.example.com"), "/"))
        .collect();
    let mut translator = Translator::new();
    let mut builder = SnapshotBuilder::new();
    check(0, &s, &mut translator, &mut builder);
    let edits: [&dyn Fn(&mut Snapshot); 6] = [
        &|s| s.http_routes[20] = route(20, "h20.example.com", "/v2"),
        &|s| s.http_routes.push(route(40, "h20a.example.com", "/")),
        &|s| drop(s.http_routes.remove(5)),
        &|s| s.http_routes[30] = route(30, "h00a.example.com", "/"),
        &|s| {
            s.http_routes.pop();
            s.http_routes.push(route(41, "zz.example.com", "/"));
        },
        &|s| {
            s.http_routes[2] = route(2, "h02.example.com", "/v3");
            s.http_routes[3] = route(3, "h33.example.com", "/");
            s.http_routes.remove(10);
        },
    ];
    for (step, edit) in edits.iter().enumerate() {
        edit(&mut s);
        check(step + 1, &s, &mut translator, &mut builder);
    }
}
