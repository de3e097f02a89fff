#!/usr/bin/env bash
# `make lint`: the pure rules stay pure. `crates/rules` and every service's `domain` module may
# use only the standard library's non-I/O parts, `cqrs_rules` and plain data crates; a path
# into transport, storage, the async runtime or the service kit fails the check, naming the
# file and line. `--self-test` proves the check fails on such an import.
set -euo pipefail
cd "$(dirname "$0")/.."

# Crates (and std modules) that do I/O or carry transport/storage types.
forbidden='\b(tonic|tonic_types|tonic_health|prost|prost_types|sqlx|redis|tokio|tokio_stream|lettre|tower|tower_http|hyper|http|tracing|futures|cqrs_runtime|cqrs_proto|cqrs_auth|cqrs_outbox|cqrs_testkit|cqrs_peers|cqrs_edge|cqrs_cache)::|\bstd::(fs|net|process|io|thread|env)\b'
# Reading the system clock: time is passed in. The clock module (`cqrs_rules::clock`) is the one
# place allowed to, as in clippy.toml; it is exempt from this pattern only.
clock='\bSystemTime::now\b|\bUtc::now\b'
clock_module='crates/rules/src/clock.rs'

check() {
  local found
  # Comment lines are skipped: documentation may name what the code must not use.
  found=$({
    grep -rnE --include='*.rs' "$forbidden" "$@" || true
    grep -rnE --include='*.rs' "$clock" "$@" | awk -F: -v exempt="$clock_module" '$1 != exempt' || true
  } | grep -vE '^[^:]+:[0-9]+:\s*//' || true)
  if [ -n "$found" ]; then
    echo "domain check: pure rules must not use transport, storage, I/O or the clock:" >&2
    echo "$found" >&2
    return 1
  fi
}

if [ "${1:-}" = "--self-test" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/domain"
  printf '//! Says tonic:: in a comment, which is fine.\npub fn ok() {}\n' >"$tmp/domain/fine.rs"
  check "$tmp/domain" || { echo "domain check self-test: a clean module was refused" >&2; exit 1; }
  printf 'use tonic::Status;\n' >"$tmp/domain/bad.rs"
  if check "$tmp/domain" 2>/dev/null; then
    echo "domain check self-test: an import of tonic was not caught" >&2
    exit 1
  fi
  rm "$tmp/domain/bad.rs"
  printf 'pub fn now() -> chrono::DateTime<chrono::Utc> { chrono::Utc::now() }\n' >"$tmp/domain/clock.rs"
  if check "$tmp/domain" 2>/dev/null; then
    echo "domain check self-test: a read of the system clock was not caught" >&2
    exit 1
  fi
  echo "domain check self-test: ok"
  exit 0
fi

dirs=(crates/rules/src)
for d in services/*/src/domain; do dirs+=("$d"); done
# The rules crate's manifest too: a forbidden dependency there would be usable everywhere.
if grep -nE '^(tonic|tonic-types|prost|sqlx|redis|tokio|lettre|tower|hyper|http|tracing|futures|cqrs-(runtime|proto|auth|outbox|testkit|edge|peers))\b' crates/rules/Cargo.toml; then
  echo "domain check: crates/rules/Cargo.toml depends on a crate that does I/O" >&2
  exit 1
fi
check "${dirs[@]}"
echo "domain check: ${#dirs[@]} rule modules are free of transport, storage and I/O"
