#!/bin/bash
# Builds the local image's Debian root with debootstrap (runs on the build host, as root).
# Inputs (environment): ROOT, DEBIAN_MIRROR, DEBIAN_SUITE, DEBIAN_PACKAGES (comma-separated).
set -euo pipefail
: "${ROOT:?}" "${DEBIAN_MIRROR:?}" "${DEBIAN_SUITE:?}" "${DEBIAN_PACKAGES:?}"

# debootstrap mounts /proc and /sys inside ROOT; never leave them mounted on failure.
cleanup() {
  for m in "$ROOT/proc" "$ROOT/sys" "$ROOT/dev/pts" "$ROOT/dev"; do
    if mountpoint -q "$m" 2>/dev/null; then umount -l "$m" || true; fi
  done
}
trap cleanup EXIT

rm -rf "$ROOT"
mkdir -p "$ROOT"
# python3-cffi-backend is listed explicitly: debootstrap cannot resolve the virtual
# package that python3-cryptography (pulled by cloud-init) depends on.
debootstrap --variant=minbase --include="$DEBIAN_PACKAGES" "$DEBIAN_SUITE" "$ROOT" "$DEBIAN_MIRROR"
echo "rootfs: $(du -sh "$ROOT" | cut -f1) in $ROOT"
