//! Field paths inside a JSON object, and their one text form (`.spec.containers[0].image`,
//! `.metadata.labels["app.kubernetes.io/name"]`).
//!
//! Plans carry paths as text because that is what people read and what golden files pin. The
//! plan's pure apply model has to act on those same paths, so rendering and parsing live
//! together here and are tested as inverses.

use std::fmt::Write as _;

use serde_json::Value;

/// One step into a JSON value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// Renders a path; keys that are not simple identifiers are bracket-quoted as JSON strings.
pub(crate) fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Segment::Key(k) if is_identifier(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Key(k) => {
                out.push('[');
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(']');
            }
            Segment::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

/// Parses what [`render`] produces; `None` for anything else.
pub(crate) fn parse(text: &str) -> Option<Vec<Segment>> {
    let mut segments = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let key = &after[..end];
            if !is_identifier(key) {
                return None;
            }
            segments.push(Segment::Key(key.to_owned()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix("[\"") {
            let close = closing_quote(after)?;
            let key: String = serde_json::from_str(&rest[1..close + 3]).ok()?;
            segments.push(Segment::Key(key));
            rest = after[close + 1..].strip_prefix(']')?;
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let digits = &after[..end];
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            segments.push(Segment::Index(digits.parse().ok()?));
            rest = &after[end + 1..];
        } else {
            return None;
        }
    }
    Some(segments)
}

/// Byte offset of the unescaped `"` that ends a JSON string body.
fn closing_quote(body: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, b) in body.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return Some(i),
            _ => {}
        }
    }
    None
}

pub(crate) fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The value at `path`, if every step exists.
pub(crate) fn get<'a>(value: &'a Value, path: &[Segment]) -> Option<&'a Value> {
    path.iter().try_fold(value, |cur, seg| match seg {
        Segment::Key(k) => cur.as_object()?.get(k),
        Segment::Index(i) => cur.as_array()?.get(*i),
    })
}

/// Removes the map entry at `path`. A path ending in a list index is left alone: lists are
/// owned and replaced as a whole, never shortened element by element.
pub(crate) fn remove(value: &mut Value, path: &[Segment]) {
    let Some((Segment::Key(last), parent)) = path.split_last() else {
        return;
    };
    let mut cur = value;
    for seg in parent {
        let next = match seg {
            Segment::Key(k) => cur.as_object_mut().and_then(|m| m.get_mut(k)),
            Segment::Index(i) => cur.as_array_mut().and_then(|a| a.get_mut(*i)),
        };
        match next {
            Some(v) => cur = v,
            None => return,
        }
    }
    if let Some(map) = cur.as_object_mut() {
        map.remove(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn key(k: &str) -> Segment {
        Segment::Key(k.to_owned())
    }

    #[test]
    fn renders_identifiers_indices_and_quoted_keys() {
        let path = [
            key("spec"),
            key("template"),
            key("spec"),
            key("containers"),
            Segment::Index(0),
            key("image"),
        ];
        assert_eq!(render(&path), ".spec.template.spec.containers[0].image");
        let labels = [
            key("metadata"),
            key("labels"),
            key("app.kubernetes.io/name"),
        ];
        assert_eq!(
            render(&labels),
            r#".metadata.labels["app.kubernetes.io/name"]"#
        );
        assert_eq!(render(&[key("a\"b")]), r#"["a\"b"]"#);
        assert_eq!(render(&[key("1x")]), r#"["1x"]"#);
        assert_eq!(render(&[key("")]), r#"[""]"#);
        assert_eq!(render(&[]), "");
    }

    #[test]
    fn parse_rejects_garbage() {
        for bad in [
            "spec", ".", ".1a", "[x]", "[]", "[\"a]", "[\"a\"", ".a[0", "..a",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn get_and_remove() {
        let mut v = json!({"a": {"b": [ {"c": 1, "d": 2} ]}});
        let path = [key("a"), key("b"), Segment::Index(0), key("c")];
        assert_eq!(get(&v, &path), Some(&json!(1)));
        remove(&mut v, &path);
        assert_eq!(v, json!({"a": {"b": [ {"d": 2} ]}}));
        remove(&mut v, &[key("a"), key("b"), Segment::Index(0)]);
        assert_eq!(v, json!({"a": {"b": [ {"d": 2} ]}}), "list elements stay");
        remove(&mut v, &[key("missing"), key("x")]);
        assert_eq!(get(&v, &[key("a"), key("x")]), None);
    }

    fn segment() -> impl Strategy<Value = Segment> {
        prop_oneof![
            "[a-zA-Z_][a-zA-Z0-9_]{0,5}".prop_map(Segment::Key),
            ".{0,8}".prop_map(Segment::Key),
            (0usize..1000).prop_map(Segment::Index),
        ]
    }

    proptest! {
        #[test]
        fn parse_inverts_render(path in prop::collection::vec(segment(), 0..6)) {
            prop_assert_eq!(parse(&render(&path)), Some(path));
        }
    }
}
