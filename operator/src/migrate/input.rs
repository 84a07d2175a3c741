//! Reading the migration's [`Input`] from YAML/JSON text (files, `kubectl get -o yaml` output),
//! through the translator's document walk so errors carry the same file, line, object and field.
//! Kinds the migration does not read (Deployments, ConfigMaps, …) are passed over: users point it
//! at whole application directories.

use super::{Input, Sourced};
use crate::translate::{LoadError, for_each_document};

/// Adds every Ingress, IngressClass, Service and Secret of `text` to `input`; `origin` (a file
/// name) prefixes each Ingress's `file:line`. Returns how many documents were passed over.
///
/// # Errors
///
/// Invalid YAML, a document without `apiVersion`/`kind`, or an object of a read kind that
/// does not decode (the field is named).
pub fn read_yaml(input: &mut Input, origin: &str, text: &str) -> Result<usize, LoadError> {
    let mut ignored = 0;
    for_each_document(text, |document| {
        match (document.api_version.as_str(), document.kind.as_str()) {
            ("networking.k8s.io/v1", "Ingress") => {
                let source = format!("{origin}:{}", document.line);
                input.ingresses.push(Sourced {
                    object: document.decode()?,
                    source,
                });
            }
            ("networking.k8s.io/v1", "IngressClass") => {
                input.ingress_classes.push(document.decode()?);
            }
            ("v1", "Service") => input.services.push(document.decode()?),
            ("v1", "Secret") => input.secrets.push(document.decode()?),
            _ => ignored += 1,
        }
        Ok(())
    })?;
    Ok(ignored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ingresses_with_their_line_and_passes_over_other_kinds() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i, namespace: n}\nspec: {}\n";
        let mut input = Input::default();
        assert_eq!(read_yaml(&mut input, "a.yaml", text).expect("reads"), 1);
        assert_eq!(input.ingresses.len(), 1);
        assert_eq!(input.ingresses[0].source, "a.yaml:5");
    }

    #[test]
    fn decode_errors_name_line_object_and_field() {
        let text = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i, namespace: n}\nspec:\n  rules:\n  - host: a\n    http:\n      paths:\n      - path: /\n        pathType: [Prefix]\n";
        let err = read_yaml(&mut Input::default(), "a.yaml", text).expect_err("bad");
        let message = err.to_string();
        assert!(message.contains("Ingress n/i"), "{message}");
        assert!(message.contains("spec.rules[0].http.paths[0]"), "{message}");
    }
}
