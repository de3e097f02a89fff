#!/usr/bin/env bash
# The suite on one machine, against local Postgres and Redis, with a local mail sink.
#   scripts/run.sh          (make run)    build, start everything, bootstrap the service desk;
#                                         the web gateway serves the pages on GATEWAY_LISTEN
#   scripts/run.sh demo     (make demo)   load a small data set into the running suite
#   scripts/run.sh logs     (make logs)   follow every service's log
#   scripts/run.sh stop     (make stop)   stop what `make run` started
#   scripts/run.sh clean    (make clean)  stop, then drop the dev database, Redis keys and .run/
# Processes run in the background; logs (plain text) and state live in .run/.
set -euo pipefail
cd "$(dirname "$0")/.."

# CQRS_RUN_DIR and CQRS_RUN_PROFILE=release let scripts/soak.sh run a second, release suite
# beside a `make run` one.
RUN_DIR=${CQRS_RUN_DIR:-.run}
LOG_DIR=$RUN_DIR/logs
PID_DIR=$RUN_DIR/pids
PROFILE=${CQRS_RUN_PROFILE:-debug}
BIN=target/$PROFILE
DEV_DB=${CQRS_RUN_DATABASE:-cqrs_dev}
REDIS_NS=cqrs-dev:
# The gRPC services, in start order; the web gateway (cqrs-gateway) starts after them.
SERVICES=(notifications identity directory access)

stop() {
  # The gateway first: no page is served by a suite that is half stopped.
  for pidfile in "$PID_DIR/gateway.pid" "$PID_DIR"/*.pid; do
    [ -e "$pidfile" ] || continue
    local pid name
    pid=$(cat "$pidfile"); name=$(basename "$pidfile" .pid)
    # Only signal the process if it is still ours: a pid may have been reused since.
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "cqrs-$name"; then
      kill -TERM "$pid" && echo "stopped $name (pid $pid)"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$pidfile"
  done
}

clean() {
  stop
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DEV_DB" && echo "dropped database $DEV_DB"
  if command -v redis-cli >/dev/null; then
    redis-cli -h 127.0.0.1 --scan --pattern "${REDIS_NS}*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null
    echo "deleted Redis keys ${REDIS_NS}*"
  fi
  rm -rf "$RUN_DIR"
}

# The environment every process of the local suite shares.
load_env() {
  # Development signing keys, made once per checkout (never used outside this machine).
  if [ ! -f "$RUN_DIR/keys.env" ]; then
    "$BIN/cqrs-devtoken" keys > "$RUN_DIR/keys.env"
  fi
  # Each service's audit checkpoint key, made once (kept apart from the token keys).
  if [ ! -f "$RUN_DIR/audit-keys.env" ]; then
    (umask 077 && "$BIN/cqrs-devtoken" audit-keys > "$RUN_DIR/audit-keys.env")
  fi
  # Client secrets of the services that ask identity for service tokens, made once.
  if [ ! -f "$RUN_DIR/clients.env" ]; then
    (umask 077 && {
      echo "DIRECTORY_CLIENT_SECRET=$(head -c 32 /dev/urandom | base64 | tr -d '=+/\n')"
      echo "ACCESS_CLIENT_SECRET=$(head -c 32 /dev/urandom | base64 | tr -d '=+/\n')"
    } > "$RUN_DIR/clients.env")
  fi
  set -a
  # shellcheck disable=SC1091
  source "$RUN_DIR/keys.env"
  # shellcheck disable=SC1091
  source "$RUN_DIR/clients.env"
  # shellcheck disable=SC1091
  source "$RUN_DIR/audit-keys.env"
  DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/$DEV_DB}
  REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
  CQRS_REDIS_NAMESPACE=${CQRS_REDIS_NAMESPACE:-$REDIS_NS}
  CQRS_LOG_FORMAT=${CQRS_LOG_FORMAT:-text}
  CQRS_SMTP_URL=${CQRS_SMTP_URL:-smtp://127.0.0.1:2525}
  CQRS_MAIL_FROM=${CQRS_MAIL_FROM:-CQRS <no-reply@cqrs.localhost>}
  # The web gateway serves the pages people use; every mailed link points at it.
  GATEWAY_LISTEN=${GATEWAY_LISTEN:-127.0.0.1:8080}
  CQRS_PUBLIC_BASE_URL=${CQRS_PUBLIC_BASE_URL:-http://localhost:${GATEWAY_LISTEN##*:}/}
  CQRS_CORS_ALLOWED_ORIGINS=${CQRS_CORS_ALLOWED_ORIGINS:-http://localhost:${GATEWAY_LISTEN##*:}}
  CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL=${CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL:-service.desk@cqrs.localhost}
  NOTIFICATIONS_LISTEN=${NOTIFICATIONS_LISTEN:-127.0.0.1:50054}
  NOTIFICATIONS_URL=${NOTIFICATIONS_URL:-http://$NOTIFICATIONS_LISTEN}
  IDENTITY_LISTEN=${IDENTITY_LISTEN:-127.0.0.1:50051}
  IDENTITY_URL=${IDENTITY_URL:-http://$IDENTITY_LISTEN}
  DIRECTORY_LISTEN=${DIRECTORY_LISTEN:-127.0.0.1:50052}
  DIRECTORY_URL=${DIRECTORY_URL:-http://$DIRECTORY_LISTEN}
  DIRECTORY_CLIENT_ID=${DIRECTORY_CLIENT_ID:-directory}
  ACCESS_LISTEN=${ACCESS_LISTEN:-127.0.0.1:50053}
  ACCESS_URL=${ACCESS_URL:-http://$ACCESS_LISTEN}
  ACCESS_CLIENT_ID=${ACCESS_CLIENT_ID:-access}
  # /metrics of each service on loopback (gRPC port + 1000), like the gRPC ports.
  IDENTITY_ADMIN_LISTEN=${IDENTITY_ADMIN_LISTEN:-127.0.0.1:51051}
  DIRECTORY_ADMIN_LISTEN=${DIRECTORY_ADMIN_LISTEN:-127.0.0.1:51052}
  ACCESS_ADMIN_LISTEN=${ACCESS_ADMIN_LISTEN:-127.0.0.1:51053}
  NOTIFICATIONS_ADMIN_LISTEN=${NOTIFICATIONS_ADMIN_LISTEN:-127.0.0.1:51054}
  # Every service keeps the others' audit checkpoints (each skips itself in the list).
  CQRS_AUDIT_WITNESS_URLS=${CQRS_AUDIT_WITNESS_URLS:-$IDENTITY_URL,$DIRECTORY_URL,$ACCESS_URL,$NOTIFICATIONS_URL}
  # Identity knows each service client by the SHA-256 of its secret, never the secret.
  CQRS_SERVICE_CLIENTS=${CQRS_SERVICE_CLIENTS:-$DIRECTORY_CLIENT_ID:$(printf %s "$DIRECTORY_CLIENT_SECRET" | sha256sum | cut -d' ' -f1),$ACCESS_CLIENT_ID:$(printf %s "$ACCESS_CLIENT_SECRET" | sha256sum | cut -d' ' -f1)}
  # CQRS_DEV_OIDC=1: "Sign in with NHSmail" against a local test provider (cqrs-dev-oidc),
  # whose page asks which address to sign in as.
  if [ "${CQRS_DEV_OIDC:-0}" = 1 ]; then
    if [ ! -f "$RUN_DIR/oidc.env" ]; then
      (umask 077 && echo "DEV_OIDC_CLIENT_SECRET=$(head -c 32 /dev/urandom | base64 | tr -d '=+/\n')" \
        > "$RUN_DIR/oidc.env")
    fi
    # shellcheck disable=SC1091
    source "$RUN_DIR/oidc.env"
    DEV_OIDC_LISTEN=${DEV_OIDC_LISTEN:-127.0.0.1:8090}
    CQRS_OIDC_PROVIDERS=nhsmail
    CQRS_OIDC_NHSMAIL_ISSUER=http://$DEV_OIDC_LISTEN
    CQRS_OIDC_NHSMAIL_CLIENT_ID=cqrs-suite
    CQRS_OIDC_NHSMAIL_CLIENT_SECRET=$DEV_OIDC_CLIENT_SECRET
    CQRS_OIDC_NHSMAIL_LABEL=NHSmail
    CQRS_OIDC_REDIRECT_URI=${CQRS_PUBLIC_BASE_URL%/}/sign-in/sso/callback
  fi
  MAILSINK_LISTEN=${MAILSINK_LISTEN:-127.0.0.1:2525}
  MAILSINK_DIR=${MAILSINK_DIR:-$RUN_DIR/mail}
  set +a
}

start() {
  local name=$1; shift
  "$@" >>"$LOG_DIR/$name.log" 2>&1 &
  echo $! > "$PID_DIR/$name.pid"
}

# Waits until a service answers health checks (its own readiness covers its stores).
wait_healthy() {
  local name=$1 addr=$2
  for _ in $(seq 1 100); do
    if "$BIN/cqrs-devtoken" health "$addr" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$(cat "$PID_DIR/$name.pid")" 2>/dev/null; then
      echo "$name failed to start:"; tail -n 20 "$LOG_DIR/$name.log"; exit 1
    fi
    sleep 0.2
  done
  echo "$name is not healthy yet (see $LOG_DIR/$name.log)"
}

# GET http://$1$2 answers 200; prints the body. curl, else bash's /dev/tcp (HTTP/1.0).
http_get() {
  local addr=$1 path=$2
  if command -v curl >/dev/null 2>&1; then
    curl -fsS --max-time 2 "http://$addr$path" 2>/dev/null
    return
  fi
  (
    host=${addr%:*} port=${addr##*:}
    host=${host#[}; host=${host%]}
    exec 3<>"/dev/tcp/$host/$port" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$addr" >&3
    IFS=' ' read -r -t 2 _ status _ <&3 || exit 1
    [ "$status" = 200 ] || exit 1
    # Skip the headers, print the body.
    while IFS= read -r -t 2 line <&3; do [ -z "${line%$'\r'}" ] && break; done
    cat <&3
  ) 2>/dev/null
}

# Waits until the gateway answers its probe (GET /healthz, outside the public prefix).
wait_http() {
  local name=$1 addr=$2
  for _ in $(seq 1 100); do
    if http_get "$addr" /healthz >/dev/null; then return 0; fi
    if ! kill -0 "$(cat "$PID_DIR/$name.pid")" 2>/dev/null; then
      echo "$name failed to start:"; tail -n 20 "$LOG_DIR/$name.log"; exit 1
    fi
    sleep 0.2
  done
  echo "$name does not answer http://$addr/healthz yet (see $LOG_DIR/$name.log)"
}

# The newest link mailed to $1, from the sink's files (<n>-<address>.eml).
newest_link() {
  local file
  file=$(find "$MAILSINK_DIR" -maxdepth 1 -name "*-$1.eml" -printf '%f\n' 2>/dev/null | sort -n | tail -n 1)
  [ -n "$file" ] || return 1
  tr -d '\r' <"$MAILSINK_DIR/$file" | sed -e ':a' -e '/=$/N; s/=\n//; ta' -e 's/=3D/=/g' \
    | grep -o 'https\?://[^" <>]*token=[A-Za-z0-9_-]*' | head -n 1
}

case "${1:-run}" in
  stop) stop; exit 0 ;;
  clean) clean; exit 0 ;;
  logs) exec tail -n 50 -F "$LOG_DIR"/*.log ;;
  demo)
    load_env
    cargo build -q -p cqrs-testkit --bin cqrs-demo
    "$BIN/cqrs-demo"
    echo
    echo "Or sign in with them in a browser: ${CQRS_PUBLIC_BASE_URL%/}/sign-in (the web gateway)."
    exit 0 ;;
  run) ;;
  *) echo "usage: $0 [run | demo | logs | stop | clean]" >&2; exit 2 ;;
esac

stop
mkdir -p "$LOG_DIR" "$PID_DIR" "$RUN_DIR/mail"
release=()
[ "$PROFILE" = release ] && release=(--release)
cargo build -q "${release[@]}" -p cqrs-notifications -p cqrs-identity -p cqrs-directory -p cqrs-access \
  -p cqrs-gateway -p cqrs-testkit --bins
if [ "${CQRS_DEV_OIDC:-0}" = 1 ]; then
  cargo build -q -p cqrs-suite --bin cqrs-dev-oidc
fi
load_env

psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DEV_DB'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DEV_DB"

# 8080 is a popular port: never take another program's answers for the gateway's.
gateway_host=${GATEWAY_LISTEN%:*}; gateway_host=${gateway_host#[}; gateway_host=${gateway_host%]}
if (exec 3<>"/dev/tcp/$gateway_host/${GATEWAY_LISTEN##*:}") 2>/dev/null; then
  echo "$GATEWAY_LISTEN is already in use (another 'make run'?); stop that, or set GATEWAY_LISTEN." >&2
  exit 1
fi

start mailsink "$BIN/cqrs-mailsink"
if [ "${CQRS_DEV_OIDC:-0}" = 1 ]; then
  start dev-oidc "$BIN/cqrs-dev-oidc"
fi
for service in "${SERVICES[@]}"; do
  listen_var="${service^^}_LISTEN"
  start "$service" "$BIN/cqrs-$service"
  wait_healthy "$service" "${!listen_var}"
done
# The web gateway: pages for people, a gRPC client of the four services (shares their Redis
# namespace for its web sessions).
start gateway "$BIN/cqrs-gateway"
wait_http gateway "$GATEWAY_LISTEN"

echo "CQRS suite running (logs: $LOG_DIR/ or 'make logs'; stop with 'make stop', wipe with 'make clean'):"
for service in "${SERVICES[@]}"; do
  listen_var="${service^^}_LISTEN"
  printf '  %-14s grpc://%-18s health: %s\n' "$service" "${!listen_var}" "$("$BIN/cqrs-devtoken" health "${!listen_var}")"
done
printf '  %-14s http://%-18s health: %s  pages: %s\n' gateway "$GATEWAY_LISTEN" \
  "$(http_get "$GATEWAY_LISTEN" /healthz || echo 'not answering')" "$CQRS_PUBLIC_BASE_URL"
printf '  %-14s smtp://%-18s messages: %s/ (links also in %s/mailsink.log)\n' mailsink "$MAILSINK_LISTEN" "$MAILSINK_DIR" "$LOG_DIR"

# The service desk is bootstrapped on the first start of an empty database; its registration
# link arrives through the outbox, the notification service and the sink.
echo
link=""
for _ in $(seq 1 50); do
  link=$(newest_link "$CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL" || true)
  [ -n "$link" ] && break
  sleep 0.2
done
if [ -n "$link" ]; then
  echo "Service desk ($CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL) registration link:"
  echo "  $link"
  echo "Open the link in a browser and set a password, then sign in at ${CQRS_PUBLIC_BASE_URL%/}/sign-in"
  echo "with the User ID shown there; or run 'make demo' to do that and load a small data set"
  echo "with users in every role."
  echo "The service desk and the administrator roles need an authenticator app (CQRS_SECOND_FACTOR_ROLES):"
  echo "the first sign-in leads you to add one. Without a phone, '$BIN/cqrs-devtoken totp <key>'"
  echo "prints the code for the key that page shows."
else
  echo "No registration mail for $CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL (already registered on an earlier run?)."
fi
if [ "${CQRS_DEV_OIDC:-0}" = 1 ]; then
  echo
  echo "Sign in with NHSmail: the sign-in page's button goes to a local test provider"
  echo "(http://$DEV_OIDC_LISTEN, not NHSmail) that asks which address to sign in as; an account"
  echo "with that address must exist (the desk's is $CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL)."
fi
cat <<INFO

A service token for trying internal RPCs (valid 15 minutes):
  $("$BIN/cqrs-devtoken" service cli)
e.g. buf curl --protocol grpc --http2-prior-knowledge --list-methods http://$DIRECTORY_LISTEN
INFO
