#!/usr/bin/env bash
# Runs every fuzz target in the module for $1 (default 30s) each, then keeps what the fuzzer found:
# new interesting inputs are copied from the Go fuzz cache into the package's testdata/fuzz/<Target>/
# (files over 64 KiB are skipped to keep the repository small), where `go test` replays them.
set -euo pipefail
t=${1:-30s}
cd "$(dirname "$0")/.."
cache=$(go env GOCACHE)/fuzz
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/func //' | sort -u); do
    echo "== $pkg $target ($t)"
    go test -run='^$' -fuzz="^${target}\$" -fuzztime="$t" -fuzzminimizetime=3s "$pkg"
    if [ -d "$cache/$pkg/$target" ]; then
      mkdir -p "$dir/testdata/fuzz/$target"
      find "$cache/$pkg/$target" -type f -size -64k -exec cp -n {} "$dir/testdata/fuzz/$target/" \;
    fi
  done
done
