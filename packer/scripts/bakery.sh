#!/bin/bash
# Installs bakery's own programs into the image: bakery-podmaster and bakery-node (the
# bakery package on the image's python3, the third-party modules bakery-node needs in
# /opt/bakery/lib, only on its own path) and bakery-node.service, enabled. Shared by the
# local build (ROOT: the chroot, from scripts/local/configure.sh) and the cloud builds
# (ROOT empty: the builder instance itself, over SSH).
# Inputs (environment): ROOT (empty for /), BAKERY_SRC (the bakery package as staged),
# FILES (packer/files/local: the launchers and units), LIB (a pip --target folder the
# build host filled: scripts/lib.sh).
set -euo pipefail
: "${BAKERY_SRC:?}" "${FILES:?}" "${LIB:?}"
ROOT="${ROOT:-}"
in_root() {
  if [ -n "$ROOT" ]; then chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; else "$@"; fi
}

rm -rf "$ROOT/usr/lib/python3/dist-packages/bakery"
cp -r "$BAKERY_SRC" "$ROOT/usr/lib/python3/dist-packages/bakery"
find "$ROOT/usr/lib/python3/dist-packages/bakery" -name __pycache__ -prune -exec rm -rf {} +
install -m 0755 "$FILES/bakery-podmaster" "$ROOT/usr/local/bin/bakery-podmaster"
install -m 0755 "$FILES/bakery-node" "$ROOT/usr/local/bin/bakery-node"
rm -rf "$ROOT/opt/bakery/lib"
install -d -m 0755 "$ROOT/opt/bakery"
cp -r "$LIB" "$ROOT/opt/bakery/lib"
install -d -m 0755 "$ROOT/etc/bakery"
install -m 0644 "$FILES/systemd/bakery-node.service" "$ROOT/etc/systemd/system/bakery-node.service"
in_root systemctl enable bakery-node.service
# what runs at boot must import here, with the image's own python3
in_root /usr/local/bin/bakery-node --help > /dev/null
in_root /usr/bin/python3 -c 'import sys; sys.path.insert(0, "/opt/bakery/lib"); import bakery.node.agent, bakery.pki, bakery.store.base'
