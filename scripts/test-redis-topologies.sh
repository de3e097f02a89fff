#!/usr/bin/env bash
# Identity's lock-out, session and sign-in tests once more on each distributed Redis
# deployment: a three-master Redis Cluster with a replica each, and a master and replica under
# three Sentinels, both started here on loopback (scripts/redis-topologies.sh) and stopped
# afterwards. (The failover tests start deployments of their own in the main run.)
set -euo pipefail
cd "$(dirname "$0")/.."

cluster_ports=(17301 17302 17303 17304 17305 17306)
sentinel_ports=(17311 17312 17321 17322 17323)
for port in "${cluster_ports[@]}" "${sentinel_ports[@]}"; do
  for p in "$port" $((port + 10000)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "test-redis-topologies: port $p is taken (a run left behind? redis-cli -p $p shutdown nosave)" >&2
      exit 1
    fi
  done
done

dir=$(mktemp -d)
stop() {
  bash scripts/redis-topologies.sh stop "$dir/cluster" || true
  bash scripts/redis-topologies.sh stop "$dir/sentinel" || true
  rm -rf "$dir"
}
trap stop EXIT
cluster=$(bash scripts/redis-topologies.sh cluster "$dir/cluster" "${cluster_ports[@]}")
sentinel=$(bash scripts/redis-topologies.sh sentinel "$dir/sentinel" "${sentinel_ports[@]}")

for url in "$cluster" "$sentinel"; do
  echo "== identity's lock-out, session and sign-in tests on $url"
  if cargo nextest --version >/dev/null 2>&1; then
    # --workspace, as the main run: the same feature set, so nothing is built again.
    TEST_REDIS_URL=$url cargo nextest run --workspace --no-fail-fast \
      -E 'package(cqrs-identity) & binary(identity) & test(/^(redis_lockout|redis_sessions|signin)::/)'
  else
    TEST_REDIS_URL=$url cargo test -p cqrs-identity --test identity -- \
      redis_lockout:: redis_sessions:: signin::
  fi
done
