"""A node's NoCloud seed: user-data (rendered by bakery), meta-data, vendor-data and
network-config. The documents are pure functions; `build` writes them and runs
cloud-localds, which packs them into an iso9660 disk labelled `cidata`.

The network is the provider's business, not the user-data's: network-config gives
eth0 the plan's private address and eth1 the fixed user-mode address the host's
forwards point at (static: no DHCP wait, and no default route into a network that
leads nowhere). vendor-data carries what only the local provider needs: root may
log in with bakery's key (`bakery ssh`, the end-to-end test reading root-owned files),
and a faster first boot. The user-data, merged over it, wins where both set a key.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import yaml

from bakery.errors import ProviderError
from bakery.output import atomic_write
from bakery.providers.local.net import USER_GUEST, USER_NET, NodeNet


def meta_data(cluster: str, node: NodeNet, user_data: bytes) -> bytes:
    """instance-id changes with the user-data, so a new rendering is a new instance."""
    digest = hashlib.sha256(user_data).hexdigest()[:12]
    # local-ipv4: bakery-node's identity reads the address from the datasource's meta-data
    doc = {"instance-id": f"{cluster}-{node.name}-{digest}", "local-hostname": node.name, "local-ipv4": node.address}
    return yaml.safe_dump(doc, sort_keys=False).encode()


def network_config(node: NodeNet) -> bytes:
    """network-config v2: private address on the hub NIC, fixed address on the host NIC."""
    user_prefix = USER_NET.split("/")[1]
    doc = {
        "version": 2,
        "ethernets": {
            "private": {"match": {"macaddress": node.private_mac}, "addresses": [f"{node.address}/{node.prefix}"]},
            "host": {"match": {"macaddress": node.user_mac}, "addresses": [f"{USER_GUEST}/{user_prefix}"]},
        },
    }
    return yaml.safe_dump(doc, sort_keys=False).encode()


def container_network_config(node: NodeNet) -> bytes:
    """network-config v2 for a container: its one veth holds the plan's address (already
    set by the host, kept by networkd); no gateway, so no default route."""
    doc = {"version": 2,
           "ethernets": {"private": {"match": {"macaddress": node.private_mac}, "addresses": [f"{node.address}/{node.prefix}"]}}}
    return yaml.safe_dump(doc, sort_keys=False).encode()


def container_vendor_data() -> bytes:
    """A container is entered with nsenter (no ssh key); the same first-boot modules are off."""
    doc = {"grub_dpkg": {"enabled": False}, "no_ssh_fingerprints": True, "ssh": {"emit_keys_to_console": False}}
    return b"#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False).encode()


def vendor_data(public_key: str) -> bytes:
    """Root logs in with bakery's key; first-boot modules that only cost time here are off.

    Measured under TCG (`cloud-init analyze blame`): grub-dpkg ~40 s probing for a
    bootloader the direct kernel boot does not have, keys-to-console ~10 s; the
    fingerprints table is noise on a console bakery reads.
    """
    doc = {
        "disable_root": False,
        "ssh_authorized_keys": [public_key.strip()],
        "grub_dpkg": {"enabled": False},
        "no_ssh_fingerprints": True,
        "ssh": {"emit_keys_to_console": False},
    }
    return b"#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False).encode()


def build(folder: Path, seed: Path, *, user_data: bytes, meta: bytes, network: bytes, vendor: bytes) -> Path:
    """Write the four documents into `folder` and pack them into `seed` (atomically)."""
    docs = {"user-data": (user_data, 0o600), "meta-data": (meta, 0o644),
            "network-config": (network, 0o644), "vendor-data": (vendor, 0o644)}
    for name, (content, mode) in docs.items():
        atomic_write(folder / name, content, mode)
    tmp = seed.with_name(f".{seed.name}.tmp")
    argv = ["cloud-localds", "-N", str(folder / "network-config"), "-V", str(folder / "vendor-data"),
            str(tmp), str(folder / "user-data"), str(folder / "meta-data")]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ProviderError("cloud-localds not found: install cloud-image-utils (make setup-system)") from None
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise ProviderError(f"cloud-localds failed for {seed}: {r.stderr.strip()[-400:]}")
    tmp.chmod(0o600)
    tmp.replace(seed)
    return seed
