//! `eg-operator migrate ingress-nginx` as a command: manifests to stdout and the report to
//! stderr, `-o DIR` with one file per namespace and the report on stdout, `--strict`'s exit
//! code, and bad input named by file, line, object and field.

use std::path::Path;
use std::process::Command;

fn migrate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eg-operator"))
        .args(["migrate", "ingress-nginx"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run eg-operator migrate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SNIPPETS: &str = "tests/migrate/golden/snippets/input.yaml";

#[test]
fn manifests_go_to_stdout_and_the_report_to_stderr() {
    let (code, stdout, stderr) = migrate(&["-f", SNIPPETS]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("kind: HTTPRoute"), "{stdout}");
    assert!(stderr.contains("configuration-snippet"), "{stderr}");
    assert!(stderr.contains("2 not translated"), "{stderr}");
}

#[test]
fn strict_fails_when_anything_was_not_translated() {
    let (code, _, _) = migrate(&["-f", SNIPPETS, "--strict"]);
    assert_eq!(code, 3);
    let (code, _, stderr) = migrate(&[
        "-f",
        "tests/migrate/golden/path-exact/input.yaml",
        "--strict",
    ]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn output_dir_gets_one_file_per_namespace_and_stdout_the_json_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stdout, stderr) = migrate(&[
        "-f",
        "tests/migrate/golden/realistic/input.yaml",
        "-o",
        dir.path().to_str().expect("utf-8 path"),
        "--report-format",
        "json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(report["summary"]["ingresses"], 6);
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .expect("output dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "auth.yaml",
            "default.yaml",
            "ops.yaml",
            "payments.yaml",
            "shop.yaml"
        ]
    );
    assert!(Path::new(&dir.path().join("default.yaml")).exists());
}

#[test]
fn bad_input_names_file_line_object_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i, namespace: n}\nspec:\n  rules: {}\n",
    )
    .expect("write");
    let (code, _, stderr) = migrate(&["-f", file.to_str().expect("utf-8 path")]);
    assert_ne!(code, 0);
    assert!(stderr.contains("bad.yaml:"), "{stderr}");
    assert!(stderr.contains("Ingress n/i"), "{stderr}");
    assert!(stderr.contains("spec.rules"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn without_input_it_says_what_to_give() {
    let (code, _, stderr) = migrate(&[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("-f FILES or --kubeconfig"), "{stderr}");
}
