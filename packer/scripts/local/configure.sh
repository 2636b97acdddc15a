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

install -D -m 0644 "$FILES/cloud/90-bakery.cfg" "$ROOT/etc/cloud/cloud.cfg.d/90-bakery.cfg"

# bakery-podmaster: the bakery package on Debian's python3 (httpx from python3-httpx).
rm -rf "$ROOT/usr/lib/python3/dist-packages/bakery"
cp -r "$BAKERY_SRC" "$ROOT/usr/lib/python3/dist-packages/bakery"
find "$ROOT/usr/lib/python3/dist-packages/bakery" -name __pycache__ -prune -exec rm -rf {} +
install -m 0755 "$FILES/bakery-podmaster" "$ROOT/usr/local/bin/bakery-podmaster"
in_root python3 -c 'import bakery, httpx'
# bakery-node needs pydantic 2 and cryptography 44+ (Debian 12 ships 1.10 and 38): wheels for
# the image's Python 3.11, fetched by the build host's pip into a folder only bakery-node
# puts on its path (bakery-podmaster keeps Debian's).
rm -rf "$ROOT/opt/bakery/lib"
python3 -m pip install --quiet --disable-pip-version-check --no-warn-conflicts --no-compile --target "$ROOT/opt/bakery/lib" \
  --python-version 3.11 --implementation cp --only-binary=:all: \
  --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  'pydantic>=2.6,<3' 'cryptography>=44'
install -m 0755 "$FILES/bakery-node" "$ROOT/usr/local/bin/bakery-node"
in_root /usr/local/bin/bakery-node --help > /dev/null
in_root /usr/bin/python3 -c 'import sys; sys.path.insert(0, "/opt/bakery/lib"); import bakery.node.agent, bakery.pki'


# Units ready at first boot: enabling them from runcmd costs ~33 s under TCG. (monit is
# enabled by its package, through its init script.)
install -d -m 0755 "$ROOT/etc/bakery"
install -m 0644 "$FILES"/systemd/*.service "$ROOT/etc/systemd/system/"
in_root systemctl enable bakery-etcd.service bakery-podmaster.service bakery-node.service systemd-networkd.service
# The seed's addresses are static: waiting for "online" only delayed boot (~25 s seen).
in_root systemctl disable systemd-networkd-wait-online.service

# The etcd package's own single-node member must never start: bakery configures etcd.
# Disabled, not masked: a mask is a symlink to /dev/null that user-data could write through.
in_root systemctl disable etcd.service
rm -f "$ROOT/etc/default/etcd"
rm -rf "$ROOT/var/lib/etcd/"*

# Shared cleaning (also run by the cloud images): identity, keys, cloud-init state.
in_root /bin/bash -s < "$SCRIPTS/cleanup.sh"
