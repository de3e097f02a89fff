#!/usr/bin/env sh
# Runs buf from npm at a pinned version, so lint results do not drift with new buf releases
# and nobody has to install buf by hand. Runs from the repository root so buf.yaml is found.
# Usage: scripts/buf.sh lint | scripts/buf.sh format -d | scripts/buf.sh breaking --against ...
set -eu

BUF_VERSION="${BUF_VERSION:-1.75.0}"

cd "$(dirname "$0")/.."
exec npx --yes "@bufbuild/buf@${BUF_VERSION}" "$@"
