//! Golden tests of `migrate ingress-nginx`'s pure core: each `tests/migrate/golden/<case>/input.yaml`
//! (Ingresses, IngressClasses, Services, Secrets) is migrated and the manifests and the text report
//! compared byte for byte with `output.yaml` and `report.txt`. One case per annotation and path
//! type, plus a realistic multi-host, multi-namespace estate.
//!
//! Every output must also load with the translator's own loader (the Gateway API objects decode
//! as their typed kinds), so a golden cannot pin a manifest the control plane would refuse.
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p eg-operator --test migrate_golden`, then read
//! the diff before keeping it.

use std::fs;
use std::path::{Path, PathBuf};

use eg_operator::migrate::input::read_yaml;
use eg_operator::migrate::{Input, Options, convert};
use eg_operator::translate::load_yaml;

#[macro_use]
mod common;

use common::golden::{assert_every_case_listed, compare};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/migrate/golden")
}

fn check(case: &str) {
    let text = fs::read_to_string(golden_dir().join(case).join("input.yaml")).expect("input.yaml");
    let mut input = Input::default();
    read_yaml(&mut input, "input.yaml", &text).expect("input.yaml loads");
    let migration = convert(&input, &Options::default());
    let yaml = migration.to_yaml();
    load_yaml("gateway.envoyproxy.io/gatewayclass-controller", &yaml)
        .unwrap_or_else(|e| panic!("case {case}: output does not load: {e}\n{yaml}"));
    let rerun = "cargo test -p eg-operator --test migrate_golden";
    compare(&golden_dir().join(case).join("output.yaml"), &yaml, rerun);
    compare(
        &golden_dir().join(case).join("report.txt"),
        &migration.report.to_text(),
        rerun,
    );
}

golden! {
    affinity_cookie => "affinity-cookie",
    app_root => "app-root",
    auth_basic => "auth-basic",
    auth_url => "auth-url",
    backend_protocol => "backend-protocol",
    canary_by_cookie => "canary-by-cookie",
    canary_by_header => "canary-by-header",
    canary_weight => "canary-weight",
    cors => "cors",
    custom_http_errors => "custom-http-errors",
    default_backend => "default-backend",
    force_ssl_redirect => "force-ssl-redirect",
    ingress_class => "ingress-class",
    limit_connections => "limit-connections",
    limit_rps => "limit-rps",
    named_port => "named-port",
    path_exact => "path-exact",
    path_implementation_specific => "path-implementation-specific",
    path_prefix => "path-prefix",
    permanent_redirect => "permanent-redirect",
    proxy_body_size => "proxy-body-size",
    proxy_timeouts => "proxy-timeouts",
    realistic => "realistic",
    rewrite_target => "rewrite-target",
    snippets => "snippets",
    source_range => "source-range",
    ssl_redirect => "ssl-redirect",
    temporal_redirect => "temporal-redirect",
    upstream_hash_by => "upstream-hash-by",
    use_regex => "use-regex",
}

/// Every fixture directory is listed above, so none is silently skipped.
#[test]
fn every_case_is_listed() {
    assert_every_case_listed(&golden_dir(), CASES);
}
