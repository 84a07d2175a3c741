//! `eg-operator translate`: manifests in, IR, Envoy resources and statuses out; bad manifests
//! are reported with the file and document.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_owned()
}

fn translate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eg-operator"))
        .arg("translate")
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run eg-operator translate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn golden_input_translates_to_envoy_resources_and_statuses() {
    let input = "operator/tests/translate/golden/weighted-backends/input.yaml";
    let text = std::fs::read_to_string(repo().join(input)).expect("fixture");
    let controller = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("controllerName:"))
        .map(|c| c.trim().trim_matches('"').to_owned())
        .expect("fixture names its controller");
    let (code, stdout, stderr) =
        translate(&["-f", input, "--controller-name", &controller, "-o", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let envoy = v["envoy"].as_object().expect("envoy per gateway");
    assert!(!envoy.is_empty());
    for resources in envoy.values() {
        for type_url in [
            "type.googleapis.com/envoy.config.listener.v3.Listener",
            "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        ] {
            assert!(
                resources.get(type_url).is_some(),
                "{type_url} missing: {resources}"
            );
        }
    }
    assert!(
        v["status"]["http_routes"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
    );
}

#[test]
fn unsupported_document_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
    )
    .expect("write");
    let (code, _, stderr) = translate(&["-f", dir.path().to_str().expect("utf-8")]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("routes.yaml:5: Widget w: unsupported kind"),
        "{stderr}"
    );
    assert!(stderr.contains("Widget"), "{stderr}");
}
