# The same targets locally and in CI (.ci/run).
.PHONY: all fmt lint buf-lint test test-all bench run deploy-check

all: fmt lint buf-lint test

fmt:
	cargo fmt --all

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

buf-lint:
	buf lint

test:
	cargo test --workspace

test-all:
	cargo test --workspace -- --include-ignored

bench:
	cargo build --release -p recovery-service
	cargo bench -p recovery-e2e --bench startup
	cargo bench -p recovery-e2e --bench flows
	cargo bench -p recovery-e2e --bench begin_timing
	cargo bench -p recovery-e2e --bench abuse
	cargo bench -p recovery-e2e --bench mail
	cargo bench -p recovery-e2e --bench telemetry
	cargo bench -p recovery-e2e --bench events
	cargo bench -p recovery-storage --bench ops

run:
	cargo run --release -p recovery-service

deploy-check:
	bash deploy/check.sh
