#!/bin/bash
# Cloud images: the node's base packages. containerd and monit come from Debian; monit's
# checks for kubelet and containerd arrive with the node's user-data.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  containerd monit cloud-init ca-certificates curl gpg iproute2 conntrack socat ethtool ebtables \
  python3-httpx python3-cffi-backend  # bakery-node's: Debian's httpx; cryptography's wheels load cffi
# The kubelet needs the systemd cgroup driver that systemd hosts use.
mkdir -p /etc/containerd
containerd config default | sed 's/SystemdCgroup = false/SystemdCgroup = true/' > /etc/containerd/config.toml
printf 'overlay\nbr_netfilter\n' > /etc/modules-load.d/kubernetes.conf
printf 'net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\n' > /etc/sysctl.d/90-kubernetes.conf
systemctl enable containerd.service monit.service
