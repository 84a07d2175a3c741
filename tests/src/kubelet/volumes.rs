//! Pod volumes as files, with no I/O: which Secrets, ConfigMaps and service account tokens a pod
//! needs ([`references`]), and, once they are fetched, the files of each volume
//! ([`volume_files`]): `secret`, `configMap`, `downwardAPI`, `projected` (with
//! `serviceAccountToken`) and `emptyDir`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use super::plan::{PodPlace, field_value};

/// Errors building a volume; the pod waits (like `ContainerCreating`) until they clear.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {volume}: {kind} {name:?} not found")]
    MissingSource {
        volume: String,
        kind: &'static str,
        name: String,
    },
    #[error("volume {volume}: {kind} {name:?} has no key {key:?}")]
    MissingKey {
        volume: String,
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("volume {volume}: path {path:?} must be relative and stay inside the volume")]
    BadPath { volume: String, path: String },
    #[error("volume {volume}: {what} is not supported by this kubelet")]
    Unsupported { volume: String, what: String },
    #[error("volume {volume}: {message}")]
    Field { volume: String, message: String },
}

impl VolumeError {
    /// Stable category for logs and pod status reasons.
    pub fn category(&self) -> &'static str {
        match self {
            VolumeError::MissingSource { .. } => "missing_source",
            VolumeError::MissingKey { .. } => "missing_key",
            VolumeError::BadPath { .. } => "bad_path",
            VolumeError::Unsupported { .. } => "unsupported",
            VolumeError::Field { .. } => "field",
        }
    }
}

/// A service account token the pod asks for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenSpec {
    pub audience: Option<String>,
    pub expiration_seconds: i64,
}

/// What to fetch before a pod's volumes (and environment) can be built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    pub secrets: BTreeSet<String>,
    pub config_maps: BTreeSet<String>,
    pub tokens: BTreeSet<TokenSpec>,
}

/// Fetched sources, by name: `None` for one the apiserver does not have.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub secrets: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    pub config_maps: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    pub tokens: BTreeMap<TokenSpec, String>,
}

/// Every Secret, ConfigMap and token the pod's volumes and environment refer to.
pub fn references(pod: &Pod) -> References {
    let mut refs = References::default();
    let Some(spec) = &pod.spec else {
        return refs;
    };
    for v in spec.volumes.iter().flatten() {
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            refs.secrets.insert(s);
        }
        if let Some(c) = &v.config_map {
            refs.config_maps.insert(c.name.clone());
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(s) = &source.secret {
                refs.secrets.insert(s.name.clone());
            }
            if let Some(c) = &source.config_map {
                refs.config_maps.insert(c.name.clone());
            }
            if let Some(t) = &source.service_account_token {
                refs.tokens.insert(TokenSpec {
                    audience: t.audience.clone().filter(|a| !a.is_empty()),
                    expiration_seconds: t.expiration_seconds.unwrap_or(3600),
                });
            }
        }
    }
    for c in spec.containers.iter() {
        for from in c.env.iter().flatten().filter_map(|e| e.value_from.as_ref()) {
            if let Some(s) = &from.secret_key_ref {
                refs.secrets.insert(s.name.clone());
            }
            if let Some(m) = &from.config_map_key_ref {
                refs.config_maps.insert(m.name.clone());
            }
        }
    }
    refs
}

/// Whether the pod mounts a service account token (so it talks to the apiserver).
pub fn mounts_token(pod: &Pod) -> bool {
    !references(pod).tokens.is_empty()
}

/// A file of a volume: path relative to the volume's directory, contents.
pub type VolumeFile = (PathBuf, Vec<u8>);

fn checked(volume: &str, path: &str) -> Result<PathBuf, VolumeError> {
    let p = Path::new(path);
    let ok = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(p.to_path_buf())
    } else {
        Err(VolumeError::BadPath {
            volume: volume.into(),
            path: path.into(),
        })
    }
}

/// The files of `data` (all keys, or `items` with their paths) under `prefix`.
fn keyed_files(
    volume: &str,
    kind: &'static str,
    name: &str,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
) -> Result<Vec<VolumeFile>, VolumeError> {
    let Some(data) = data else {
        return if optional {
            Ok(Vec::new())
        } else {
            Err(VolumeError::MissingSource {
                volume: volume.into(),
                kind,
                name: name.into(),
            })
        };
    };
    match items {
        None => data
            .iter()
            .map(|(k, v)| Ok((checked(volume, k)?, v.clone())))
            .collect(),
        Some(items) => items
            .iter()
            .filter_map(|item| match data.get(&item.key) {
                Some(v) => Some(checked(volume, &item.path).map(|p| (p, v.clone()))),
                None if optional => None,
                None => Some(Err(VolumeError::MissingKey {
                    volume: volume.into(),
                    kind,
                    name: name.into(),
                    key: item.key.clone(),
                })),
            })
            .collect(),
    }
}

fn downward_files(
    volume: &str,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    place: &PodPlace,
) -> Result<Vec<VolumeFile>, VolumeError> {
    items
        .iter()
        .map(|item| {
            let path = checked(volume, &item.path)?;
            let field = item
                .field_ref
                .as_ref()
                .ok_or_else(|| VolumeError::Unsupported {
                    volume: volume.into(),
                    what: format!("downwardAPI item {:?} without fieldRef", item.path),
                })?;
            let value = field_value(pod, &field.field_path, place).map_err(|message| {
                VolumeError::Field {
                    volume: volume.into(),
                    message,
                }
            })?;
            Ok((path, value.into_bytes()))
        })
        .collect()
}

/// The two kinds of keyed sources.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Secret,
    ConfigMap,
}

/// The files of a Secret or ConfigMap source of volume `volume`.
fn source_files(
    volume: &str,
    sources: &Sources,
    kind: Kind,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    optional: Option<bool>,
) -> Result<Vec<VolumeFile>, VolumeError> {
    let (label, all) = match kind {
        Kind::Secret => ("Secret", &sources.secrets),
        Kind::ConfigMap => ("ConfigMap", &sources.config_maps),
    };
    let data = all.get(name).and_then(Option::as_ref);
    keyed_files(volume, label, name, data, items, optional == Some(true))
}

/// The files of one volume of `pod`.
pub fn volume_files(
    pod: &Pod,
    volume: &Volume,
    sources: &Sources,
    place: &PodPlace,
) -> Result<Vec<VolumeFile>, VolumeError> {
    let name = volume.name.as_str();
    if volume.empty_dir.is_some() {
        return Ok(Vec::new());
    }
    if let Some(s) = &volume.secret {
        let secret = s.secret_name.clone().unwrap_or_default();
        return source_files(
            name,
            sources,
            Kind::Secret,
            &secret,
            s.items.as_ref(),
            s.optional,
        );
    }
    if let Some(c) = &volume.config_map {
        return source_files(
            name,
            sources,
            Kind::ConfigMap,
            &c.name,
            c.items.as_ref(),
            c.optional,
        );
    }
    if let Some(d) = &volume.downward_api {
        return downward_files(name, pod, d.items.as_deref().unwrap_or_default(), place);
    }
    if let Some(p) = &volume.projected {
        let mut files = Vec::new();
        for source in p.sources.iter().flatten() {
            if let Some(s) = &source.secret {
                let items = s.items.as_ref();
                files.extend(source_files(
                    name,
                    sources,
                    Kind::Secret,
                    &s.name,
                    items,
                    s.optional,
                )?);
            } else if let Some(c) = &source.config_map {
                let items = c.items.as_ref();
                files.extend(source_files(
                    name,
                    sources,
                    Kind::ConfigMap,
                    &c.name,
                    items,
                    c.optional,
                )?);
            } else if let Some(d) = &source.downward_api {
                files.extend(downward_files(
                    name,
                    pod,
                    d.items.as_deref().unwrap_or_default(),
                    place,
                )?);
            } else if let Some(t) = &source.service_account_token {
                let spec = TokenSpec {
                    audience: t.audience.clone().filter(|a| !a.is_empty()),
                    expiration_seconds: t.expiration_seconds.unwrap_or(3600),
                };
                let token =
                    sources
                        .tokens
                        .get(&spec)
                        .ok_or_else(|| VolumeError::MissingSource {
                            volume: name.into(),
                            kind: "service account token",
                            name: spec.audience.clone().unwrap_or_default(),
                        })?;
                files.push((checked(name, &t.path)?, token.clone().into_bytes()));
            } else {
                return Err(VolumeError::Unsupported {
                    volume: name.into(),
                    what: "a projected source other than secret, configMap, downwardAPI and serviceAccountToken".into(),
                });
            }
        }
        return Ok(files);
    }
    Err(VolumeError::Unsupported {
        volume: name.into(),
        what: "a volume type other than secret, configMap, projected, downwardAPI and emptyDir"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn place() -> PodPlace {
        PodPlace {
            pod_ip: std::net::Ipv4Addr::new(10, 214, 0, 2),
            host_ip: "127.0.0.1".into(),
            node_name: "n".into(),
            apiserver: None,
        }
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "containers": [{"name": "c", "image": "i",
                    "env": [{"name": "E", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}]}],
                "volumes": [
                    {"name": "certs", "secret": {"secretName": "tls"}},
                    {"name": "boot", "configMap": {"name": "bootstrap",
                        "items": [{"key": "bootstrap.json", "path": "b/bootstrap.json"}]}},
                    {"name": "kube-api-access", "projected": {"sources": [
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace",
                            "fieldRef": {"fieldPath": "metadata.namespace"}}]}}
                    ]}},
                    {"name": "scratch", "emptyDir": {}}
                ]
            }
        }))
        .expect("pod")
    }

    fn sources() -> Sources {
        let data = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                    .collect(),
            )
        };
        let mut s = Sources::default();
        s.secrets
            .insert("tls".into(), data(&[("tls.crt", "C"), ("tls.key", "K")]));
        s.config_maps.insert(
            "bootstrap".into(),
            data(&[("bootstrap.json", "{}"), ("other", "x")]),
        );
        s.config_maps
            .insert("kube-root-ca.crt".into(), data(&[("ca.crt", "CA")]));
        s.tokens.insert(
            TokenSpec {
                audience: None,
                expiration_seconds: 3607,
            },
            "jwt".into(),
        );
        s
    }

    fn files_of(volume: usize) -> Result<Vec<VolumeFile>, VolumeError> {
        let p = pod();
        let v = &p
            .spec
            .as_ref()
            .expect("spec")
            .volumes
            .as_ref()
            .expect("volumes")[volume];
        volume_files(&p, v, &sources(), &place())
    }

    #[test]
    fn references_cover_volumes_projected_sources_and_env() {
        let refs = references(&pod());
        assert_eq!(refs.secrets, BTreeSet::from(["tls".to_owned()]));
        assert_eq!(
            refs.config_maps,
            BTreeSet::from([
                "bootstrap".into(),
                "env-cm".into(),
                "kube-root-ca.crt".into()
            ])
        );
        assert_eq!(refs.tokens.len(), 1);
        assert!(mounts_token(&pod()));
    }

    #[test]
    fn secrets_config_maps_and_projected_volumes_become_files() {
        let certs = files_of(0).expect("certs");
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0], (PathBuf::from("tls.crt"), b"C".to_vec()));
        assert_eq!(
            files_of(1).expect("boot"),
            vec![(PathBuf::from("b/bootstrap.json"), b"{}".to_vec())]
        );
        let api = files_of(2).expect("projected");
        let names: Vec<_> = api.iter().map(|(p, _)| p.display().to_string()).collect();
        assert_eq!(names, ["token", "ca.crt", "namespace"]);
        assert_eq!(api[2].1, b"ns");
        assert!(files_of(3).expect("emptyDir").is_empty());
    }

    #[test]
    fn missing_sources_and_escaping_paths_are_errors_not_panics() {
        let p = pod();
        let v = &p
            .spec
            .as_ref()
            .expect("spec")
            .volumes
            .as_ref()
            .expect("volumes")[0];
        let err = volume_files(&p, v, &Sources::default(), &place()).expect_err("missing");
        assert_eq!(err.category(), "missing_source");
        assert!(err.to_string().contains("\"tls\""), "{err}");

        let mut bad = sources();
        bad.secrets.insert(
            "tls".into(),
            Some(BTreeMap::from([(
                "../etc/passwd".to_owned(),
                b"x".to_vec(),
            )])),
        );
        let err = volume_files(&p, v, &bad, &place()).expect_err("escape");
        assert_eq!(err.category(), "bad_path");

        let host: Volume =
            serde_json::from_value(json!({"name": "h", "hostPath": {"path": "/"}})).expect("v");
        let err = volume_files(&p, &host, &sources(), &place()).expect_err("hostPath");
        assert_eq!(err.category(), "unsupported");
    }
}
