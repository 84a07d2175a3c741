//! Golden tests: each `tests/golden/<case>/input.yaml` snapshot is translated and the result
//! (IR, statuses, diagnostics) compared byte for byte with `output.yaml`.
//!
//! Golden files make behaviour changes visible in review: a change to the translator shows up
//! as a diff of what Envoy and users would see. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p eg-operator --test translate_golden`, then read the diff
//! before keeping it.

use std::fs;
use std::path::{Path, PathBuf};

use eg_operator::translate::{snapshot_from_yaml, translate};

#[macro_use]
mod common;

use common::golden::{assert_every_case_listed, compare};

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
    compare(
        &golden_dir().join(case).join("output.yaml"),
        &render(case),
        "cargo test -p eg-operator --test translate_golden",
    );
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
    policies => "policies",
    client_traffic_policy => "client-traffic-policy",
    security_services => "security-services",
}

/// Every fixture directory is listed above, so none is silently skipped.
#[test]
fn every_case_is_listed() {
    assert_every_case_listed(&golden_dir(), CASES);
}
