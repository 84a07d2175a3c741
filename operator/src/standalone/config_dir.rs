//! The configuration directory of standalone mode: every `*.yaml`, `*.yml` and `*.json` file
//! under it (recursively, many documents per file) merged into one translator snapshot.
//!
//! Each file is tracked on its own: a file that stops parsing keeps contributing its last good
//! objects and carries an error naming the file, line, object and field until it is fixed, so
//! one bad edit never takes routes away. A deleted file takes its objects with it. What the
//! Kubernetes API server would add is added here: the `default` namespace for objects without
//! one, Namespace objects for every namespace used, and Secret `stringData` folded into `data`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::translate::{LoadError, Skipped, Snapshot, load_yaml};

/// A file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct FileError {
    pub file: String,
    /// 1-based; 0 when the file could not be read at all.
    pub line: usize,
    /// The problem, with the object (`Kind namespace/name`) and field when known.
    pub message: String,
    /// Stable category for metrics.
    pub category: &'static str,
}

#[derive(Debug, Clone, Default)]
struct FileState {
    /// What the file held when it last loaded cleanly.
    last_good: Option<Snapshot>,
    skipped: Vec<Skipped>,
    error: Option<FileError>,
    /// The text last read, to skip reparsing files an event did not change.
    text: Option<String>,
}

/// All files of the directory and what each contributes.
#[derive(Debug, Clone)]
pub struct ConfigDir {
    root: PathBuf,
    controller_name: String,
    files: BTreeMap<PathBuf, FileState>,
}

/// The outcome of one reload.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ReloadReport {
    /// Files whose content changed (added, edited or removed) since the previous reload.
    pub changed: Vec<String>,
    /// Every file currently failing, with the error.
    pub errors: Vec<FileError>,
    /// Documents recognised but not translated (yet), as `file:line: Kind ns/name`.
    pub skipped: Vec<String>,
}

impl ConfigDir {
    pub fn new(root: impl Into<PathBuf>, controller_name: impl Into<String>) -> Self {
        Self {
            root: root.into(),
            controller_name: controller_name.into(),
            files: BTreeMap::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Rereads the directory. Unchanged files are not reparsed.
    pub fn reload(&mut self) -> ReloadReport {
        let mut report = ReloadReport::default();
        let present = manifest_files(&self.root);
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !present.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            self.files.remove(&path);
            report.changed.push(self.display(&path));
        }
        for path in present {
            let text = std::fs::read_to_string(&path);
            let state = self.files.entry(path.clone()).or_default();
            match text {
                Ok(text) if state.text.as_deref() == Some(text.as_str()) => {}
                Ok(text) => {
                    let display = display(&self.root, &path);
                    match load_yaml(&self.controller_name, &text) {
                        Ok((snapshot, skipped)) => {
                            state.last_good = Some(snapshot);
                            state.skipped = skipped;
                            state.error = None;
                        }
                        Err(e) => state.error = Some(file_error(&display, &e)),
                    }
                    state.text = Some(text);
                    report.changed.push(display);
                }
                Err(e) => {
                    state.error = Some(FileError {
                        file: display(&self.root, &path),
                        line: 0,
                        message: e.to_string(),
                        category: "read",
                    });
                    state.text = None;
                }
            }
        }
        for (path, state) in &self.files {
            report.errors.extend(state.error.clone());
            let file = display(&self.root, path);
            report.skipped.extend(
                state
                    .skipped
                    .iter()
                    .map(|s| format!("{file}:{}: {}", s.line, s.object)),
            );
        }
        report
    }

    fn display(&self, path: &Path) -> String {
        display(&self.root, path)
    }

    /// The merged snapshot of every file's last good content.
    pub fn snapshot(&self) -> Snapshot {
        let mut all = Snapshot {
            controller_name: self.controller_name.clone(),
            // The files' author runs this machine: nothing a Backend reaches is theirs to hide.
            backend_api: true,
            ..Snapshot::default()
        };
        for state in self.files.values() {
            if let Some(s) = &state.last_good {
                all.extend(s.clone());
            }
        }
        complete_like_the_api_server(&mut all);
        all
    }
}

fn display(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn file_error(file: &str, e: &LoadError) -> FileError {
    let message = e.to_string();
    // The line is reported on its own; keep the message free of the "line N: " prefix.
    let message = message
        .split_once(": ")
        .filter(|(head, _)| head.starts_with("line "))
        .map_or(message.clone(), |(_, rest)| rest.to_owned());
    FileError {
        file: file.to_owned(),
        line: e.line(),
        message,
        category: e.category(),
    }
}

/// Manifest files under `root`, sorted; unreadable directories are skipped (their files then
/// count as removed, which a later reload undoes).
pub fn manifest_files(root: &Path) -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            // Editors' swap and backup files, and hidden directories (.git), are not config.
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                walk(&path, out);
            } else if is_manifest(&path) {
                out.insert(path);
            }
        }
    }
    let mut out = BTreeSet::new();
    if root.is_file() {
        out.insert(root.to_owned());
    } else {
        walk(root, &mut out);
    }
    out
}

/// Whether a path is a manifest by its extension.
pub fn is_manifest(path: &Path) -> bool {
    path.extension()
        .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
}

/// Fills in what an API server would: namespaces, generations, Namespace objects, Secret data.
pub fn complete_like_the_api_server(s: &mut Snapshot) {
    fn fill(meta: &mut ObjectMeta, used: &mut BTreeSet<String>) {
        let ns = meta
            .namespace
            .get_or_insert_with(|| "default".to_owned())
            .clone();
        // Conditions carry observedGeneration; a file has no server to count for it.
        meta.generation.get_or_insert(1);
        used.insert(ns);
    }
    let mut used = BTreeSet::new();
    for g in &mut s.gateways {
        fill(&mut g.metadata, &mut used);
    }
    for r in &mut s.http_routes {
        fill(&mut r.metadata, &mut used);
    }
    for r in &mut s.grpc_routes {
        fill(&mut r.metadata, &mut used);
    }
    for r in &mut s.tls_routes {
        fill(&mut r.metadata, &mut used);
    }
    for r in &mut s.tcp_routes {
        fill(&mut r.metadata, &mut used);
    }
    for r in &mut s.udp_routes {
        fill(&mut r.metadata, &mut used);
    }
    for g in &mut s.reference_grants {
        fill(&mut g.metadata, &mut used);
    }
    for svc in &mut s.services {
        fill(&mut svc.metadata, &mut used);
    }
    for e in &mut s.endpoint_slices {
        fill(&mut e.metadata, &mut used);
    }
    for m in &mut s.config_maps {
        fill(&mut m.metadata, &mut used);
    }
    for p in &mut s.backend_tls_policies {
        fill(&mut p.metadata, &mut used);
    }
    for p in &mut s.backend_traffic_policies {
        fill(&mut p.metadata, &mut used);
    }
    for p in &mut s.security_policies {
        fill(&mut p.metadata, &mut used);
    }
    for p in &mut s.client_traffic_policies {
        fill(&mut p.metadata, &mut used);
    }
    for b in &mut s.backends {
        fill(&mut b.metadata, &mut used);
    }
    for secret in &mut s.secrets {
        fill(&mut secret.metadata, &mut used);
        if let Some(string_data) = secret.string_data.take() {
            let data = secret.data.get_or_insert_with(BTreeMap::new);
            for (k, v) in string_data {
                data.insert(k, ByteString(v.into_bytes()));
            }
        }
    }
    for c in &mut s.gateway_classes {
        c.metadata.generation.get_or_insert(1);
    }
    let declared: BTreeSet<String> = s
        .namespaces
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    for name in used.difference(&declared) {
        s.namespaces.push(Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_owned(),
                    name.clone(),
                )])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        });
    }
    for n in &mut s.namespaces {
        if let Some(name) = n.metadata.name.clone() {
            n.metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .entry("kubernetes.io/metadata.name".to_owned())
                .or_insert(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: g}]\n";

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn loads_recursively_and_defaults_namespaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "a/b/routes.yaml",
            &format!(
                "{ROUTE}---\n{}",
                ROUTE.replace("name: r}", "name: r2, namespace: shop}")
            ),
        );
        write(dir.path(), "notes.txt", "not config");
        write(dir.path(), ".hidden/x.yaml", "garbage: [");
        let mut config = ConfigDir::new(dir.path(), "c");
        let report = config.reload();
        assert_eq!(report.errors, vec![]);
        assert_eq!(report.changed, vec!["a/b/routes.yaml".to_owned()]);
        let s = config.snapshot();
        assert_eq!(s.http_routes.len(), 2);
        assert_eq!(
            s.http_routes[0].metadata.namespace.as_deref(),
            Some("default")
        );
        let mut namespaces: Vec<_> = s
            .namespaces
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        namespaces.sort();
        assert_eq!(namespaces, vec!["default", "shop"]);
    }

    #[test]
    fn a_broken_file_keeps_its_last_good_objects_and_names_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "routes.yaml", ROUTE);
        let mut config = ConfigDir::new(dir.path(), "c");
        assert!(config.reload().errors.is_empty());
        write(
            dir.path(),
            "routes.yaml",
            &format!("{ROUTE}  rules:\n  - matches:\n    - path: {{type: Bogus, value: /}}\n"),
        );
        let report = config.reload();
        assert_eq!(report.errors.len(), 1, "{report:?}");
        let e = &report.errors[0];
        assert_eq!(
            (e.file.as_str(), e.line, e.category),
            ("routes.yaml", 8, "decode")
        );
        assert!(
            e.message.contains("HTTPRoute r")
                && e.message.contains("spec.rules[0].matches[0].path.type"),
            "{e}"
        );
        assert_eq!(
            config.snapshot().http_routes.len(),
            1,
            "last good route still served"
        );

        write(
            dir.path(),
            "routes.yaml",
            &ROUTE.replace("name: r}", "name: fixed}"),
        );
        let report = config.reload();
        assert!(report.errors.is_empty());
        assert_eq!(
            config.snapshot().http_routes[0].metadata.name.as_deref(),
            Some("fixed")
        );

        std::fs::remove_file(dir.path().join("routes.yaml")).expect("rm");
        let report = config.reload();
        assert_eq!(report.changed, vec!["routes.yaml".to_owned()]);
        assert!(config.snapshot().http_routes.is_empty());
    }

    #[test]
    fn unchanged_files_are_not_reported_as_changed() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "r.yml", ROUTE);
        let mut config = ConfigDir::new(dir.path(), "c");
        assert_eq!(config.reload().changed.len(), 1);
        assert!(config.reload().changed.is_empty());
    }

    #[test]
    fn secret_string_data_becomes_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "s.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\nstringData: {tls.crt: CERT, tls.key: KEY}\n",
        );
        let mut config = ConfigDir::new(dir.path(), "c");
        config.reload();
        let s = config.snapshot();
        let data = s.secrets[0].data.as_ref().expect("data");
        assert_eq!(
            data.get("tls.crt").map(|b| b.0.as_slice()),
            Some(&b"CERT"[..])
        );
    }
}
