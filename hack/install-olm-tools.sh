#!/usr/bin/env bash
# Builds the OLM validators into versioned cache directories and prints a directory holding both:
# - `opm` (github.com/operator-framework/operator-registry, pinned in lib.sh), for
#   `opm validate olm/catalog`. Its module source comes from the module cache (`go mod download`)
#   and is built inside its own module, so its go.mod is honoured.
# - `bundle-validate` (hack/bundle-validate), the checks of `operator-sdk bundle validate
#   --select-optional suite=operatorframework` built from the same libraries
#   (github.com/operator-framework/api, operator-registry): the operator-sdk module itself is
#   not served by the module proxy this project can reach.
# `containers_image_openpgp` avoids the cgo gpgme dependency. Idempotent: a tool already built
# from the same version or sources is not rebuilt.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
command -v go >/dev/null || { log "go is required to build the OLM validators"; exit 1; }

build() { # name dir package stamp: builds package inside dir into $EG_CACHE/name-stamp/bin/name
  local name="$1" src="$2" package="$3" stamp="$4"
  local out="$EG_CACHE/$name-$stamp"
  if [ ! -x "$out/bin/$name" ]; then
    log "building $name ($stamp) into $out; a cold build takes a few minutes"
    local start
    start=$(date +%s)
    rm -rf "$out/bin.tmp" && mkdir -p "$out/bin.tmp"
    (cd "$src" && go build -trimpath -ldflags="-s -w" -tags containers_image_openpgp \
      -o "$out/bin.tmp/$name" "./$package")
    rm -rf "$out/bin" && mv "$out/bin.tmp" "$out/bin"
    log "built $name in $(( $(date +%s) - start ))s"
  fi
  printf '%s\n' "$out/bin/$name"
}

registry="$(cd "$HACK_DIR/testcluster" && go mod download -json \
  "github.com/operator-framework/operator-registry@$OPM_VERSION" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -d "$registry" ] || { log "operator-registry $OPM_VERSION not found in the module cache"; exit 1; }
opm="$(build opm "$registry" cmd/opm "$OPM_VERSION")"

validator_src="$HACK_DIR/bundle-validate"
validator_stamp="$(cat "$validator_src/go.mod" "$validator_src/go.sum" "$validator_src"/*.go | sha256sum | cut -c1-16)"
validator="$(build bundle-validate "$validator_src" . "$validator_stamp")"

tools="$EG_CACHE/olm-tools-$OPM_VERSION-$validator_stamp"
mkdir -p "$tools"
ln -sf "$opm" "$tools/opm"
ln -sf "$validator" "$tools/bundle-validate"
printf '%s\n' "$tools"
