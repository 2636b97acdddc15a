#!/bin/bash
# Turns the debootstrapped ROOT into the local golden image (runs on the build host).
# Inputs (environment): ROOT, FILES (packer/files/local), BAKERY_SRC (the bakery package),
# SCRIPTS (packer/scripts: the shared provisioning scripts run inside ROOT).
set -euo pipefail
: "${ROOT:?}" "${FILES:?}" "${BAKERY_SRC:?}" "${SCRIPTS:?}"
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

# Direct kernel boot: no bootloader, the root is the whole virtio disk.
printf '/dev/vda / ext4 defaults,errors=remount-ro 0 1\n' > "$ROOT/etc/fstab"
printf 'LANG=C.UTF-8\n' > "$ROOT/etc/default/locale"
# debootstrap writes no /etc/hosts. Without it "localhost" does not resolve, and
# kube-apiserver's own loopback client (https://localhost:<port>) fails: its post-start
# hooks never run, no RBAC is bootstrapped, every request is refused with 403.
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$ROOT/etc/hosts"

install -D -m 0644 "$FILES/cloud/90-bakery.cfg" "$ROOT/etc/cloud/cloud.cfg.d/90-bakery.cfg"

# bakery-podmaster and bakery-node (the shared installer, as in the cloud images).
LIB="$ROOT/../bakery-lib" EXTRA="" bash "$SCRIPTS/lib.sh"
ROOT="$ROOT" BAKERY_SRC="$BAKERY_SRC" FILES="$FILES" LIB="$ROOT/../bakery-lib" bash "$SCRIPTS/bakery.sh"
rm -rf "$ROOT/../bakery-lib"
in_root python3 -c 'import bakery, httpx'  # bakery-podmaster: Debian's httpx (python3-httpx)

# The real etcd and Kubernetes programs of the spec's versions (bakery/components' cache),
# checked against the sums that are part of the image's hash.
: "${BINARIES?}" "${BINARY_SUMS?}"
for bin in $BINARIES; do
  install -m 0755 "$bin" "$ROOT/usr/local/bin/$(basename "$bin")"
done
if [ -n "$BINARY_SUMS" ]; then
  (cd "$ROOT/usr/local/bin" && printf '%s\n' "$BINARY_SUMS" | tr ',' '\n' | sha256sum --quiet -c -)
fi

# Units ready at first boot: enabling them from runcmd costs ~33 s under TCG. (monit is
# enabled by its package, through its init script.)
install -m 0644 "$FILES"/systemd/bakery-etcd.service "$FILES"/systemd/bakery-podmaster.service "$ROOT/etc/systemd/system/"
in_root systemctl enable bakery-etcd.service bakery-podmaster.service systemd-networkd.service
# The seed's addresses are static: waiting for "online" only delayed boot (~25 s seen).
in_root systemctl disable systemd-networkd-wait-online.service


# Shared cleaning (also run by the cloud images): identity, keys, cloud-init state.
in_root /bin/bash -s < "$SCRIPTS/cleanup.sh"
