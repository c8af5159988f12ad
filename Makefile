# Flotilla — the README's commands call these targets.
#
# The build cache lives outside the clone so a fresh checkout (CI, a second
# worktree) reuses the ~12 minute RocksDB C++ build. A cold cache is slower,
# never wrong. Override with CARGO_TARGET_DIR=... make test.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/flotilla-target
CARGO ?= cargo
# Simulation seeds per test binary run by `make test` (see README).
export SIM_SEEDS ?=

.PHONY: deps run test lint fmt bench bench-wal clean

# Installs what the build and tests need when it is missing: clang and
# libclang (bindgen and the C++ build of RocksDB), redis-tools (the RESP
# integration tests drive redis-cli / redis-benchmark).
deps:
	@missing=""; \
	command -v clang >/dev/null 2>&1 || missing="$$missing clang"; \
	ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || missing="$$missing libclang-dev"; \
	command -v c++ >/dev/null 2>&1 || missing="$$missing g++"; \
	command -v make >/dev/null 2>&1 || missing="$$missing make"; \
	command -v redis-cli >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	if [ -n "$$missing" ]; then \
		echo "make deps: installing$$missing"; \
		SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@command -v cargo >/dev/null 2>&1 || { echo "make deps: cargo not found; install Rust (https://rustup.rs) first"; exit 1; }

run: deps
	$(CARGO) run --release -p flotilla --bin flotilla -- demo

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

# clippy runs in release mode too so it shares the RocksDB build with the tests.
test: lint
	$(CARGO) test --release --workspace

fmt:
	$(CARGO) fmt --all

# The standard suite: load workloads (flotilla-bench) and the transport
# micro-benchmark, results in $(BENCH_OUT) (JSON, SVG, tables, results.md),
# then the WAL against raft-engine. Built with the same command as the
# tests so no second RocksDB variant is compiled (`cargo bench` would).
BENCH_OUT ?= docs/bench/results
bench: deps
	$(CARGO) build --release --workspace
	benches/suite.sh $(CARGO_TARGET_DIR)/release/flotilla-bench \
		$(CARGO_TARGET_DIR)/release/bench-transport $(BENCH_OUT)
	$(MAKE) --no-print-directory bench-wal > $(BENCH_OUT)/wal-vs-raft-engine.txt 2>&1; \
		status=$$?; cat $(BENCH_OUT)/wal-vs-raft-engine.txt; exit $$status

# The WAL against raft-engine, in its own workspace (no RocksDB rebuild).
bench-wal:
	cd benches/wal-vs-raft-engine && CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)/wal-vs-raft-engine \
		$(CARGO) run --release --bin wal_bench

clean:
	$(CARGO) clean
