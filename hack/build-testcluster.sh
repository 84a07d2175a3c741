#!/usr/bin/env bash
# Builds the test control plane (etcd embedded, kube-apiserver, kube-controller-manager from
# k8s.io/kubernetes) into a versioned cache directory and prints the binary's path. The build is
# skipped when a binary built from the same sources already exists.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

src="$HACK_DIR/testcluster"
stamp="$(cat "$src/go.mod" "$src/go.sum" "$src"/*.go | sha256sum | cut -c1-16)"
if [ -x "$TESTCLUSTER_BIN" ] && [ "$(cat "$TESTCLUSTER_BIN.stamp" 2>/dev/null)" = "$stamp" ]; then
  printf '%s\n' "$TESTCLUSTER_BIN"
  exit 0
fi
command -v go >/dev/null || { log "go is required to build the test control plane"; exit 1; }
log "building testcluster (k8s.io/kubernetes $KUBE_VERSION) into $K8S_BIN_DIR; a cold build takes several minutes"
mkdir -p "$K8S_BIN_DIR"
start=$(date +%s)
(cd "$src" && go build -trimpath -ldflags="-s -w" -o "$TESTCLUSTER_BIN.tmp" .)
mv "$TESTCLUSTER_BIN.tmp" "$TESTCLUSTER_BIN"
printf '%s\n' "$stamp" > "$TESTCLUSTER_BIN.stamp"
log "built testcluster in $(( $(date +%s) - start ))s"
printf '%s\n' "$TESTCLUSTER_BIN"
