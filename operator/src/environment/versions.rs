//! The operand versions this operator can run (pure). The bundle lists their images as
//! `relatedImages`; the upgrade pre-flight ([`super::upgrade::preflight`]) refuses any other
//! `spec.version` before anything is changed.

use eg_crds::envoy_gateway::DEFAULT_VERSION;

/// Every operand version this build can run, oldest first. The operand is the same image as
/// the operator, so a build runs its own version; older versions are kept here while they are
/// supported so environments can roll back to them.
pub const RUNNABLE_VERSIONS: &[&str] = &[DEFAULT_VERSION];

/// `spec.version` without the optional leading `v`.
pub fn normalize(version: &str) -> &str {
    version.trim_start_matches('v')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_own_version_is_runnable_with_or_without_v() {
        assert!(RUNNABLE_VERSIONS.contains(&normalize(&format!("v{DEFAULT_VERSION}"))));
        assert_eq!(normalize("0.1.0"), "0.1.0");
    }
}
