#!/usr/bin/env bash
# `make lint`: the v1 contracts must not break clients of the previous release. Compares the
# protos with those of the newest release tag (v*), read straight from git; before the first
# release there is nothing to compare with and it says so.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=$(git tag --list 'v*' --sort=-version:refname 2>/dev/null | head -n 1)
if [ -z "$tag" ]; then
  echo "buf breaking: no release tag (v*) yet; nothing to compare with"
  exit 0
fi
echo "buf breaking: against $tag"
exec bash scripts/buf.sh breaking --against ".git#tag=$tag"
