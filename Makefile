# Entry points named in README.md. Every target works on a fresh clone.
CARGO ?= cargo

.PHONY: demo build release test lint crds bench fault chaos k8s-bins control-plane-test cluster-up cluster-down images smoke e2e \
	multinode-up multinode-down multinode-images e2e-multinode bench-backup bench-failover profile fuzz

## Run it: a 3-node store on 127.0.0.1 (client API of node i on port 7000+i), Ctrl-C stops it.
demo: build
	$(CARGO) run --quiet -p shardedstore-operator -- local --nodes 3

build:
	$(CARGO) build --workspace --bins

release:
	$(CARGO) build --release --workspace --bins

## Test it: unit, property, multi-process and (when the binaries are cached) real-apiserver tests.
test:
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Regenerate crds/ from the Rust types (a test fails when they are stale).
## A failed generation leaves both copies untouched; a failed copy into the chart fails the target.
crds:
	$(CARGO) run --quiet -p shardedstore-operator -- crd --kind store > crds/.shardedstore.io_shardedstores.yaml.tmp
	$(CARGO) run --quiet -p shardedstore-operator -- crd --kind backup > crds/.shardedstore.io_shardedstorebackups.yaml.tmp
	mv crds/.shardedstore.io_shardedstores.yaml.tmp crds/shardedstore.io_shardedstores.yaml
	mv crds/.shardedstore.io_shardedstorebackups.yaml.tmp crds/shardedstore.io_shardedstorebackups.yaml
	cp crds/shardedstore.io_shardedstores.yaml crds/shardedstore.io_shardedstorebackups.yaml charts/shardedstore-operator/crds/
	cmp crds/shardedstore.io_shardedstores.yaml charts/shardedstore-operator/crds/shardedstore.io_shardedstores.yaml
	cmp crds/shardedstore.io_shardedstorebackups.yaml charts/shardedstore-operator/crds/shardedstore.io_shardedstorebackups.yaml

## Benchmarks print figures; they never fail on timing.
bench: release
	bash hack/bench.sh

## Failover (20 x kill -9 of a primary under write load) and catch-up of a new node only
## (also part of `make bench`; docs/benchmarks.md).
bench-failover: release
	bash hack/bench.sh failover

## CPU profile of the write path at peak: perf + inferno flamegraph in target/profile/.
profile: release
	bash hack/profile.sh

## Backup and restore throughput next to the disk's bandwidth (docs/backup.md).
bench-backup: release
	bash hack/bench-backup.sh

## Fault injection over many seeds (SHARDEDSTORE_FAULT_SEEDS, default 20; SHARDEDSTORE_FAULT_SEED=<n> to start at / replay a seed).
fault: build
	$(CARGO) test -p shardedstore-tests --test fault_injection many_seeds -- --ignored --nocapture

## Chaos: CHAOS_SEEDS seeds (default 100) from CHAOS_FIRST_SEED (default 1), or as many as fit
## in CHAOS_DURATION (e.g. 30m); table in CHAOS_OUT (default target/chaos)/summary.md, failing
## seeds' histories in CHAOS_OUT/histories, every seed's report in CHAOS_OUT/runs. Partitions
## need root and nft, disk faults and power losses root and /dev/fuse (docs/reliability.md).
chaos: build
	$(CARGO) test -p shardedstore-tests --test chaos chaos -- --ignored --nocapture

## Fuzzing (docs/fuzzing.md): every fuzz target FUZZ_SECONDS (default 600) each, or only
## FUZZ_TARGET=<name>; FUZZ_JOBS targets at a time (default 1). Exits 1 when a target crashed.
FUZZ_SECONDS ?= 600
FUZZ_JOBS ?= 1
FUZZ_TARGET ?=
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) bash hack/fuzz.sh $(FUZZ_TARGET)

## A real Kubernetes built from pinned upstream sources (see docs/local-kubernetes.md).
k8s-bins:
	bash hack/k8s-bins.sh

# NODES=1 (default): the single-node cluster; NODES=N (2-9): one control plane and N workers
# in zones zone-a, zone-b, ... (hack/multinode-up.sh; also `make multinode-up`).
NODES ?= 1

cluster-up: k8s-bins
	@if [ "$(NODES)" = 1 ]; then bash hack/cluster-up.sh; else bash hack/multinode-up.sh $(NODES); fi

cluster-down:
	@if [ "$(NODES)" = 1 ]; then bash hack/cluster-down.sh; else bash hack/multinode-down.sh; fi

## The multi-node cluster (docs/local-kubernetes.md): 3 workers unless NODES says otherwise.
multinode-up: k8s-bins
	bash hack/multinode-up.sh $(if $(filter-out 1,$(NODES)),$(NODES),3)

multinode-down:
	bash hack/multinode-down.sh

# SHARDEDSTORE_IMAGES_PROFILE=debug: images from the debug binaries (no release build).
multinode-images: $(if $(filter debug,$(SHARDEDSTORE_IMAGES_PROFILE)),build,release)
	bash hack/multinode-images.sh

## The multi-node end-to-end suite (docs/e2e.md), on the cluster of `make multinode-up`.
## (`build`: the zone-local tests run the debug `shardedstore` CLI inside a worker.)
## E2E_ARGS: more test-harness arguments, e.g. `--nocapture` or one test's name.
E2E_ARGS ?=
e2e-multinode: multinode-images build
	SHARDEDSTORE_E2E_KUBECONFIG=$${SHARDEDSTORE_MN_DIR:-/tmp/shardedstore-multinode}/kubeconfig \
		$(CARGO) test -p shardedstore-tests --test e2e_multinode -- --ignored --test-threads=1 $(E2E_ARGS)

images: release
	bash hack/images.sh

smoke:
	bash hack/smoke-test.sh

e2e: images
	$(CARGO) test -p shardedstore-tests --test e2e -- --ignored --test-threads=1
