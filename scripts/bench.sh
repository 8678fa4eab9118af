#!/usr/bin/env bash
# Benchmarks, each printed next to the baseline measured in the same run. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# The machine may be shared: the load goes with the figures.
uptime
echo "== build throughput vs in-memory digest+compress limit (issue: image format)"
go run ./test/bench/buildbench -bin bin/dfnydus "$@"
echo
echo "== micro-benchmarks"
go test -run='^$' -bench=. -benchtime=3x ./rafs/... 2>&1 | grep -E '^(Benchmark|ok|PASS|FAIL)' || true
echo
echo "== convert registry->registry vs its CPU limit, and the bytes it pushes vs the OCI image's (skopeo+umoci pull+unpack as node-side context) (issue: registry round trip)"
uptime
go test -run '^$' -bench BenchmarkConvertVsPullUnpack -benchtime=1x ./test/bench/ 2>&1 | grep -vE '^(time=|goos|goarch|pkg|cpu)'
echo
echo "== FUSE: warm sequential reads vs a plain go-fuse file, from memory and through fetcher + store; metadata walk vs kernel EROFS (issue: lazy mount)"
uptime
DFNYDUS_FUSE_BENCH=1 go test ./fuse -run TestPerformanceReport -v -count=1 -timeout 30m 2>&1 | grep -vE '^(=== RUN|--- PASS|PASS|ok )'
echo
echo "== kernel mode (EROFS over view files) vs FUSE mode vs plain EROFS / a local file: metadata walk, cold and warm sequential reads"
uptime
DFNYDUS_KERNEL_BENCH=1 go test ./kernelfs -run TestKernelModeReport -v -count=1 -timeout 30m 2>&1 | grep -vE '^(=== RUN|--- PASS|PASS|ok )'
echo
echo "== cold start over a 100 Mbit/s link: OCI pull+unpack vs dfnydus lazy vs eStargz; mount memory on 50k small files (issue: lazy mount)"
go test -run '^$' -bench . -benchtime=1x -timeout 30m ./test/bench/coldstart/ 2>&1 | grep -vE '^(goos|goarch|pkg|cpu)'
