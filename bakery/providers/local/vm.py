"""QEMU for the local provider: the argv of a master VM and of the network hub (pure
functions), and the accelerator probe.

A master boots its kernel directly (no bootloader): `-kernel`/`-initrd` exported by
the bake beside the disk, root on the first virtio disk, its NoCloud seed on the
second, its console on a file (SIGTERM to QEMU loses the guest's journal; the
console log survives).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bakery.providers.local.net import (
    GUEST_DISCOVERY,
    GUEST_DISCOVERY_PORT,
    HOST,
    USER_NET,
    NetPlan,
    NodeNet,
)

QEMU = "qemu-system-x86_64"
KERNEL_APPEND = "root=/dev/vda rw console=ttyS0,115200 net.ifnames=0"


@dataclass(frozen=True)
class Boot:
    """What the bake exported: the disk every overlay is backed by, its kernel and initrd."""

    disk: Path
    kernel: Path
    initrd: Path


@dataclass(frozen=True)
class NodeFiles:
    """A node's files on the host, under build/<cluster>/local/<node>/."""

    folder: Path

    @property
    def disk(self) -> Path:
        return self.folder / "disk.qcow2"

    @property
    def seed(self) -> Path:
        return self.folder / "seed.iso"

    @property
    def console(self) -> Path:
        return self.folder / "console.log"

    @property
    def pidfile(self) -> Path:
        return self.folder / "qemu.pid"

    @property
    def log(self) -> Path:
        return self.folder / "qemu.log"


def marker(cluster: str, node: str) -> str:
    """The QEMU `-name` of a master: how a PID is recognised as ours."""
    return f"bakery-{cluster}-{node}"


def hub_marker(cluster: str) -> str:
    return f"bakery-{cluster}-hub"


def _opt(value: str) -> str:
    """QEMU option values escape commas by doubling them."""
    return value.replace(",", ",,")


def node_argv(
    cluster: str,
    node: NodeNet,
    files: NodeFiles,
    boot: Boot,
    net: NetPlan,
    *,
    memory_mb: int,
    cpus: int,
    accel: str,
    discovery: bool = False,
    python: str = sys.executable,
) -> list[str]:
    """The QEMU command line of one master. `discovery` adds the guestfwd to the host's discovery etcd."""
    user = [
        "user",
        "id=host",
        "restrict=on",
        "ipv6=off",
        f"net={USER_NET}",
        f"hostfwd=tcp:{HOST}:{node.ssh_port}-{node.address}:22",
        f"hostfwd=tcp:{HOST}:{node.etcd_port}-{node.address}:{net.guest_etcd_port}",
        f"hostfwd=tcp:{HOST}:{node.api_port}-{node.address}:{net.guest_api_port}",
    ]
    if discovery:
        relay = f"{python} -m bakery.providers.local.relay {HOST} {net.discovery_port}"
        user.append(f"guestfwd=tcp:{GUEST_DISCOVERY}:{GUEST_DISCOVERY_PORT}-cmd:{_opt(relay)}")
    return [
        QEMU,
        "-name", marker(cluster, node.name),
        "-machine", "pc",
        "-accel", accel,
        "-cpu", "host" if accel == "kvm" else "qemu64",
        "-m", str(memory_mb),
        "-smp", str(cpus),
        "-nodefaults",
        "-display", "none",
        "-serial", f"file:{_opt(str(files.console))}",
        "-kernel", str(boot.kernel),
        "-initrd", str(boot.initrd),
        "-append", KERNEL_APPEND,
        "-drive", f"file={_opt(str(files.disk))},if=virtio,format=qcow2",
        "-drive", f"file={_opt(str(files.seed))},if=virtio,format=raw,readonly=on",
        "-netdev", f"socket,id=private,connect={HOST}:{node.hub_port}",
        "-device", f"virtio-net-pci,netdev=private,mac={node.private_mac}",
        "-netdev", ",".join(user),
        "-device", f"virtio-net-pci,netdev=host,mac={node.user_mac}",
    ]


def hub_argv(cluster: str, net: NetPlan) -> list[str]:
    """One guestless QEMU whose hub joins every node's socket: the private network."""
    argv = [QEMU, "-name", hub_marker(cluster), "-machine", "none", "-nodefaults", "-display", "none"]
    for n in net.nodes:
        argv += [
            "-netdev", f"socket,id=p{n.index},listen={HOST}:{n.hub_port}",
            "-netdev", f"hubport,id=h{n.index},hubid=0,netdev=p{n.index}",
        ]
    return argv


# A boot sector that writes "K" to the first serial port and halts: if it prints
# under `-accel kvm`, KVM really runs guests (here /dev/kvm opens but guests hang).
_PROBE = bytes([0xBA, 0xF8, 0x03, 0xB0, 0x4B, 0xEE, 0xFA, 0xF4, 0xEB, 0xFD])


def _readable(fd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    return bool(poller.poll(timeout * 1000))


def kvm_works(workdir: Path, timeout: float = 2.0) -> bool:
    """True when /dev/kvm is usable and a guest really runs on it."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    probe = workdir / "kvm-probe.img"
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_bytes(_PROBE + bytes(510 - len(_PROBE)) + b"\x55\xaa")
    argv = [QEMU, "-accel", "kvm", "-machine", "pc", "-m", "16", "-nodefaults", "-display", "none",
            "-serial", "stdio", "-drive", f"file={_opt(str(probe))},format=raw,if=floppy"]
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return False
    try:
        assert p.stdout is not None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            # poll, not select(): select() refuses descriptors numbered above 1023
            if not _readable(p.stdout.fileno(), left):
                break
            chunk = os.read(p.stdout.fileno(), 64)
            if b"K" in chunk:
                return True
            if not chunk:
                break
        return False
    finally:
        p.kill()
        p.wait()
        probe.unlink(missing_ok=True)


def accelerator(workdir: Path) -> str:
    """`kvm` when it works, else `tcg`; BAKERY_QEMU_ACCEL=kvm|tcg overrides the probe."""
    forced = os.environ.get("BAKERY_QEMU_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    return "kvm" if kvm_works(workdir) else "tcg"
