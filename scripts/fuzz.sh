#!/usr/bin/env bash
# Runs every fuzz target in both modules for $1 (default 30s) each, then keeps what the fuzzer found:
# new interesting inputs are copied from the Go fuzz cache into the package's testdata/fuzz/<Target>/
# (at most 40 per target and run, none over 64 KiB, to keep the repository small), where `go test`
# replays them. Minimization is kept short: on inputs of tens of KiB Go's byte-by-byte shrinking
# would otherwise hold a worker for its whole deadline per new input.
set -euo pipefail
t=${1:-30s}
cd "$(dirname "$0")/.."
cache=$(go env GOCACHE)/fuzz
# The product's module, then the tools module (tools/: our Dragonfly ids against the scheduler's).
for mod in . tools; do
  for pkg in $(cd "$mod" && go list ./...); do
    dir=$(cd "$mod" && go list -f '{{.Dir}}' "$pkg")
    for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/func //' | sort -u); do
      echo "== $pkg $target ($t)"
      (cd "$mod" && go test -run='^$' -fuzz="^${target}\$" -fuzztime="$t" -fuzzminimizetime=100ms "$pkg")
      if [ -d "$cache/$pkg/$target" ]; then
        mkdir -p "$dir/testdata/fuzz/$target"
        find "$cache/$pkg/$target" -type f -size -64k | head -n 40 | xargs -r cp -n -t "$dir/testdata/fuzz/$target/"
      fi
    done
  done
done
