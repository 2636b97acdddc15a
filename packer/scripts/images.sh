#!/bin/bash
# Cloud images: pre-pull the control-plane images (CONTROL_PLANE_IMAGES, space-separated)
# into containerd's k8s.io namespace, so static pods start without a registry on first boot.
set -euo pipefail
systemctl start containerd.service
for ref in ${CONTROL_PLANE_IMAGES:-}; do
  ctr --namespace k8s.io images pull --platform linux/amd64 "$ref" >/dev/null
  echo "pulled $ref"
done
