//! Determinism and totality: the same snapshot always yields the same translation, whatever
//! order its objects arrive in (informer caches have no order), and no snapshot — including
//! ones with objects missing — makes the translator panic.
//!
//! The golden inputs double as the corpus, so every feature they cover is checked here too.

use std::fs;
use std::path::Path;

use eg_operator::translate::ir::GatewayIr;
use eg_operator::translate::{Snapshot, Translation, snapshot_from_yaml, translate};

const CONTROLLER: &str = "gateway.envoyproxy.io/gatewayclass-controller";

fn corpus() -> Vec<(String, Snapshot)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/translate/golden");
    let mut cases: Vec<(String, Snapshot)> = fs::read_dir(root)
        .expect("tests/translate/golden exists")
        .map(|entry| {
            let dir = entry.expect("readable entry").path();
            let text = fs::read_to_string(dir.join("input.yaml")).expect("input.yaml is readable");
            let name = dir
                .file_name()
                .expect("named")
                .to_string_lossy()
                .into_owned();
            (
                name,
                snapshot_from_yaml(CONTROLLER, &text).expect("input.yaml loads"),
            )
        })
        .collect();
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!cases.is_empty(), "the golden corpus is empty");
    cases
}

/// A small deterministic PRNG (xorshift64*), so failures reproduce without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = usize::try_from(self.next() % (i as u64 + 1)).expect("fits usize");
            items.swap(i, j);
        }
    }
}

fn shuffled(snapshot: &Snapshot, seed: u64) -> Snapshot {
    let mut rng = Rng(seed);
    let mut s = snapshot.clone();
    rng.shuffle(&mut s.gateway_classes);
    rng.shuffle(&mut s.gateways);
    rng.shuffle(&mut s.http_routes);
    rng.shuffle(&mut s.reference_grants);
    rng.shuffle(&mut s.services);
    rng.shuffle(&mut s.endpoint_slices);
    rng.shuffle(&mut s.secrets);
    rng.shuffle(&mut s.namespaces);
    for slice in &mut s.endpoint_slices {
        if let Some(endpoints) = slice.endpoints.as_mut() {
            rng.shuffle(endpoints);
        }
    }
    s
}

fn render(t: &Translation) -> String {
    serde_yaml_ng::to_string(t).expect("translation serializes")
}

#[test]
fn translating_twice_gives_identical_output() {
    for (name, snapshot) in corpus() {
        assert_eq!(translate(&snapshot), translate(&snapshot), "case {name}");
    }
}

#[test]
fn input_order_does_not_matter() {
    for (name, snapshot) in corpus() {
        let expected = render(&translate(&snapshot));
        for seed in 1..=16_u64 {
            let actual = render(&translate(&shuffled(&snapshot, seed * 0x9e37_79b9)));
            assert_eq!(expected, actual, "case {name}, shuffle seed {seed}");
        }
    }
}

/// Leaving any one object out must still translate (dangling references become status), and
/// deterministically.
#[test]
fn every_partial_snapshot_translates() {
    fn leave_one_out<T: Clone>(items: &[T], mut each: impl FnMut(Vec<T>)) {
        for i in 0..items.len() {
            let mut rest = items.to_vec();
            rest.remove(i);
            each(rest);
        }
    }
    for (_, snapshot) in corpus() {
        let check = |s: Snapshot| assert_eq!(translate(&s), translate(&shuffled(&s, 7)));
        leave_one_out(&snapshot.gateway_classes, |v| {
            check(Snapshot {
                gateway_classes: v,
                ..snapshot.clone()
            })
        });
        leave_one_out(&snapshot.gateways, |v| {
            check(Snapshot {
                gateways: v,
                ..snapshot.clone()
            })
        });
        leave_one_out(&snapshot.http_routes, |v| {
            check(Snapshot {
                http_routes: v,
                ..snapshot.clone()
            })
        });
        leave_one_out(&snapshot.reference_grants, |v| {
            check(Snapshot {
                reference_grants: v,
                ..snapshot.clone()
            })
        });
        leave_one_out(&snapshot.services, |v| {
            check(Snapshot {
                services: v,
                ..snapshot.clone()
            })
        });
        leave_one_out(&snapshot.secrets, |v| {
            check(Snapshot {
                secrets: v,
                ..snapshot.clone()
            })
        });
        leave_one_out(&snapshot.namespaces, |v| {
            check(Snapshot {
                namespaces: v,
                ..snapshot.clone()
            })
        });
    }
}

/// Objects missing what an API server always sets (names, namespaces, specs' optional parts)
/// must not panic either.
#[test]
fn degenerate_objects_do_not_panic() {
    let text = "\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {}
spec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: eg}
spec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: eg
  listeners:
  - {name: zero, port: 0, protocol: HTTP}
  - {name: huge, port: 70000, protocol: HTTP}
  - {name: dup, port: 80, protocol: HTTP}
  - {name: dup, port: 81, protocol: HTTP}
  - {name: https-no-tls, port: 443, protocol: HTTPS}
  - {name: https-no-refs, port: 444, protocol: HTTPS, tls: {}}
  - {name: http-with-tls, port: 82, protocol: HTTP, tls: {certificateRefs: [{name: x}]}}
  - {name: selector-missing, port: 83, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector}}}
  - {name: udp, port: 53, protocol: UDP, tls: {mode: Passthrough}}
  - {name: tls-no-mode-no-refs, port: 8443, protocol: TLS, tls: {}}
  - {name: sctp, port: 9, protocol: SCTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: empty, namespace: x}
spec: {gatewayClassName: eg, listeners: []}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {}
spec:
  parentRefs: [{name: gw}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw, namespace: \"\"}]
  rules:
  - {}
  - matches: [{path: {type: Exact, value: no-slash}}]
  - filters: [{type: RequestRedirect}, {type: URLRewrite, urlRewrite: {}}]
  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m}, fraction: {numerator: 5, denominator: 0}}}]
  - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 418, port: 70000}}]
  - timeouts: {request: 1s, backendRequest: 2s}
  - backendRefs: [{name: s, port: -1, weight: -5}]
  - backendRefs: [{name: s, port: 80, filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: ':path', value: x}]}}]}]
";
    let snapshot = snapshot_from_yaml(CONTROLLER, text).expect("loads");
    let translation = translate(&snapshot);
    assert_eq!(translation, translate(&shuffled(&snapshot, 3)));
    let gateway = &translation.status.gateways["/gw"];
    let listeners = gateway.listeners.as_ref().expect("listener statuses");
    assert_eq!(listeners.len(), 11);
    // Only the first "dup" survives validation; everything else is rejected.
    let valid: Vec<&str> = translation.gateways[0]
        .listeners
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(valid, ["dup"]);
    assert!(translation.status.gateways.contains_key("x/empty"));
}

/// The IR is a wire contract: it must read back exactly as written.
#[test]
fn ir_round_trips_through_json() {
    for (name, snapshot) in corpus() {
        for gateway in translate(&snapshot).gateways {
            let json = serde_json::to_string(&gateway).expect("serializes");
            let back: GatewayIr = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(gateway, back, "case {name}");
        }
    }
}

/// `ports()` groups listeners by port, ports ascending, listeners in spec order.
#[test]
fn ports_group_listeners() {
    let (_, snapshot) = corpus()
        .into_iter()
        .find(|(name, _)| name == "https-tls")
        .expect("https-tls case");
    let translation = translate(&snapshot);
    let ports = translation.gateways[0].ports();
    let grouped: Vec<((bool, u16), Vec<&str>)> = ports
        .iter()
        .map(|(port, ls)| (*port, ls.iter().map(|l| l.name.as_str()).collect()))
        .collect();
    assert_eq!(
        grouped,
        [
            ((false, 80), vec!["http"]),
            ((false, 443), vec!["secure", "granted"])
        ]
    );
}

/// Private keys travel in the IR but must never reach logs through `Debug`.
#[test]
fn debug_output_redacts_private_keys() {
    let (_, snapshot) = corpus()
        .into_iter()
        .find(|(name, _)| name == "https-tls")
        .expect("https-tls case");
    let translation = translate(&snapshot);
    let debug = format!("{translation:?}");
    assert!(debug.contains("<redacted>"));
    assert!(!debug.contains("PRIVATE KEY"));
}
