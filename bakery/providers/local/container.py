"""systemd-nspawn for the local provider: a master as a container booted from the baked root.

Each master gets, under build/<cluster>/local/<node>/:

    overlay/upper, overlay/work   its copy-on-write layer over the image's root/
    root/                         the overlayfs mount nspawn boots (lower: the image's root)
    console.log                   nspawn's output: the container's console

The bake keeps the unpacked root tree beside the qcow2 (packer/scripts/local/disk.sh), so
the container needs no loop device or qemu-nbd: overlayfs over a directory, mounted in
the host's mount namespace (it outlives bakery, like the container) and unmounted by
`down`. A fresh upper layer is a fresh machine. The NoCloud seed is written into the
container's root (/var/lib/cloud/seed/nocloud/), /etc/machine-id is empty so systemd
makes one at first boot.

The container joins a network namespace that bridge.py prepared (the plan's address,
no default route). It is not registered with machined (there is none here):
`--register=no --keep-unit`; bakery finds it by the nspawn PID it recorded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bakery.errors import ProviderError
from bakery.output import atomic_write

NSPAWN = "systemd-nspawn"
SEED_DIR = "var/lib/cloud/seed/nocloud"


@dataclass(frozen=True)
class ContainerFiles:
    folder: Path

    @property
    def upper(self) -> Path:
        return self.folder / "overlay" / "upper"

    @property
    def work(self) -> Path:
        return self.folder / "overlay" / "work"

    @property
    def root(self) -> Path:
        return self.folder / "root"

    @property
    def console(self) -> Path:
        return self.folder / "console.log"

    @property
    def pidfile(self) -> Path:
        return self.folder / "nspawn.pid"

    @property
    def image_link(self) -> Path:
        """Which image root the upper layer was made over (a symlink)."""
        return self.folder / "overlay" / "image"


def machine_name(cluster: str, node: str) -> str:
    """The nspawn machine name: how a PID is recognised as ours (proc.py marker)."""
    return f"bakery-{cluster}-{node}"


def nspawn_argv(cluster: str, node: str, files: ContainerFiles, netns: str, *, binds: Sequence[Path] = ()) -> list[str]:
    """The systemd-nspawn command line of one master; `binds` are host folders mounted at
    the same path inside (the folder state store). Pure."""
    return [
        NSPAWN,
        "--quiet",
        "--boot",
        f"--machine={machine_name(cluster, node)}",
        f"--directory={files.root}",
        "--register=no",
        "--keep-unit",
        f"--network-namespace-path=/run/netns/{netns}",
        "--console=read-only",
        "--link-journal=no",
        "--resolv-conf=off",
        "--timezone=off",
        "--kill-signal=SIGRTMIN+3",
        *(f"--bind={b}" for b in binds),
    ]


def is_mounted(path: Path) -> bool:
    target = str(path.resolve()) if path.exists() else str(path)
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 1 and fields[1] == target:
            return True
    return False


def mount_root(files: ContainerFiles, image_root: Path) -> None:
    """overlayfs: the image's root read-only below, the node's upper layer above."""
    if is_mounted(files.root):
        return
    for d in (files.upper, files.work, files.root):
        d.mkdir(parents=True, exist_ok=True)
    link = files.image_link
    if link.is_symlink():
        link.unlink()
    link.symlink_to(image_root)
    opts = f"lowerdir={image_root},upperdir={files.upper},workdir={files.work}"
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(files.root)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise ProviderError(f"mount overlay on {files.root} failed: {r.stderr.strip()}")


def unmount_root(files: ContainerFiles) -> bool:
    if not is_mounted(files.root):
        return False
    r = subprocess.run(["umount", str(files.root)], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise ProviderError(f"umount {files.root} failed: {r.stderr.strip()}")
    return True


def wipe(files: ContainerFiles) -> None:
    """A new machine: drop the upper layer (the root must be unmounted)."""
    if is_mounted(files.root):
        raise ProviderError(f"{files.root} is still mounted")
    shutil.rmtree(files.folder / "overlay", ignore_errors=True)


def write_seed(files: ContainerFiles, *, user_data: bytes, meta: bytes, network: bytes, vendor: bytes) -> None:
    """The NoCloud seed and an empty machine-id, inside the mounted root."""
    seed = files.root / SEED_DIR
    seed.mkdir(parents=True, exist_ok=True)
    seed.chmod(0o700)  # the user-data carries the node's private keys
    for name, content, mode in (("user-data", user_data, 0o600), ("meta-data", meta, 0o644),
                                ("network-config", network, 0o644), ("vendor-data", vendor, 0o644)):
        atomic_write(seed / name, content, mode)
    atomic_write(files.root / "etc/machine-id", b"", 0o444)


def leader_pid(nspawn_pid: int) -> int | None:
    """The container's init: the descendant of nspawn that is PID 1 in its own PID namespace."""
    children: dict[int, list[int]] = {}
    nspid: dict[int, list[str]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            status = Path(f"/proc/{d}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        with contextlib.suppress(KeyError, ValueError):
            children.setdefault(int(fields["PPid"]), []).append(int(d))
            nspid[int(d)] = fields["NSpid"].split()
    queue = list(children.get(nspawn_pid, []))
    while queue:
        pid = queue.pop(0)
        ids = nspid.get(pid, [])
        if len(ids) > 1 and ids[-1] == "1":
            return pid
        queue += children.get(pid, [])
    return None


def nsenter_argv(leader: int, command: list[str] | None = None) -> list[str]:
    """Run `command` (default: a login shell) as root inside the container's namespaces."""
    env = ["/usr/bin/env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME=/root", f"TERM={os.environ.get('TERM', 'dumb')}", "LANG=C.UTF-8"]
    return ["nsenter", f"--target={leader}", "--mount", "--uts", "--ipc", "--net", "--pid", "--",
            *env, *(command or ["/bin/bash", "-l"])]
