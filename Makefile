# The project's commands. `make run` and `make test` are the two a newcomer needs.
.PHONY: run test bench build lint fmt clean

# The proxy (release build); starts a private redis-server unless REDIS_URL or
# REDIS_HOST is set. Flags: make run ARGS="--allow-writes --cache-ttl 5s"
run:
	./scripts/run.sh $(ARGS)

# Installs what the tests need when missing (redis-server, redis-tools,
# haproxy, prometheus for promtool, chromium), then every test, including
# the system tests against real redis-servers the harness starts.
test:
	./scripts/ensure-test-deps.sh
	cargo test

build:
	cargo build --release

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

fmt:
	cargo fmt --all

clean:
	cargo clean

# One side-by-side run (proxy, Redis direct, twemproxy, webdis, the seed's
# Flask design) written to bench/results/latest.md, then the criterion
# micro-benchmarks. BENCH_QUICK=1 make bench: a short run (under 2 minutes).
bench:
	./bench/run.sh
	cargo bench --bench cache --bench resp --bench http
