#!/usr/bin/env bash
# Prints the directory holding upstream Envoy Gateway's CRDs (gateway.envoyproxy.io: EnvoyProxy,
# the policies, Backend, ...) of the pinned release, taken from the github.com/envoyproxy/gateway
# Go module in the module cache. Nothing of it is committed here.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dir="$(cd "$HACK_DIR/testcluster" && go mod download -json "github.com/envoyproxy/gateway@$ENVOY_GATEWAY_VERSION" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
crds="$dir/charts/gateway-helm/charts/crds/crds/generated"
[ -d "$crds" ] || { log "Envoy Gateway CRDs not found at $crds"; exit 1; }
printf '%s\n' "$crds"
