#!/usr/bin/env bash
# make soak: the suite as real release processes (scripts/run.sh) on a Postgres, a Redis (with
# its append-only file) and a mail sink of their own, on loopback ports apart from `make run`'s;
# then cqrs-soak drives a mixed workload for SOAK_SECS (default 600) while it stops and starts
# Redis, Postgres and the SMTP server once each, checks that nothing acknowledged was lost and
# no mail went twice, floods sign-in with 500 clients, and prints the tables. Everything it
# started is stopped and removed at the end. Not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

SOAK_DIR=${SOAK_DIR:-$PWD/.soak}
PG_PORT=${SOAK_PG_PORT:-55432}
REDIS_PORT=${SOAK_REDIS_PORT:-56379}

pg() { # Debian's Postgres programs, as the postgres user when we are root (initdb refuses root)
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1)
  [ -n "$bin" ] || { echo "soak: $1 not found under /usr/lib/postgresql" >&2; exit 1; }
  shift
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$bin" "$@"; else "$bin" "$@"; fi
}

cleanup() {
  CQRS_RUN_DIR=$SOAK_DIR/run bash scripts/run.sh stop >/dev/null 2>&1 || true
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  pg pg_ctl -D "$SOAK_DIR/pg" stop -m immediate >/dev/null 2>&1 || true
  rm -rf "$SOAK_DIR"
}
trap cleanup EXIT
cleanup
mkdir -p "$SOAK_DIR/redis"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$SOAK_DIR"

echo "soak: building release binaries (first time: several minutes)"
cargo build -q --release -p cqrs-notifications -p cqrs-identity -p cqrs-directory -p cqrs-access \
  -p cqrs-gateway -p cqrs-testkit --bins

pg initdb --auth=trust -U postgres -D "$SOAK_DIR/pg" >/dev/null
PG_START="pg_ctl -D $SOAK_DIR/pg -l $SOAK_DIR/pg.log -w -o '-p $PG_PORT -c listen_addresses=127.0.0.1 -k $SOAK_DIR' start"
eval "pg $PG_START" >/dev/null
REDIS_START="redis-server --port $REDIS_PORT --bind 127.0.0.1 --daemonize yes --dir $SOAK_DIR/redis \
  --appendonly yes --appendfsync everysec --save '' --pidfile $SOAK_DIR/redis.pid --logfile $SOAK_DIR/redis.log"
eval "$REDIS_START"
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done

set -a
CQRS_RUN_DIR=$SOAK_DIR/run
CQRS_RUN_PROFILE=release
CQRS_RUN_DATABASE=cqrs_soak
PGPORT=$PG_PORT
DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/cqrs_soak
REDIS_URL=redis://127.0.0.1:$REDIS_PORT
NOTIFICATIONS_LISTEN=127.0.0.1:56054
IDENTITY_LISTEN=127.0.0.1:56051
DIRECTORY_LISTEN=127.0.0.1:56052
ACCESS_LISTEN=127.0.0.1:56053
GATEWAY_LISTEN=127.0.0.1:58080
IDENTITY_ADMIN_LISTEN=off
DIRECTORY_ADMIN_LISTEN=off
ACCESS_ADMIN_LISTEN=off
NOTIFICATIONS_ADMIN_LISTEN=off
MAILSINK_LISTEN=127.0.0.1:52525
CQRS_SMTP_URL=smtp://127.0.0.1:52525
MAILSINK_DIR=$SOAK_DIR/run/mail
# Every client is on loopback: the per-client budget would measure itself.
CQRS_RATE_LIMIT_PER_CLIENT=off
# Mail held back by the SMTP outage is retried within half a minute of its end.
NOTIFICATIONS_RETRY_MAX_SECS=30
set +a
bash scripts/run.sh >"$SOAK_DIR/run.log" 2>&1 || { cat "$SOAK_DIR/run.log"; exit 1; }
set -a
# shellcheck disable=SC1091
source "$SOAK_DIR/run/keys.env"
IDENTITY_URL=http://$IDENTITY_LISTEN
DIRECTORY_URL=http://$DIRECTORY_LISTEN
ACCESS_URL=http://$ACCESS_LISTEN
NOTIFICATIONS_URL=http://$NOTIFICATIONS_LISTEN
SOAK_PID_DIR=$SOAK_DIR/run/pids
SOAK_STOP_REDIS="redis-cli -p $REDIS_PORT shutdown"
SOAK_START_REDIS=$REDIS_START
SOAK_STOP_POSTGRES="$(declare -f pg); pg pg_ctl -D $SOAK_DIR/pg -m fast -w stop"
SOAK_START_POSTGRES="$(declare -f pg); pg $PG_START"
SOAK_STOP_SMTP="kill \$(cat $SOAK_DIR/run/pids/mailsink.pid)"
SOAK_START_SMTP="target/release/cqrs-mailsink >>$SOAK_DIR/run/logs/mailsink.log 2>&1 & echo \$! >$SOAK_DIR/run/pids/mailsink.pid"
set +a
echo "soak: suite running (release); the workload starts"
target/release/cqrs-soak
