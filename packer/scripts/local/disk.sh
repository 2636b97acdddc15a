#!/bin/bash
# Makes the local image's files from ROOT: a qcow2 disk plus the kernel and initrd for
# QEMU's direct kernel boot (no bootloader). Runs on the build host, as root.
# Inputs (environment): ROOT, OUTPUT_DIR, DISK_SIZE (e.g. 2G). Moves ROOT into the image
# as root/: the container runtime (systemd-nspawn) boots an overlayfs over that tree, the
# same files the qcow2 holds, with no loop device or qemu-nbd needed.
set -euo pipefail
: "${ROOT:?}" "${OUTPUT_DIR:?}" "${DISK_SIZE:?}"

work="$OUTPUT_DIR.partial"
rm -rf "$work"
mkdir -p "$work"
# Interrupted or failed: leave no half-made image behind (after the mv below, $work is gone).
trap 'rm -rf "$work"' EXIT
cp "$(ls "$ROOT"/boot/vmlinuz-* | sort -V | tail -n1)" "$work/vmlinuz"
cp "$(ls "$ROOT"/boot/initrd.img-* | sort -V | tail -n1)" "$work/initrd.img"
chmod 0644 "$work/vmlinuz" "$work/initrd.img"

# mkfs.ext4 -d copies ROOT into a new filesystem without mounting anything.
mkfs.ext4 -q -F -L bakery-root -d "$ROOT" "$work/disk.raw" "$DISK_SIZE"
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$work/disk.qcow2"
rm -f "$work/disk.raw"
# Same file system (both under the build folder): a rename, not a copy.
mv "$ROOT" "$work/root"

# Appears whole or not at all.
rm -rf "$OUTPUT_DIR"
mv "$work" "$OUTPUT_DIR"
ls -l "$OUTPUT_DIR"
