#!/usr/bin/env bash
# Builds the official Gateway API conformance suite (sigs.k8s.io/gateway-api/conformance, the
# release of the installed CRDs) as a test binary, and its echo server (echo-basic), which the
# process kubelet runs for the suite's echo-basic image. Cached by source hash; prints the
# directory holding `conformance.test` and `echo-basic`.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

src="$HACK_DIR/conformance"
out="$EG_CACHE/conformance-$GATEWAY_API_VERSION"
stamp="$(cat "$src/go.mod" "$src/go.sum" "$src"/*.go | sha256sum | cut -c1-16)"
if [ -x "$out/conformance.test" ] && [ -x "$out/echo-basic" ] \
  && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
  printf '%s\n' "$out"
  exit 0
fi
command -v go >/dev/null || { log "go is required to build the conformance suite"; exit 1; }
log "building the Gateway API $GATEWAY_API_VERSION conformance suite and echo-basic into $out"
mkdir -p "$out"
(cd "$src" && go test -c -trimpath -o "$out/conformance.test.tmp" . \
  && go build -trimpath -o "$out/echo-basic.tmp" sigs.k8s.io/gateway-api/conformance/echo-basic)
mv "$out/conformance.test.tmp" "$out/conformance.test"
mv "$out/echo-basic.tmp" "$out/echo-basic"
printf '%s\n' "$stamp" > "$out/stamp"
printf '%s\n' "$out"
