#!/usr/bin/env bash
# `make run` / `make stop`: the suite on this machine against local Postgres and Redis,
# with a local mail sink. Processes run in the background; logs and state live in .run/.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR=.run
LOG_DIR=$RUN_DIR/logs
PID_DIR=$RUN_DIR/pids
BIN=target/debug

stop() {
  for pidfile in "$PID_DIR"/*.pid; do
    [ -e "$pidfile" ] || continue
    local pid name
    pid=$(cat "$pidfile"); name=$(basename "$pidfile" .pid)
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" && echo "stopped $name (pid $pid)"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$pidfile"
  done
}

if [ "${1:-}" = "stop" ]; then stop; exit 0; fi

stop
mkdir -p "$LOG_DIR" "$PID_DIR" "$RUN_DIR/mail"
cargo build -q -p cqrs-notifications -p cqrs-testkit --bins

# Development signing keys, made once per checkout (never used outside this machine).
if [ ! -f "$RUN_DIR/keys.env" ]; then
  "$BIN/cqrs-devtoken" keys > "$RUN_DIR/keys.env"
fi
set -a
# shellcheck disable=SC1091
source "$RUN_DIR/keys.env"
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/cqrs_dev}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
CQRS_SMTP_URL=${CQRS_SMTP_URL:-smtp://127.0.0.1:2525}
CQRS_MAIL_FROM=${CQRS_MAIL_FROM:-CQRS <no-reply@cqrs.localhost>}
CQRS_PUBLIC_BASE_URL=${CQRS_PUBLIC_BASE_URL:-http://localhost:8080/}
CQRS_CORS_ALLOWED_ORIGINS=${CQRS_CORS_ALLOWED_ORIGINS:-http://localhost:8080}
NOTIFICATIONS_LISTEN=${NOTIFICATIONS_LISTEN:-127.0.0.1:50054}
MAILSINK_LISTEN=${MAILSINK_LISTEN:-127.0.0.1:2525}
MAILSINK_DIR=${MAILSINK_DIR:-$RUN_DIR/mail}
set +a

psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'cqrs_dev'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE cqrs_dev"

start() {
  local name=$1; shift
  "$@" >>"$LOG_DIR/$name.log" 2>&1 &
  echo $! > "$PID_DIR/$name.pid"
}

start mailsink "$BIN/cqrs-mailsink"
start notifications "$BIN/cqrs-notifications"

# Wait for the service to answer health checks (its own readiness covers Postgres).
for _ in $(seq 1 50); do
  if "$BIN/cqrs-devtoken" health "$NOTIFICATIONS_LISTEN" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$(cat "$PID_DIR/notifications.pid")" 2>/dev/null; then
    echo "notifications failed to start:"; tail -n 20 "$LOG_DIR/notifications.log"; exit 1
  fi
  sleep 0.2
done

cat <<INFO
CQRS suite running (logs: $LOG_DIR/, stop with 'make stop'):
  notifications  grpc://$NOTIFICATIONS_LISTEN   health: $("$BIN/cqrs-devtoken" health "$NOTIFICATIONS_LISTEN")
  mail sink      smtp://$MAILSINK_LISTEN   messages: $MAILSINK_DIR/ and $LOG_DIR/mailsink.log

A service token for trying internal RPCs (valid 15 minutes):
  $("$BIN/cqrs-devtoken" service cli)
e.g. buf curl --protocol grpc --http2-prior-knowledge \\
       -H "authorization: Bearer <token>" \\
       -d '{"idempotencyKey":"try-1","template":"EMAIL_TEMPLATE_PASSWORD_RESET","to":"you@nhs.net","params":{"first_name":"Ann","token":"abc"}}' \\
       http://$NOTIFICATIONS_LISTEN/cqrs.notifications.v1.NotificationService/EnqueueEmail
INFO
