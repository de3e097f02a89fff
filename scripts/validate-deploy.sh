#!/usr/bin/env bash
# Static checks of deploy/: the Kubernetes manifests (schemas of Kubernetes 1.30, strict), the
# kustomizations, the compose file and the Dockerfile, plus the configuration names they use.
# Offline after the first run; part of `make test`. Details: scripts/validate_deploy.py.
#
# Needs python3. The checker's tools live in a venv under .tools/venv (git-ignored), made on
# the first run and whenever scripts/validate-deploy.requirements.txt changes. Uses
# `kubectl kustomize` (or `kustomize`) and `docker compose` when they are installed, for extra
# checks; neither is required.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.tools/venv
REQUIREMENTS=scripts/validate-deploy.requirements.txt
PYTHON=${PYTHON:-python3}

log() { printf 'validate-deploy: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

venv_current() {
  [ -x "$VENV/bin/python" ] \
    && "$VENV/bin/python" -c 'import kubernetes_validate, yaml' >/dev/null 2>&1 \
    && cmp -s "$REQUIREMENTS" "$VENV/.requirements"
}

make_venv() {
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    # Debian/Ubuntu ship venv (ensurepip) separately; install it as scripts/dev-services.sh does.
    if command -v apt-get >/dev/null 2>&1; then
      log "installing python3-venv"
      as_root apt-get update -qq
      DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >/dev/null
      "$PYTHON" -m venv "$VENV"
    else
      log "$PYTHON cannot create a venv; install Python 3 with its venv module"; exit 1
    fi
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  # Written last: an interrupted install is redone on the next run.
  cp "$REQUIREMENTS" "$VENV/.requirements"
}

if ! venv_current; then
  command -v "$PYTHON" >/dev/null 2>&1 || { log "$PYTHON not found"; exit 1; }
  log "preparing $VENV (first run, or the requirements changed)"
  make_venv
fi
exec "$VENV/bin/python" scripts/validate_deploy.py "$@"
