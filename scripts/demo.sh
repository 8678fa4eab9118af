#!/usr/bin/env bash
# The main job on an embedded default, no cluster: build a nydus image from a real tree (the Go
# toolchain's source, or DIR if given), verify it, read it back, and compare with the source.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-$(go env GOROOT)/src}
bin=bin/dfnydus
work=$(mktemp -d /var/tmp/dfnydus-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== building a RAFS v6 image (zstd, blake3) from $src"
$bin build --bootstrap "$work/image.boot" --blob-dir "$work/blobs" --output-json "$work/build.json" "$src"
echo "== checking it (superblock, tables, ToC, every chunk digest)"
$bin check --bootstrap "$work/image.boot" --blob-dir "$work/blobs"
echo "== first entries"
$bin inspect --bootstrap "$work/image.boot" > "$work/inspect.txt"; head -8 "$work/inspect.txt"
echo "== unpacking and comparing with the source"
$bin unpack --bootstrap "$work/image.boot" --blob-dir "$work/blobs" --output "$work/out"
diff -r --no-dereference "$src" "$work/out" && echo "identical content"
src_bytes=$(du -sb "$src" | cut -f1); blob_bytes=$(du -sb "$work/blobs" | cut -f1)
echo "source $((src_bytes/1024/1024)) MiB -> blobs $((blob_bytes/1024/1024)) MiB + bootstrap $(( $(stat -c %s "$work/image.boot")/1024 )) KiB"
