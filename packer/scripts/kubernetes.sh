#!/bin/bash
# Cloud images: kubelet and kubectl pinned to KUBERNETES_VERSION from the community
# package repository of that minor release (pkgs.k8s.io), held against upgrades.
set -euo pipefail
: "${KUBERNETES_VERSION:?}"
export DEBIAN_FRONTEND=noninteractive
minor="v${KUBERNETES_VERSION%.*}"
repo="https://pkgs.k8s.io/core:/stable:/${minor}/deb/"
install -d -m 0755 /etc/apt/keyrings
curl -fsSL "${repo}Release.key" | gpg --dearmor -o /etc/apt/keyrings/kubernetes.gpg
echo "deb [signed-by=/etc/apt/keyrings/kubernetes.gpg] ${repo} /" > /etc/apt/sources.list.d/kubernetes.list
apt-get update -q
# Debian revisions of the packages look like 1.31.4-1.1: pin the upstream version only.
apt-get install -y -q --no-install-recommends "kubelet=${KUBERNETES_VERSION}-*" "kubectl=${KUBERNETES_VERSION}-*"
apt-mark hold kubelet kubectl
# The kubelet starts at boot and waits for the config bakery's user-data writes.
systemctl enable kubelet.service
kubelet --version | grep -qx "Kubernetes v${KUBERNETES_VERSION}"
