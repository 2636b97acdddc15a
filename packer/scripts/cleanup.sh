#!/bin/bash
# Last step of every image: nothing in it may identify one machine or let anyone in.
# Runs inside the image (the cloud VM, or the local image's chroot), as root.
set -euo pipefail

# No password or key: root and the default users get in only with the user-data's SSH key.
for user in root admin debian ubuntu; do
  if getent passwd "$user" >/dev/null; then usermod -p '*' "$user"; fi
done
rm -f /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys
rm -f /etc/ssh/ssh_host_*

# A fresh identity on first boot: systemd writes machine-id, cloud-init sets the hostname.
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id
printf 'localhost\n' > /etc/hostname

# cloud-init runs again on first boot of every copy of the image.
if command -v cloud-init >/dev/null; then cloud-init clean --logs --seed; fi
rm -rf /var/lib/cloud/*

apt-get clean
rm -rf /var/lib/apt/lists/* /tmp/* /var/tmp/*
find /var/log -type f -exec truncate -s 0 {} +
rm -f /root/.bash_history
