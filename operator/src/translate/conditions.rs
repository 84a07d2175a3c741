//! Status condition vocabulary: the condition types and reasons this translator writes, and the
//! one constructor every status goes through.
//!
//! The translator takes no clock, so each condition carries the UNIX epoch as its
//! `lastTransitionTime`. That keeps translation a pure function (golden tests compare bytes)
//! and leaves the real time to the status writer, which must replace the placeholder — and
//! keep the previous time when a condition's status did not change, as Kubernetes conventions
//! require.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition types.
pub(super) mod kind {
    pub const ACCEPTED: &str = "Accepted";
    pub const PROGRAMMED: &str = "Programmed";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const CONFLICTED: &str = "Conflicted";
    pub const PARTIALLY_INVALID: &str = "PartiallyInvalid";
}

/// Condition reasons, spelled as Gateway API v1.5 defines them (plus the few Envoy Gateway
/// specific ones it reports, noted where used).
pub(super) mod reason {
    pub const ACCEPTED: &str = "Accepted";
    pub const PROGRAMMED: &str = "Programmed";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const INVALID: &str = "Invalid";
    pub const INVALID_PARAMETERS: &str = "InvalidParameters";
    pub const LISTENERS_NOT_VALID: &str = "ListenersNotValid";
    pub const NO_CONFLICTS: &str = "NoConflicts";
    pub const HOSTNAME_CONFLICT: &str = "HostnameConflict";
    pub const PROTOCOL_CONFLICT: &str = "ProtocolConflict";
    pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
    pub const INVALID_CERTIFICATE_REF: &str = "InvalidCertificateRef";
    pub const INVALID_ROUTE_KINDS: &str = "InvalidRouteKinds";
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
    /// Envoy Gateway's reason for an HTTPS listener asking for TLS passthrough.
    pub const UNSUPPORTED_TLS_MODE: &str = "UnsupportedTLSMode";
    pub const NOT_ALLOWED_BY_LISTENERS: &str = "NotAllowedByListeners";
    pub const NO_MATCHING_LISTENER_HOSTNAME: &str = "NoMatchingListenerHostname";
    pub const NO_MATCHING_PARENT: &str = "NoMatchingParent";
    pub const UNSUPPORTED_VALUE: &str = "UnsupportedValue";
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    pub const INVALID_KIND: &str = "InvalidKind";
    /// Envoy Gateway's reason for a Service backendRef without `port`.
    pub const PORT_NOT_SPECIFIED: &str = "PortNotSpecified";
    /// Envoy Gateway's reason for a backendRef port the Service does not expose.
    pub const PORT_NOT_FOUND: &str = "PortNotFound";
}

/// Why something is not (fully) valid: the reason and message of a negative condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    pub reason: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// The `lastTransitionTime` placeholder; see the module docs.
pub(super) fn placeholder_time() -> Time {
    Time(Timestamp::UNIX_EPOCH)
}

/// Builds one condition.
pub(super) fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
) -> Condition {
    Condition {
        last_transition_time: placeholder_time(),
        message: message.into(),
        observed_generation,
        reason: reason.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        type_: type_.to_owned(),
    }
}

/// A positive condition when `problem` is `None`, else the negative one it describes.
pub(super) fn verdict(
    type_: &str,
    problem: Option<&Problem>,
    ok_reason: &str,
    ok_message: &str,
    observed_generation: Option<i64>,
) -> Condition {
    match problem {
        None => condition(type_, true, ok_reason, ok_message, observed_generation),
        Some(p) => condition(type_, false, p.reason, &p.message, observed_generation),
    }
}
