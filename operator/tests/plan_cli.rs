//! `eg-operator plan` against the design's production example: golden output, JSON, exit codes,
//! and errors that name file, line and field.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_owned()
}

fn plan(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eg-operator"))
        .arg("plan")
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run eg-operator plan");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Set UPDATE_GOLDEN=1 to rewrite the golden file after an intended change.
#[test]
fn production_example_plan_matches_golden_file() {
    let (code, stdout, stderr) = plan(&["-f", "examples/envoygateway-production.yaml"]);
    assert_eq!(
        code, 2,
        "changes pending against an empty cluster; stderr: {stderr}"
    );
    let golden = repo().join("operator/tests/golden/plan-production.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &stdout).expect("write golden");
    }
    let expected = std::fs::read_to_string(&golden).expect("golden file");
    assert_eq!(
        stdout, expected,
        "plan output changed; UPDATE_GOLDEN=1 to accept"
    );
}

#[test]
fn json_output_lists_waves_and_steps() {
    let (code, stdout, _) = plan(&["-f", "examples/envoygateway-production.yaml", "-o", "json"]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let waves = v["waves"].as_array().expect("waves");
    assert_eq!(waves.last().expect("a wave")[0], "GatewayClass production");
    let steps = v["plan"]["steps"].as_array().expect("steps");
    assert!(steps.iter().all(|s| s["action"] == "create"));
    assert!(
        steps
            .iter()
            .any(|s| s["id"]["kind"] == "Deployment" && s["id"]["namespace"] == "eg-production")
    );
}

#[test]
fn bad_manifest_is_reported_with_file_line_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: operator.gateway.envoyproxy.io/v1alpha1\nkind: EnvoyGateway\nmetadata: {name: x, namespace: y}\nspec:\n  gatewayClassName: x\n  controlPlane:\n    replicas: three\n",
    )
    .expect("write");
    let (code, _, stderr) = plan(&["-f", file.to_str().expect("utf-8 path")]);
    assert_eq!(code, 1);
    assert!(stderr.contains("bad.yaml:7:"), "{stderr}");
    assert!(stderr.contains("spec.controlPlane.replicas"), "{stderr}");

    std::fs::write(
        &file,
        "apiVersion: operator.gateway.envoyproxy.io/v1alpha1\nkind: EnvoyGateway\nmetadata: {name: x, namespace: y}\nspec:\n  gatewayClassName: x\n  certificates: {duration: 1h, renewBefore: 2h}\n",
    )
    .expect("write");
    let (code, _, stderr) = plan(&["-f", file.to_str().expect("utf-8 path")]);
    assert_eq!(code, 1);
    assert!(stderr.contains("spec.certificates.renewBefore"), "{stderr}");
}
