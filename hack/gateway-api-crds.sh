#!/usr/bin/env bash
# Prints the directory holding the Gateway API CRDs (experimental channel, a superset of standard)
# of the pinned release, taken from the sigs.k8s.io/gateway-api Go module in the module cache.
# Nothing of it is committed here.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dir="$(cd "$HACK_DIR/testcluster" && go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
crds="$dir/config/crd/experimental"
[ -d "$crds" ] || { log "Gateway API CRDs not found at $crds"; exit 1; }
printf '%s\n' "$crds"
