//! Golden tests: each `tests/golden/<case>/input.yaml` snapshot is translated and the result
//! (IR, statuses, diagnostics) compared byte for byte with `output.yaml`.
//!
//! Golden files make behaviour changes visible in review: a change to the translator shows up
//! as a diff of what Envoy and users would see. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test --test golden`, then read the diff before keeping it.

use std::fs;
use std::path::{Path, PathBuf};

use eg_operator::translate::{snapshot_from_yaml, translate};

/// The controllerName every fixture's own GatewayClass uses.
const CONTROLLER: &str = "gateway.envoyproxy.io/gatewayclass-controller";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/translate/golden")
}

fn render(case: &str) -> String {
    let input = golden_dir().join(case).join("input.yaml");
    let text = fs::read_to_string(&input).expect("input.yaml is readable");
    let snapshot = snapshot_from_yaml(CONTROLLER, &text).expect("input.yaml loads");
    serde_yaml_ng::to_string(&translate(&snapshot)).expect("translation serializes")
}

fn check(case: &str) {
    let actual = render(case);
    let path = golden_dir().join(case).join("output.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        fs::write(&path, &actual).expect("output.yaml is writable");
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "golden case {case} differs from output.yaml at line {}\n--- expected: {:?}\n+++ actual:   {:?}\n\
             run `UPDATE_GOLDEN=1 cargo test --test golden` and review the diff",
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line),
        );
    }
}

macro_rules! golden {
    ($($name:ident => $dir:literal),* $(,)?) => {
        const CASES: &[&str] = &[$($dir),*];
        $(
            #[test]
            fn $name() {
                check($dir);
            }
        )*
    };
}

golden! {
    basic_http => "basic-http",
    hostname_intersection => "hostname-intersection",
    route_precedence => "route-precedence",
    weighted_backends => "weighted-backends",
    filters => "filters",
    https_tls => "https-tls",
    cross_namespace_backends => "cross-namespace-backends",
    missing_backend => "missing-backend",
    listener_conflicts => "listener-conflicts",
    bad_regex => "bad-regex",
    allowed_routes => "allowed-routes",
    other_controller => "other-controller",
    cors => "cors",
    backend_filters => "backend-filters",
    invalid_weight => "invalid-weight",
    grpc_routes => "grpc-routes",
    tls_routes => "tls-routes",
    tcp_udp_routes => "tcp-udp-routes",
    backend_tls_policy => "backend-tls-policy",
}

/// Every fixture directory is listed above, so none is silently skipped.
#[test]
fn every_case_is_listed() {
    let mut dirs: Vec<String> = fs::read_dir(golden_dir())
        .expect("tests/translate/golden exists")
        .map(|e| {
            e.expect("readable entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    dirs.sort();
    let mut listed: Vec<String> = CASES.iter().map(|c| (*c).to_owned()).collect();
    listed.sort();
    assert_eq!(dirs, listed);
}
