"""How a local master runs: `local.runtime: container` (systemd-nspawn, the default) or
`vm` (QEMU). provider.py does the cluster's part (load balancer, discovery, waiting,
status, the supervisor) the same way for both; a Runtime does the machine's part.

    container  bridge + one netns per master; etcd reached at the plan's address;
               a shell through nsenter; cloud-init's result read from the overlay
    vm         the QEMU hub and guests; etcd and ssh forwarded to 127.0.0.1
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bakery.errors import ProviderError
from bakery.providers.base import Progress
from bakery.providers.local import bridge, container, proc, seed, ssh, vm
from bakery.providers.local.net import (
    GUEST_DISCOVERY,
    GUEST_DISCOVERY_PORT,
    HOST,
    NetPlan,
    NodeNet,
    is_listening,
)
from bakery.spec import LocalSpec


@dataclass(frozen=True)
class Image:
    """What the bake exported: the qcow2 (vm), its kernel and initrd, the unpacked root (container)."""

    disk: Path
    kernel: Path
    initrd: Path
    root: Path


class Runtime(Protocol):
    kind: str
    tools: dict[str, str]  # executable -> Debian package

    def host_ports(self) -> tuple[int, ...]: ...
    def owned_ports(self) -> set[int]: ...
    def prepare(self, created: list[str], existing: list[str]) -> None: ...
    def etcd_url(self, n: NodeNet) -> str: ...
    def backend(self, n: NodeNet) -> tuple[str, int]: ...
    def api_backend(self, n: NodeNet) -> tuple[str, int]: ...
    def discovery_host(self) -> tuple[str, int]: ...
    def pid(self, name: str) -> int | None: ...
    def console(self, name: str) -> Path: ...
    def image_of(self, name: str) -> Path | None: ...
    def launch(self, n: NodeNet, image: Image, user_data: bytes, *, fresh: bool, discovery: bool) -> int: ...
    def stop(self, name: str) -> int | None: ...
    def shell_argv(self, name: str, command: Sequence[str] = (), *, batch: bool = False) -> list[str]: ...
    def cloud_init_result(self, name: str) -> str: ...
    def down(self, purge: bool, nodes: Sequence[NodeNet]) -> list[str]: ...


def _result(text: str) -> str:
    """cloud-init's result.json -> done | error: <first> | unknown."""
    try:
        errors = json.loads(text)["v1"]["errors"]
    except (ValueError, KeyError, TypeError):
        return "unknown"
    return f"error: {errors[0]}" if errors else "done"


class ContainerRuntime:
    kind = "container"
    tools = {container.NSPAWN: "systemd-container", "nsenter": "util-linux", "ip": "iproute2", "mount": "mount",
             "sysctl": "procps", "haproxy": "haproxy"}

    def __init__(self, cluster: str, root: Path, net: NetPlan, subnet: str, progress: Progress,
                 store: Path | None = None) -> None:
        self.cluster = cluster
        self.root = root
        self.net = net
        self.progress = progress
        self.br = bridge.bridge_net(cluster, subnet, {n.address for n in net.nodes})
        # user_data: store: the host folder store, bind-mounted at the same path so the
        # store URL in the small user-data names it inside the container too
        self.store = store

    def files(self, name: str) -> container.ContainerFiles:
        return container.ContainerFiles(self.root / name)

    def netns(self, n: NodeNet) -> str:
        return self.br.netns(self.cluster, n.index)

    def host_ports(self) -> tuple[int, ...]:
        return (self.net.lb_port, self.net.discovery_port, self.net.discovery_peer_port, self.net.api_lb_port)

    def owned_ports(self) -> set[int]:
        return set()

    def prepare(self, created: list[str], existing: list[str]) -> None:
        made = bridge.ensure_bridge(self.br)
        (created if made else existing).append(f"bridge {self.br.bridge}")
        self.progress("network", "created" if made else "exists",
                      f"bridge {self.br.bridge} {self.br.host_address}/{self.br.prefix}, forwarding off")

    def etcd_url(self, n: NodeNet) -> str:
        return f"https://{n.address}:{self.net.guest_etcd_port}"

    def backend(self, n: NodeNet) -> tuple[str, int]:
        return n.address, self.net.guest_etcd_port

    def api_backend(self, n: NodeNet) -> tuple[str, int]:
        return n.address, self.net.guest_api_port

    def discovery_host(self) -> tuple[str, int]:
        return self.br.host_address, self.net.discovery_port

    def pid(self, name: str) -> int | None:
        return proc.running(self.files(name).pidfile)

    def console(self, name: str) -> Path:
        return self.files(name).console

    def image_of(self, name: str) -> Path | None:
        link = self.files(name).image_link
        return link.resolve() if link.is_symlink() else None

    def launch(self, n: NodeNet, image: Image, user_data: bytes, *, fresh: bool, discovery: bool) -> int:
        f = self.files(n.name)
        f.folder.mkdir(parents=True, exist_ok=True)
        f.folder.chmod(0o700)  # the seed carries the node's private keys
        self.stop(n.name)
        container.unmount_root(f)
        if fresh:
            container.wipe(f)
        bridge.ensure_node_netns(self.br, self.netns(n), self.br.veth(n.index), f"{n.address}/{n.prefix}", n.private_mac)
        container.mount_root(f, image.root)
        container.write_seed(f, user_data=user_data, meta=seed.meta_data(self.cluster, n, user_data),
                             network=seed.container_network_config(n), vendor=seed.container_vendor_data())
        if f.console.exists():
            f.console.replace(f.console.with_name("console.log.1"))
        binds = ()
        if self.store is not None:
            self.store.mkdir(mode=0o700, parents=True, exist_ok=True)
            binds = (self.store,)
        argv = container.nspawn_argv(self.cluster, n.name, f, self.netns(n), binds=binds)
        return proc.start(argv, pidfile=f.pidfile, marker=container.machine_name(self.cluster, n.name), log=f.console)

    def stop(self, name: str) -> int | None:
        # nspawn passes SIGTERM on as the container's poweroff (--kill-signal)
        return proc.stop(self.files(name).pidfile, timeout=30)

    def shell_argv(self, name: str, command: Sequence[str] = (), *, batch: bool = False) -> list[str]:
        pid = self.pid(name)
        leader = container.leader_pid(pid) if pid else None
        if leader is None:
            raise ProviderError(f"{name}: its container is not running (`bakery up` starts it)")
        return container.nsenter_argv(leader, list(command) or None)

    def cloud_init_result(self, name: str) -> str:
        # /run/cloud-init/result.json links to this file; the overlay shows it to the host
        path = self.files(name).root / "var/lib/cloud/data/result.json"
        if not container.is_mounted(self.files(name).root):
            return "-"
        try:
            return _result(path.read_text())
        except FileNotFoundError:
            return "running"

    def retire(self, n: NodeNet) -> None:
        """Delete a stopped master's machine: its overlay, namespace and veth. The folder
        keeps its console logs (console.log.retired) for whoever reads about it later."""
        f = self.files(n.name)
        container.unmount_root(f)
        container.wipe(f)
        bridge.remove_node_netns(self.netns(n), self.br.veth(n.index))
        for name in ("console.log", "console.log.1"):
            if (f.folder / name).exists():
                (f.folder / name).replace(f.folder / f"{name}.retired")

    def down(self, purge: bool, nodes: Sequence[NodeNet]) -> list[str]:
        done: list[str] = []
        for n in nodes:
            f = self.files(n.name)
            if container.unmount_root(f):
                done.append(f"overlay mount {f.root}")
            if bridge.remove_node_netns(self.netns(n), self.br.veth(n.index)):
                done.append(f"netns {self.netns(n)}")
        if bridge.remove_bridge(self.br):
            done.append(f"bridge {self.br.bridge}")
            self.progress("network", "deleted", self.br.bridge)
        return done


class VmRuntime:
    kind = "vm"
    tools = {vm.QEMU: "qemu-system-x86", "qemu-img": "qemu-utils", "cloud-localds": "cloud-image-utils",
             "haproxy": "haproxy", "ssh-keygen": "openssh-client", "ssh": "openssh-client"}

    def __init__(self, cluster: str, root: Path, net: NetPlan, local: LocalSpec, progress: Progress) -> None:
        self.cluster = cluster
        self.root = root
        self.net = net
        self.local = local
        self.progress = progress
        self.accel: str | None = None

    def files(self, name: str) -> vm.NodeFiles:
        return vm.NodeFiles(self.root / name)

    @property
    def hub(self) -> Path:
        return self.root / "hub"

    @property
    def ssh_dir(self) -> Path:
        return self.root / "ssh"

    def host_ports(self) -> tuple[int, ...]:
        return self.net.host_ports

    def owned_ports(self) -> set[int]:
        owned: set[int] = set()
        if proc.running(self.hub / "pid"):
            owned |= {n.hub_port for n in self.net.nodes}
        for n in self.net.nodes:
            if self.pid(n.name):
                owned |= {n.ssh_port, n.etcd_port, n.api_port}
        return owned

    def prepare(self, created: list[str], existing: list[str]) -> None:
        ssh.ensure_key(self.ssh_dir)
        pidfile = self.hub / "pid"
        if proc.running(pidfile):
            existing.append("network hub")
            return
        # VMs still connected to a hub that died have lost their network: restart them.
        for n in self.net.nodes:
            if proc.stop(self.files(n.name).pidfile):
                self.progress(f"master {n.name}", "stopped", "its network hub was gone")
        log = self.hub / "qemu.log"
        proc.start(vm.hub_argv(self.cluster, self.net), pidfile=pidfile, marker=vm.hub_marker(self.cluster), log=log)
        ports = [n.hub_port for n in self.net.nodes]
        proc.until(lambda: all(is_listening(p) for p in ports), 15, "the network hub", pidfile, log)
        created.append("network hub")
        self.progress("network", "created", f"hub on {HOST}:{ports[0]}-{ports[-1]}")

    def etcd_url(self, n: NodeNet) -> str:
        return f"https://{HOST}:{n.etcd_port}"

    def backend(self, n: NodeNet) -> tuple[str, int]:
        return HOST, n.etcd_port

    def api_backend(self, n: NodeNet) -> tuple[str, int]:
        return HOST, n.api_port

    def discovery_host(self) -> tuple[str, int]:
        return GUEST_DISCOVERY, GUEST_DISCOVERY_PORT

    def pid(self, name: str) -> int | None:
        return proc.running(self.files(name).pidfile)

    def console(self, name: str) -> Path:
        return self.files(name).console

    def image_of(self, name: str) -> Path | None:
        return _backing_file(self.files(name).disk)

    def launch(self, n: NodeNet, image: Image, user_data: bytes, *, fresh: bool, discovery: bool) -> int:
        files = self.files(n.name)
        self.stop(n.name)
        if fresh:
            files.disk.unlink(missing_ok=True)  # a new machine: a fresh overlay of the current image
        files.folder.mkdir(parents=True, exist_ok=True)
        files.folder.chmod(0o700)  # the seed carries the node's private keys
        if not files.disk.exists():
            tmp = files.folder / ".disk.qcow2.new"
            r = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.disk), "-F", "qcow2", str(tmp)],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                tmp.unlink(missing_ok=True)
                raise ProviderError(f"qemu-img create {files.disk} failed: {r.stderr.strip()}")
            tmp.replace(files.disk)
            (files.folder / "known_hosts").unlink(missing_ok=True)  # a new disk is a new host key
        key = ssh.ensure_key(self.ssh_dir)
        seed.build(files.folder, files.seed, user_data=user_data, meta=seed.meta_data(self.cluster, n, user_data),
                   network=seed.network_config(n), vendor=seed.vendor_data(ssh.public_key(key)))
        if files.console.exists():
            files.console.replace(files.console.with_name("console.log.1"))
        if self.accel is None:
            self.accel = vm.accelerator(self.root)
            self.progress("qemu", "accelerator", self.accel)
        argv = vm.node_argv(self.cluster, n, files, vm.Boot(image.disk, image.kernel, image.initrd), self.net,
                            memory_mb=self.local.memory_mb, cpus=self.local.cpus, accel=self.accel, discovery=discovery)
        return proc.start(argv, pidfile=files.pidfile, marker=vm.marker(self.cluster, n.name), log=files.log)

    def stop(self, name: str) -> int | None:
        return proc.stop(self.files(name).pidfile)

    def shell_argv(self, name: str, command: Sequence[str] = (), *, batch: bool = False) -> list[str]:
        key = self.ssh_dir / "id_ed25519"
        if not key.exists():
            raise ProviderError(f"no SSH key at {key}: run `bakery up` first")
        remote = [shlex.join(command)] if batch and command else list(command)
        files = self.files(name)
        return ssh.argv(key, self.net.node(name).ssh_port, files.folder / "known_hosts", name, remote, batch=batch)

    def cloud_init_result(self, name: str) -> str:
        """done, running, error: <first error>, or unreachable: <why> (asked over ssh)."""
        if not self.pid(name):
            return "-"
        argv = self.shell_argv(name, ["sh", "-c", "cat /run/cloud-init/result.json 2>/dev/null || echo running"], batch=True)
        try:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return "unreachable: ssh did not answer within 30s"
        if r.returncode != 0:
            return f"unreachable: {r.stderr.strip()[-200:] or f'ssh exit {r.returncode}'}"
        text = r.stdout.strip()
        return "running" if text == "running" else _result(text)

    def down(self, purge: bool, nodes: Sequence[NodeNet]) -> list[str]:
        done = []
        pid = proc.stop(self.hub / "pid")
        if pid:
            done.append(f"network hub (pid {pid})")
            self.progress("network hub", "stopped")
        for n in nodes:
            folder = self.files(n.name).folder
            for name in ("seed.iso", "user-data", "meta-data", "network-config", "vendor-data"):
                (folder / name).unlink(missing_ok=True)
        shutil.rmtree(self.hub, ignore_errors=True)
        return done


def _backing_file(disk: Path) -> Path | None:
    """The image a node's overlay is backed by, or None when it has no disk yet."""
    if not disk.exists():
        return None
    r = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(disk)], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise ProviderError(f"qemu-img info {disk}: {r.stderr.strip()}")
    info = json.loads(r.stdout)
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    return Path(backing).resolve() if backing else None
