# The same targets locally and in CI (.ci/run).
.PHONY: all fmt lint buf-lint test bench run

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

bench:
	cargo build --release -p recovery-service
	cargo bench -p recovery-e2e --bench startup

run:
	cargo run --release -p recovery-service
