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
cargo build -q -p cqrs-notifications -p cqrs-identity -p cqrs-directory -p cqrs-testkit --bins

# Development signing keys, made once per checkout (never used outside this machine).
if [ ! -f "$RUN_DIR/keys.env" ]; then
  "$BIN/cqrs-devtoken" keys > "$RUN_DIR/keys.env"
fi
# The directory's client secret for identity's IssueServiceToken, made once per checkout.
if [ ! -f "$RUN_DIR/clients.env" ]; then
  (umask 077 && echo "DIRECTORY_CLIENT_SECRET=$(head -c 32 /dev/urandom | base64 | tr -d '=+/\n')" > "$RUN_DIR/clients.env")
fi
set -a
# shellcheck disable=SC1091
source "$RUN_DIR/keys.env"
# shellcheck disable=SC1091
source "$RUN_DIR/clients.env"
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/cqrs_dev}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
CQRS_SMTP_URL=${CQRS_SMTP_URL:-smtp://127.0.0.1:2525}
CQRS_MAIL_FROM=${CQRS_MAIL_FROM:-CQRS <no-reply@cqrs.localhost>}
CQRS_PUBLIC_BASE_URL=${CQRS_PUBLIC_BASE_URL:-http://localhost:8080/}
CQRS_CORS_ALLOWED_ORIGINS=${CQRS_CORS_ALLOWED_ORIGINS:-http://localhost:8080}
NOTIFICATIONS_LISTEN=${NOTIFICATIONS_LISTEN:-127.0.0.1:50054}
NOTIFICATIONS_URL=${NOTIFICATIONS_URL:-http://$NOTIFICATIONS_LISTEN}
IDENTITY_LISTEN=${IDENTITY_LISTEN:-127.0.0.1:50051}
IDENTITY_URL=${IDENTITY_URL:-http://$IDENTITY_LISTEN}
DIRECTORY_LISTEN=${DIRECTORY_LISTEN:-127.0.0.1:50052}
DIRECTORY_CLIENT_ID=${DIRECTORY_CLIENT_ID:-directory}
# Identity knows each service client by the SHA-256 of its secret, never the secret.
CQRS_SERVICE_CLIENTS=${CQRS_SERVICE_CLIENTS:-$DIRECTORY_CLIENT_ID:$(printf %s "$DIRECTORY_CLIENT_SECRET" | sha256sum | cut -d' ' -f1)}
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

# Waits until a service answers health checks (its own readiness covers its stores).
wait_healthy() {
  local name=$1 addr=$2
  for _ in $(seq 1 50); do
    if "$BIN/cqrs-devtoken" health "$addr" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$(cat "$PID_DIR/$name.pid")" 2>/dev/null; then
      echo "$name failed to start:"; tail -n 20 "$LOG_DIR/$name.log"; exit 1
    fi
    sleep 0.2
  done
  echo "$name is not healthy yet (see $LOG_DIR/$name.log)"
}

start mailsink "$BIN/cqrs-mailsink"
start notifications "$BIN/cqrs-notifications"
wait_healthy notifications "$NOTIFICATIONS_LISTEN"
start identity "$BIN/cqrs-identity"
wait_healthy identity "$IDENTITY_LISTEN"
start directory "$BIN/cqrs-directory"
wait_healthy directory "$DIRECTORY_LISTEN"

cat <<INFO
CQRS suite running (logs: $LOG_DIR/, stop with 'make stop'):
  identity       grpc://$IDENTITY_LISTEN   health: $("$BIN/cqrs-devtoken" health "$IDENTITY_LISTEN")
  directory      grpc://$DIRECTORY_LISTEN   health: $("$BIN/cqrs-devtoken" health "$DIRECTORY_LISTEN")
  notifications  grpc://$NOTIFICATIONS_LISTEN   health: $("$BIN/cqrs-devtoken" health "$NOTIFICATIONS_LISTEN")
  mail sink      smtp://$MAILSINK_LISTEN   messages: $MAILSINK_DIR/ and $LOG_DIR/mailsink.log

A service token for trying internal RPCs (valid 15 minutes):
  $("$BIN/cqrs-devtoken" service cli)
e.g. buf curl --protocol grpc --http2-prior-knowledge \\
       -H "authorization: Bearer <token>" \\
       -d '{"idempotencyKey":"try-1","template":"EMAIL_TEMPLATE_PASSWORD_RESET","to":"you@nhs.net","params":{"first_name":"Ann","token":"abc"}}' \\
       http://$NOTIFICATIONS_LISTEN/cqrs.notifications.v1.NotificationService/EnqueueEmail
INFO
