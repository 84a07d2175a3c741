//! Ingress paths and `rewrite-target` to HTTPRoute path matches and URL rewrites, following
//! what ingress-nginx generates for each path type:
//! - `Exact` is `location = /p`: an Exact match.
//! - `Prefix` is an element-wise prefix: a PathPrefix match.
//! - `ImplementationSpecific` (and any path once `use-regex` or `rewrite-target` is on) is
//!   `location /p` or `location ~* ^/p`: a *string* prefix or a case-insensitive regex anchored
//!   only at the start. Literal paths become PathPrefix matches (exact when they end in `/`,
//!   otherwise only whole segments match); `L(/|$)(.*)` (the documented "strip a prefix" idiom)
//!   becomes PathPrefix `L` (partial: matched case-sensitively); other regexes become `(?i)` RegularExpression matches with `.*`
//!   appended, because Envoy matches a regex against the whole path.
//!
//! `rewrite-target` replaces the whole URI with its value, `$n` naming the path regex's groups:
//! the strip-prefix idiom becomes URLRewrite ReplacePrefixMatch (which the translator programs),
//! a target without groups ReplaceFullPath, and anything else an Envoy Gateway HTTPRouteFilter
//! with ReplaceRegexMatch (`$n` becomes `\n`).

use super::report::Status;

/// Why a path cannot be carried over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path type {0:?} is not Exact, Prefix or ImplementationSpecific")]
    UnknownType(String),
    #[error("path {0:?} does not start with /")]
    NotAbsolute(String),
    #[error("path {path:?} is not a valid RE2 regular expression: {message}")]
    Regex { path: String, message: String },
}

/// An HTTPRoute path match.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

impl PathMatch {
    /// Gateway API's name for the match type.
    pub fn type_name(&self) -> &'static str {
        match self {
            PathMatch::Exact(_) => "Exact",
            PathMatch::Prefix(_) => "PathPrefix",
            PathMatch::Regex(_) => "RegularExpression",
        }
    }

    pub fn value(&self) -> &str {
        match self {
            PathMatch::Exact(v) | PathMatch::Prefix(v) | PathMatch::Regex(v) => v,
        }
    }
}

/// What a rule does to the path before forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    None,
    /// URLRewrite ReplaceFullPath.
    Full(String),
    /// URLRewrite ReplacePrefixMatch.
    Prefix(String),
    /// Envoy Gateway HTTPRouteFilter `urlRewrite.path.replaceRegexMatch`.
    Regex {
        pattern: String,
        substitution: String,
    },
}

/// A mapped path, with how faithful the mapping is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedPath {
    pub matched: PathMatch,
    pub rewrite: Rewrite,
    pub status: Status,
    pub detail: String,
}

const REGEX_META: &[char] = &[
    '\\', '^', '$', '.', '|', '?', '*', '+', '(', ')', '[', ']', '{', '}',
];

/// Maps one Ingress path. `regex_mode` is true when ingress-nginx treats the host's paths as
/// regexes (`use-regex` or `rewrite-target` on any Ingress of the host).
///
/// # Errors
///
/// An unknown path type, a relative path, or an invalid regex.
pub fn map_path(
    path: &str,
    path_type: &str,
    regex_mode: bool,
    rewrite_target: Option<&str>,
) -> Result<MappedPath, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute(path.to_owned()));
    }
    let literal = !path.contains(REGEX_META);
    let plain_rewrite = |matched: PathMatch, status: Status, detail: String| {
        let (rewrite, note) = match rewrite_target {
            None => (Rewrite::None, String::new()),
            Some(t) if !t.contains('$') => (
                Rewrite::Full(t.to_owned()),
                format!("; rewritten to {t} (the whole path, as nginx does)"),
            ),
            Some(t) => (
                regex_rewrite(path, t),
                format!("; rewrite to {t} through an HTTPRouteFilter ReplaceRegexMatch"),
            ),
        };
        MappedPath {
            matched,
            rewrite,
            status,
            detail: detail + &note,
        }
    };
    match path_type {
        "Exact" => Ok(plain_rewrite(
            PathMatch::Exact(path.to_owned()),
            Status::Translated,
            format!("Exact {path}"),
        )),
        "Prefix" if !regex_mode => Ok(plain_rewrite(
            PathMatch::Prefix(path.to_owned()),
            Status::Translated,
            format!("PathPrefix {path}"),
        )),
        "Prefix" | "ImplementationSpecific" => {
            if let Some(prefix) = strip_prefix_idiom(path) {
                return Ok(strip_prefix(path, prefix, rewrite_target));
            }
            if literal {
                let (status, detail) = string_prefix(path);
                return Ok(plain_rewrite(
                    PathMatch::Prefix(path.to_owned()),
                    status,
                    detail,
                ));
            }
            let pattern = if path.contains('|') {
                format!("(?i)(?:{path}).*")
            } else {
                format!("(?i){path}.*")
            };
            regex::Regex::new(&pattern).map_err(|e| PathError::Regex {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            Ok(plain_rewrite(
                PathMatch::Regex(pattern.clone()),
                Status::Translated,
                format!(
                    "RegularExpression {pattern} (case-insensitive, anchored at the start like nginx)"
                ),
            ))
        }
        other => Err(PathError::UnknownType(other.to_owned())),
    }
}

/// `L(/|$)(.*)` with a literal `L`: ingress-nginx's documented way to strip a prefix.
fn strip_prefix_idiom(path: &str) -> Option<&str> {
    let prefix = path.strip_suffix("(/|$)(.*)")?;
    (!prefix.is_empty() && !prefix.contains(REGEX_META)).then_some(prefix)
}

fn strip_prefix(path: &str, prefix: &str, target: Option<&str>) -> MappedPath {
    let matched = PathMatch::Prefix(prefix.to_owned());
    let case = "matched case-sensitively (nginx's regex location is case-insensitive)";
    let (rewrite, status, detail) = match target {
        None => (
            Rewrite::None,
            Status::Partial,
            format!("PathPrefix {prefix}; {case}"),
        ),
        Some("/$2") => (
            Rewrite::Prefix("/".to_owned()),
            Status::Partial,
            format!("PathPrefix {prefix} with URLRewrite ReplacePrefixMatch /; {case}"),
        ),
        Some(t) if !t.contains('$') => (
            Rewrite::Full(t.to_owned()),
            Status::Partial,
            format!("PathPrefix {prefix} with URLRewrite ReplaceFullPath {t}; {case}"),
        ),
        Some(t) => match t.strip_suffix("/$2").filter(|p| !p.contains('$')) {
            Some(new) => (
                Rewrite::Prefix(new.to_owned()),
                Status::Partial,
                format!(
                    "PathPrefix {prefix} with URLRewrite ReplacePrefixMatch {new}; a request for {prefix} itself goes to {new}, not {new}/ as with nginx; {case}"
                ),
            ),
            None => {
                return MappedPath {
                    matched: PathMatch::Prefix(prefix.to_owned()),
                    rewrite: regex_rewrite(path, t),
                    status: Status::Partial,
                    detail: format!(
                        "PathPrefix {prefix}; rewrite to {t} through an HTTPRouteFilter ReplaceRegexMatch; {case}"
                    ),
                };
            }
        },
    };
    MappedPath {
        matched,
        rewrite,
        status,
        detail,
    }
}

/// A literal path nginx matches as a string prefix.
fn string_prefix(path: &str) -> (Status, String) {
    if path.ends_with('/') {
        (Status::Translated, format!("PathPrefix {path}"))
    } else {
        (
            Status::Partial,
            format!(
                "PathPrefix {path}: matches whole segments only, so {path}x no longer matches as it did with nginx's string prefix"
            ),
        )
    }
}

/// nginx's `rewrite (?i)PATH TARGET` replaces the whole URI; the pattern covers all of it.
fn regex_rewrite(path: &str, target: &str) -> Rewrite {
    let mut substitution = String::new();
    let mut chars = target.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            substitution.push('\\');
        } else {
            substitution.push(c);
        }
    }
    Rewrite::Regex {
        pattern: format!("(?i)^(?:{path}).*$"),
        substitution,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(path: &str, ty: &str, regex: bool, target: Option<&str>) -> MappedPath {
        map_path(path, ty, regex, target).expect("maps")
    }

    #[test]
    fn exact_and_prefix_map_to_their_gateway_api_types() {
        let m = mapped("/a", "Exact", false, None);
        assert_eq!(m.matched, PathMatch::Exact("/a".into()));
        assert_eq!(m.status, Status::Translated);
        let m = mapped("/a", "Prefix", false, None);
        assert_eq!(m.matched, PathMatch::Prefix("/a".into()));
        assert_eq!(m.rewrite, Rewrite::None);
    }

    #[test]
    fn implementation_specific_is_a_string_prefix() {
        assert_eq!(
            mapped("/", "ImplementationSpecific", false, None).status,
            Status::Translated
        );
        assert_eq!(
            mapped("/a/", "ImplementationSpecific", false, None).status,
            Status::Translated
        );
        let m = mapped("/a", "ImplementationSpecific", false, None);
        assert_eq!(m.matched, PathMatch::Prefix("/a".into()));
        assert_eq!(m.status, Status::Partial);
    }

    #[test]
    fn strip_prefix_idiom_becomes_replace_prefix_match() {
        let m = mapped("/api(/|$)(.*)", "ImplementationSpecific", true, Some("/$2"));
        assert_eq!(m.matched, PathMatch::Prefix("/api".into()));
        assert_eq!(m.rewrite, Rewrite::Prefix("/".into()));
        // Only the case of the letters differs: Gateway API prefixes are case-sensitive.
        assert_eq!(m.status, Status::Partial);
        assert!(m.detail.contains("case-sensitively"), "{}", m.detail);
        let m = mapped("/api(/|$)(.*)", "Prefix", true, Some("/v2/$2"));
        assert_eq!(m.rewrite, Rewrite::Prefix("/v2".into()));
        assert_eq!(m.status, Status::Partial);
    }

    #[test]
    fn other_regexes_keep_nginx_semantics() {
        let m = mapped(
            "/users/([0-9]+)/posts",
            "ImplementationSpecific",
            true,
            Some("/posts?user=$1"),
        );
        assert_eq!(
            m.matched,
            PathMatch::Regex("(?i)/users/([0-9]+)/posts.*".into())
        );
        assert_eq!(
            m.rewrite,
            Rewrite::Regex {
                pattern: "(?i)^(?:/users/([0-9]+)/posts).*$".into(),
                substitution: "/posts?user=\\1".into()
            }
        );
        let m = mapped("/a|/b", "Prefix", true, None);
        assert_eq!(m.matched, PathMatch::Regex("(?i)(?:/a|/b).*".into()));
        let m = mapped("/old", "Prefix", true, Some("/"));
        assert_eq!(m.rewrite, Rewrite::Full("/".into()));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(
            map_path("a", "Prefix", false, None),
            Err(PathError::NotAbsolute("a".into()))
        );
        assert!(matches!(
            map_path("/(", "Prefix", true, None),
            Err(PathError::Regex { .. })
        ));
        assert!(matches!(
            map_path("/", "Fuzzy", false, None),
            Err(PathError::UnknownType(_))
        ));
    }
}
