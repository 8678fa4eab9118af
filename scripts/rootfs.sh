#!/usr/bin/env bash
# Prints the path of a Debian bookworm minbase rootfs made by debootstrap, building it once and
# caching it (a tarball, so ownership, modes, xattrs and device nodes survive) under
# ${DFNYDUS_CACHE:-/var/cache/dfnydus}. Usage: rootfs.sh [extra,packages]
set -euo pipefail
cache=${DFNYDUS_CACHE:-/var/cache/dfnydus}
include=${1:-}
name=bookworm-minbase${include:+-$(echo "$include" | tr ',' '-')}
tarball="$cache/$name.tar"
dir="$cache/$name"
mkdir -p "$cache"
if [ ! -f "$tarball" ]; then
  tmp=$(mktemp -d "$cache/.debootstrap.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "rootfs: debootstrap $name (once, cached in $tarball)" >&2
  debootstrap --variant=minbase ${include:+--include="$include"} bookworm "$tmp/root" http://deb.debian.org/debian >"$tmp/log" 2>&1 \
    || { tail -20 "$tmp/log" >&2; exit 1; }
  # Drop what changes between runs of debootstrap and is not image content.
  rm -rf "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/var/log/"* "$tmp/root/proc/"* "$tmp/root/sys/"*
  tar --xattrs --xattrs-include='*' --numeric-owner -C "$tmp/root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi
if [ ! -d "$dir" ]; then
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  tar --xattrs --xattrs-include='*' --numeric-owner -C "$dir.tmp" -xpf "$tarball"
  mv "$dir.tmp" "$dir"
fi
echo "$dir"
