#!/usr/bin/env bash
# Makes sure the local Postgres (127.0.0.1:5432, user postgres, trust auth) and Redis
# (127.0.0.1:6379) that the suite and its tests use are running: starts them if they are
# installed, installs them with apt-get if not. Also installs what the gateway's browser
# tests drive: Debian's Chromium and ChromeDriver, and axe-core (from the npm registry, into
# .tools/axe). Safe to run any number of times.
set -euo pipefail

log() { printf 'dev-services: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  if [ -z "${APT_UPDATED:-}" ]; then
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

ensure_postgres() {
  if postgres_up; then return; fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql postgresql-client
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  # Local development and tests connect as postgres over loopback without a password.
  if ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    log "allowing trust auth on loopback in $hba"
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || as_root pg_ctlcluster "$version" main start
  for _ in $(seq 1 30); do postgres_up && return; sleep 1; done
  log "PostgreSQL did not come up on 127.0.0.1:5432"; exit 1
}

ensure_redis() {
  if redis_up; then return; fi
  if ! command -v redis-server >/dev/null 2>&1; then
    log "installing Redis"
    apt_install redis-server
  fi
  log "starting Redis"
  mkdir -p /tmp/cqrs-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/cqrs-redis --logfile /tmp/cqrs-redis/redis.log
  for _ in $(seq 1 30); do redis_up && return; sleep 1; done
  log "Redis did not come up on 127.0.0.1:6379"; exit 1
}

ensure_browser() {
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    log "installing Chromium and ChromeDriver (browser tests)"
    apt_install chromium chromium-driver
  fi
}

# axe-core checks each page of the browser tests for accessibility problems, offline.
AXE_VERSION=4.10.3
ensure_axe() {
  local dir=.tools/axe
  if [ -f "$dir/node_modules/axe-core/axe.min.js" ] \
    && grep -q "\"version\": \"$AXE_VERSION\"" "$dir/node_modules/axe-core/package.json"; then
    return
  fi
  if ! command -v npm >/dev/null 2>&1; then
    log "installing npm (axe-core for the browser tests)"
    apt_install npm
  fi
  log "installing axe-core $AXE_VERSION into $dir"
  mkdir -p "$dir"
  npm install --silent --no-audit --no-fund --prefix "$dir" "axe-core@$AXE_VERSION" >/dev/null
}

cd "$(dirname "$0")/.."
command -v pg_isready >/dev/null 2>&1 || apt_install postgresql-client
command -v redis-cli >/dev/null 2>&1 || apt_install redis-tools
ensure_postgres
ensure_redis
ensure_browser
ensure_axe
log "Postgres, Redis, Chromium and axe-core are ready"
