#!/usr/bin/env bash
# `make lint`: the v1 contracts must not break their clients. Runs `buf breaking` (the FILE
# rules in buf.yaml) against the committed baseline image proto/baseline/cqrs-v1.binpb, a
# `buf build` of the contracts as last accepted. A missing image is a failure, never a skip.
#
# A break is accepted only on purpose: refresh the image in the same change that makes it
# (`make proto-baseline`, which runs this script with `--refresh`), so review sees the new
# image beside the edit, and say in the commit why clients can take the break.
#
# `--self-test` proves the check can fail: in a temporary copy of the contracts (the tree is
# not touched) it builds a baseline, checks that an unchanged copy passes, renumbers a field
# and expects buf to report that field as a break.
set -euo pipefail
cd "$(dirname "$0")/.."

baseline=proto/baseline/cqrs-v1.binpb

# The baseline image: every file with its imports, without comments and source positions
# (they do not take part in the comparison and would make the image four times as large).
build_image() { # <repository root> <output path>
  bash "$1/scripts/buf.sh" build --exclude-source-info -o "$2"
}

refresh_advice() {
  cat >&2 <<EOF
buf breaking: the changes above break clients of the contracts in $baseline.
  Usually: make the change compatible instead - add a new field or message rather than
  renumbering, renaming, retyping or removing one, and reserve the number and name of a
  removed field.
  If the break is intended and accepted: run \`make proto-baseline\` and commit the refreshed
  $baseline with the change, saying in the commit message why clients can take
  the break.
EOF
}

case "${1:-}" in
  --refresh)
    mkdir -p "$(dirname "$baseline")"
    build_image . "$baseline"
    echo "buf breaking: baseline $baseline refreshed from the working tree ($(wc -c <"$baseline") bytes); commit it with the change it accepts"
    exit 0
    ;;
  --self-test)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/scripts"
    cp buf.yaml "$tmp/"
    cp scripts/buf.sh "$tmp/scripts/"
    cp -R proto "$tmp/"
    build_image "$tmp" "$tmp/self-test.binpb"
    if ! bash "$tmp/scripts/buf.sh" breaking --against "$tmp/self-test.binpb"; then
      echo "buf breaking self-test: unchanged contracts were reported as a break" >&2
      exit 1
    fi
    # The first field of the first contract file gets a new number: always a break.
    file=$(cd "$tmp" && find proto/cqrs -name '*.proto' | LC_ALL=C sort | head -n 1)
    field_re='^[[:space:]]+(repeated |optional )?[A-Za-z_][A-Za-z0-9_.]* [a-z_][a-z0-9_]* = [0-9]+'
    line=$(grep -m 1 -nE "$field_re" "$tmp/$file" || true)
    if [ -z "$line" ]; then
      echo "buf breaking self-test: found no field to renumber in $file" >&2
      exit 1
    fi
    lineno=${line%%:*}
    name=$(sed -nE "${lineno}s/^[[:space:]]+(repeated |optional )?[A-Za-z0-9_.]+ ([a-z0-9_]+) = .*/\2/p" "$tmp/$file")
    perl -pi -e 's/ = (\d+)/" = " . ($1 + 1000)/e if $. == '"$lineno" "$tmp/$file"
    if cmp -s "$file" "$tmp/$file"; then
      echo "buf breaking self-test: renumbering field $name of $file did not change the file" >&2
      exit 1
    fi
    set +e
    out=$(bash "$tmp/scripts/buf.sh" breaking --against "$tmp/self-test.binpb" 2>&1)
    rc=$?
    set -e
    # buf exits with 100 when it found breaking changes; anything else is a failure to check.
    if [ "$rc" -ne 100 ] || ! grep -q "\"$name\"" <<<"$out"; then
      echo "buf breaking self-test: renumbering field $name of $file was not reported as a break (buf exit $rc):" >&2
      echo "$out" >&2
      exit 1
    fi
    echo "buf breaking self-test: ok (renumbering $name in $file is caught: $(head -n 1 <<<"$out"))"
    exit 0
    ;;
  "") ;;
  *)
    echo "usage: scripts/buf-breaking.sh [--refresh | --self-test]" >&2
    exit 2
    ;;
esac

if [ ! -f "$baseline" ]; then
  echo "buf breaking: baseline image $baseline is missing, so nothing can be compared." >&2
  echo "  Restore it from git, or create it on purpose with \`make proto-baseline\` and commit it." >&2
  exit 1
fi
set +e
bash scripts/buf.sh breaking --against "$baseline"
rc=$?
set -e
case $rc in
  0) echo "buf breaking: contracts are compatible with $baseline (FILE rules)" ;;
  100) refresh_advice ;;
  *) echo "buf breaking: buf could not compare with $baseline (exit $rc)" >&2 ;;
esac
exit $rc
