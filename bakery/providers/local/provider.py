"""The local provider: masters as QEMU VMs on this machine, HAProxy as their load balancer.

`up` converges, in order: the discovery etcd (bootstrap `discovery` without a URL),
HAProxy, the rendered user-data, the network hub, then one VM per master from a
copy-on-write overlay of the baked disk and its NoCloud seed. It follows each node
through its console (booting, cloud-init stages) and etcd (member healthy), and
returns once etcd answers through the load balancer with every member.

Everything lives under build/<cluster>/local/ and every process is recorded by PID
(proc.py): a second `up` finds the running processes and starts only what is
missing; `down` stops them by PID and removes what `up` made, keeping the disks and
console logs unless `purge`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bakery import state, topology
from bakery.errors import EtcdError, ProviderError
from bakery.etcd import TLS, Client
from bakery.output import atomic_write
from bakery.providers.base import (
    ClusterStatus,
    LBAddress,
    NodeStatus,
    Progress,
    RenderCallback,
    RenderedNode,
    UpResult,
)
from bakery.providers.local import console, discovery, lb, proc, seed, ssh, vm
from bakery.providers.local.net import HOST, NetPlan, is_listening, listening_ports, net_plan
from bakery.spec import ClusterSpec, LocalSpec
from bakery.state import ClusterPaths
from bakery.store import Store, location, open_store

UP_TIMEOUT = 900.0  # seconds; three VMs under TCG on two busy cores take 1-3 minutes
STATE_BY = "bakery-local"  # marks the state.json sections this provider owns


@dataclass(frozen=True)
class Layout:
    """Every file of the local provider, under build/<cluster>/local/."""

    root: Path

    def node(self, name: str) -> vm.NodeFiles:
        return vm.NodeFiles(self.root / name)

    @property
    def ssh(self) -> Path:
        return self.root / "ssh"

    @property
    def hub(self) -> Path:
        return self.root / "hub"

    @property
    def lb(self) -> Path:
        return self.root / "lb"

    @property
    def haproxy_cfg(self) -> Path:
        return self.lb / "haproxy.cfg"

    @property
    def stats_socket(self) -> Path:
        return self.lb / "stats.sock"

    @property
    def discovery(self) -> Path:
        return self.root / "discovery"


class LocalProvider:
    name = "local"

    def __init__(self, spec: ClusterSpec, paths: ClusterPaths, progress: Progress, *, timeout: float = UP_TIMEOUT) -> None:
        self.spec = spec
        self.paths = paths
        self.progress = progress
        self.timeout = timeout
        local = spec.provider_spec
        assert isinstance(local, LocalSpec)
        self.local = local
        self.plan = topology.plan(spec, lb_ips=(HOST,))
        self.net: NetPlan = net_plan(spec, self.plan)
        # absolute: HAProxy, QEMU and the seed tools get these paths, and HAProxy reads
        # "dir/stats.sock" in a relative path as a host and a missing port
        self.layout = Layout(paths.local.resolve())

    # -- what other commands use ------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return self.net.lb_endpoint

    def tls(self) -> TLS:
        """The host's etcd client identity: the PKI's healthcheck client."""
        pki = self.paths.pki
        return TLS(ca=pki / "etcd/ca.crt", cert=pki / "etcd/healthcheck-client.crt", key=pki / "etcd/healthcheck-client.key")

    def node_endpoint(self, name: str) -> str:
        """A master's own etcd client port, forwarded to 127.0.0.1."""
        return f"https://{HOST}:{self.net.node(name).etcd_port}"

    def console_log(self, name: str) -> Path:
        self._known(name)
        return self.layout.node(name).console

    def ssh_argv(self, name: str, command: Sequence[str] = (), *, batch: bool = False) -> list[str]:
        """ssh as root into master `name` with bakery's key."""
        self._known(name)
        key = self.layout.ssh / "id_ed25519"
        if not key.exists():
            raise ProviderError(f"no SSH key at {key}: run `bakery up` first")
        files = self.layout.node(name)
        return ssh.argv(key, self.net.node(name).ssh_port, files.folder / "known_hosts", name, list(command), batch=batch)

    def ssh_run(self, name: str, command: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `command` (an argv, quoted here for the remote shell) on master `name` as root."""
        argv = self.ssh_argv(name, [shlex.join(command)], batch=True)
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ProviderError(f"{name}: ssh did not answer within {timeout:.0f}s") from None

    def vm_pid(self, name: str) -> int | None:
        return proc.running(self.layout.node(name).pidfile)

    # -- up -----------------------------------------------------------------------------

    def up(self, render: RenderCallback, *, wait: bool = True) -> UpResult:
        result = UpResult(endpoint=self.endpoint)
        self._check_tools()
        boot = self._boot_image()
        self._check_ports()
        key = ssh.ensure_key(self.layout.ssh)
        uses_discovery = self._ensure_discovery(result)
        self._ensure_lb(result)
        rendered = render(LBAddress(ips=(HOST,)))
        self._ensure_hub(result)
        accel: str | None = None
        started: list[str] = []
        for n in self.net.nodes:
            step = f"master {n.name}"
            files = self.layout.node(n.name)
            backing = _backing_file(files.disk)
            if backing is not None and backing != boot.disk.resolve():
                result.drift.append(f"{n.name} boots {backing}, not the current image {boot.disk}: "
                                    "`bakery down --purge` then `bakery up` to boot the new one")
            if proc.running(files.pidfile):
                result.existing.append(f"vm {n.name}")
                self.progress(step, "exists", f"pid {proc.running(files.pidfile)}")
                continue
            if accel is None:
                accel = vm.accelerator(self.layout.root)
                self.progress("qemu", "accelerator", accel)
            self._prepare_node(n.name, boot, rendered[n.name].user_data.plain, ssh.public_key(key))
            argv = vm.node_argv(self.plan.name, n, files, boot, self.net, memory_mb=self.local.memory_mb,
                                cpus=self.local.cpus, accel=accel, discovery=uses_discovery)
            pid = proc.start(argv, pidfile=files.pidfile, marker=vm.marker(self.plan.name, n.name), log=files.log)
            result.created.append(f"vm {n.name}")
            started.append(n.name)
            self.progress(step, "booting", f"pid {pid}, ssh {HOST}:{n.ssh_port}, etcd {HOST}:{n.etcd_port}")
        if accel is not None:
            state.update(self.paths, local={"accel": accel, "endpoint": self.endpoint})
        if wait:
            self._wait(started)
        return result

    def _check_tools(self) -> None:
        tools = {vm.QEMU: "qemu-system-x86", "qemu-img": "qemu-utils", "cloud-localds": "cloud-image-utils",
                 "haproxy": "haproxy", "ssh-keygen": "openssh-client"}
        missing = [f"{t} (Debian {pkg})" for t, pkg in tools.items() if shutil.which(t) is None]
        if missing:
            raise ProviderError(f"the local provider needs {', '.join(missing)}: run `make setup-system`")

    def _boot_image(self) -> vm.Boot:
        """The baked disk, kernel and initrd: local.image (kernel beside it), else images.json."""
        from bakery.bake import images

        if self.local.image:
            disk = Path(self.local.image).resolve()
            boot = vm.Boot(disk, disk.parent / "vmlinuz", disk.parent / "initrd.img")
            source = "local.image"
        else:
            rec = images.current(self.paths.images, self.plan.name, "local")
            if rec is None:
                raise ProviderError(f"no local image recorded in {self.paths.images}: run `bakery bake -f <spec>` "
                                    "(or set local.image to a qcow2 with vmlinuz and initrd.img beside it)")
            boot = vm.Boot(Path(rec["disk"]), Path(rec["kernel"]), Path(rec["initrd"]))
            source = str(self.paths.images)
        for what, path in (("disk", boot.disk), ("kernel", boot.kernel), ("initrd", boot.initrd)):
            if not path.is_file():
                raise ProviderError(f"the image's {what} {path} (from {source}) is missing: bake again")
        return boot

    def _owned_ports(self) -> set[int]:
        """Ports that our own running processes hold (they may be listening)."""
        owned: set[int] = set()
        if proc.running(self.layout.hub / "pid"):
            owned |= {n.hub_port for n in self.net.nodes}
        if proc.running(self.layout.lb / "pid"):
            owned.add(self.net.lb_port)
        if proc.running(self.layout.discovery / "pid"):
            owned |= {self.net.discovery_port, self.net.discovery_peer_port}
        for n in self.net.nodes:
            if proc.running(self.layout.node(n.name).pidfile):
                owned |= {n.ssh_port, n.etcd_port}
        return owned

    def _check_ports(self) -> None:
        taken = {port for addr, port in listening_ports() if addr in (HOST, "0.0.0.0")}
        busy = sorted((taken & set(self.net.host_ports)) - self._owned_ports())
        if busy:
            raise ProviderError(
                f"{HOST} port(s) {', '.join(map(str, busy))} are in use by another program; "
                f"set local.port_base (now {self.local.port_base}) to a free range of {max(self.net.host_ports) - self.net.lb_port + 1} ports"
            )

    def _ensure_discovery(self, result: UpResult) -> bool:
        """Start the host's discovery etcd and record a token, when the bootstrap needs one."""
        if self.spec.etcd.bootstrap != "discovery" or self.spec.etcd.discovery_url:
            return False
        folder = self.layout.discovery
        pidfile = folder / "pid"
        endpoint = self.net.discovery_endpoint
        if proc.running(pidfile):
            result.existing.append("discovery etcd")
            self.progress("discovery", "exists", endpoint)
        else:
            if not Path(discovery.ETCD).exists():
                raise ProviderError(f"{discovery.ETCD} not found: the discovery etcd is Debian's etcd-server (make setup-system)")
            data = folder / "data"
            data.mkdir(parents=True, exist_ok=True)
            data.chmod(0o700)
            argv = discovery.argv(self.plan.name, self.net, data)
            proc.start(argv, pidfile=pidfile, marker=str(data), log=folder / "etcd.log")
            self._until(lambda: discovery.healthy(endpoint), 60, f"discovery etcd at {endpoint}", pidfile, folder / "etcd.log")
            result.created.append("discovery etcd")
            self.progress("discovery", "created", endpoint)
        recorded = state.load(self.paths).get("discovery", {})
        token = recorded.get("token") if recorded.get("by") == STATE_BY else None
        if token is None or not discovery.token_exists(endpoint, token):
            token = discovery.new_token(endpoint, self.spec.masters)
            state.update(self.paths, discovery={"by": STATE_BY, "token": token, "url": discovery.guest_url(token)})
            self.progress("discovery", "token", f"{self.spec.masters} members")
        return True

    def _ensure_lb(self, result: UpResult) -> None:
        pidfile = self.layout.lb / "pid"
        if proc.running(pidfile):
            result.existing.append("haproxy")
            self.progress("lb", "exists", self.endpoint)
            return
        cfg = self.layout.haproxy_cfg
        atomic_write(cfg, lb.config(self.plan.name, self.net, self.layout.stats_socket))
        check = subprocess.run(["haproxy", "-c", "-q", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise ProviderError(f"{cfg}: haproxy rejects the configuration: {check.stderr.strip()[-300:]}")
        self.layout.stats_socket.unlink(missing_ok=True)
        proc.start(lb.argv(cfg), pidfile=pidfile, marker=str(cfg), log=self.layout.lb / "haproxy.log")
        self._until(lambda: is_listening(self.net.lb_port), 15, f"haproxy on {HOST}:{self.net.lb_port}", pidfile,
                    self.layout.lb / "haproxy.log")
        result.created.append("haproxy")
        self.progress("lb", "created", self.endpoint)

    def _ensure_hub(self, result: UpResult) -> None:
        pidfile = self.layout.hub / "pid"
        if proc.running(pidfile):
            result.existing.append("network hub")
            return
        # VMs still connected to a hub that died have lost their network: restart them.
        for n in self.net.nodes:
            if proc.stop(self.layout.node(n.name).pidfile):
                self.progress(f"master {n.name}", "stopped", "its network hub was gone")
        log = self.layout.hub / "qemu.log"
        proc.start(vm.hub_argv(self.plan.name, self.net), pidfile=pidfile, marker=vm.hub_marker(self.plan.name), log=log)
        ports = [n.hub_port for n in self.net.nodes]
        self._until(lambda: all(is_listening(p) for p in ports), 15, "the network hub", pidfile, log)
        result.created.append("network hub")
        self.progress("network", "created", f"hub on {HOST}:{ports[0]}-{ports[-1]}, {self.plan.nodes[0].subnet}")

    def _prepare_node(self, name: str, boot: vm.Boot, user_data: bytes, public_key: str) -> None:
        files = self.layout.node(name)
        files.folder.mkdir(parents=True, exist_ok=True)
        files.folder.chmod(0o700)  # the seed carries the node's private keys
        if not files.disk.exists():
            tmp = files.folder / ".disk.qcow2.new"
            r = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(boot.disk), "-F", "qcow2", str(tmp)],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                tmp.unlink(missing_ok=True)
                raise ProviderError(f"qemu-img create {files.disk} failed: {r.stderr.strip()}")
            tmp.replace(files.disk)
            (files.folder / "known_hosts").unlink(missing_ok=True)  # a new disk is a new host key
        n = self.net.node(name)
        seed.build(files.folder, files.seed, user_data=user_data, meta=seed.meta_data(self.plan.name, n, user_data),
                   network=seed.network_config(n), vendor=seed.vendor_data(public_key))
        if files.console.exists():
            files.console.replace(files.console.with_name("console.log.1"))

    def _until(self, ok: Callable[[], bool], timeout: float, what: str, pidfile: Path, log: Path) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            if not proc.running(pidfile):
                raise ProviderError(f"{what} exited at start: {_tail(log)} (log: {log})")
            if time.monotonic() > deadline:
                raise ProviderError(f"{what} not ready after {timeout:.0f}s (log: {log})")
            time.sleep(0.2)

    def _wait(self, started: Sequence[str]) -> None:
        """Follow every node to a healthy etcd through the load balancer.

        A node's etcd is probed only once cloud-init's network stage began (it writes
        the files; etcd can start from then on): before that, a forwarded port accepts
        and then stalls, and each probe would cost its whole timeout.
        """
        t0 = time.monotonic()
        deadline = t0 + self.timeout
        want = len(self.net.nodes)
        healthy: set[str] = set()
        with Client([self.endpoint], tls=self.tls(), timeout=2) as client, ThreadPoolExecutor(max_workers=want) as pool:
            while True:
                probe = []
                for n in self.net.nodes:
                    files = self.layout.node(n.name)
                    if not proc.running(files.pidfile):
                        raise ProviderError(f"{n.name}: QEMU exited: {_tail(files.log)} (console: {files.console})")
                    boot = _read_boot(files.console) if n.name in started else None
                    if boot is not None:
                        self.progress(f"master {n.name}", boot.phase)
                    if n.name not in healthy and (boot is None or boot.cloud_init not in (None, "init-local")):
                        probe.append(n.name)
                # in parallel: a member that is not up yet costs its probe's whole timeout
                for name, ok in zip(probe, pool.map(lambda name: client.health(self.node_endpoint(name)), probe), strict=True):
                    if ok:
                        healthy.add(name)
                        self.progress(f"master {name}", "etcd member", "healthy")
                ready = len(probe) + len(healthy)
                members = _started_members(client) if ready else 0
                if members == want and client.health(self.endpoint):
                    self.progress("etcd", "healthy", f"{want} members through {self.endpoint} in {time.monotonic() - t0:.0f}s")
                    return
                self.progress("etcd", "waiting", f"{members}/{want} members through the load balancer")
                if time.monotonic() > deadline:
                    raise ProviderError(
                        f"etcd not healthy through {self.endpoint} after {self.timeout:.0f}s ({members}/{want} members); "
                        f"see the consoles: bakery logs <node>, {self.layout.root}/<node>/console.log"
                    )
                time.sleep(1)

    # -- rollout ------------------------------------------------------------------------

    def etcd_endpoints(self) -> dict[str, str]:
        """Each master's etcd as the host reaches it (its forward on 127.0.0.1): for `bakery rollout`."""
        return {n.name: self.node_endpoint(n.name) for n in self.net.nodes}

    def replace_master(self, node: RenderedNode) -> None:
        """Rollout step: stop the master's VM, give it a fresh overlay of the current image
        and a seed with `node`'s user-data, and boot it again at the same address and ports."""
        self._known(node.name)
        boot = self._boot_image()
        files = self.layout.node(node.name)
        step = f"master {node.name}"
        pid = proc.stop(files.pidfile)
        if pid:
            self.progress(step, "stopped", f"pid {pid}")
        files.disk.unlink(missing_ok=True)  # a new machine: a fresh overlay of the current image
        key = ssh.ensure_key(self.layout.ssh)
        self._prepare_node(node.name, boot, node.user_data.plain, ssh.public_key(key))
        accel = state.load(self.paths).get("local", {}).get("accel") or vm.accelerator(self.layout.root)
        n = self.net.node(node.name)
        # a replacement joins the running cluster by member add, never through discovery
        argv = vm.node_argv(self.plan.name, n, files, boot, self.net, memory_mb=self.local.memory_mb,
                            cpus=self.local.cpus, accel=accel, discovery=False)
        pid = proc.start(argv, pidfile=files.pidfile, marker=vm.marker(self.plan.name, n.name), log=files.log)
        self.progress(step, "booting", f"pid {pid}, {boot.disk.name}")

    # -- status -------------------------------------------------------------------------

    def store(self) -> Store:
        """The cluster's folder store, which the masters see bind-mounted."""
        return open_store(location.store_url(self.spec, self.paths.root))

    def status(self) -> ClusterStatus:
        pids = {n.name: self.vm_pid(n.name) for n in self.net.nodes}
        # one ssh per running node, in parallel: each login takes seconds under TCG
        with ThreadPoolExecutor(max_workers=len(pids)) as pool:
            cloud_init = dict(zip(pids, pool.map(lambda name: self.cloud_init_result(name) if pids[name] else "-", pids), strict=True))
        nodes = []
        with Client([self.endpoint], tls=self.tls(), timeout=3) as client:
            for n in self.net.nodes:
                pid = pids[n.name]
                extra: dict[str, object] = {"ssh": f"{HOST}:{n.ssh_port}", "etcd": self.node_endpoint(n.name),
                                            "cloud-init": cloud_init[n.name]}
                health = "unknown"
                if pid:
                    ep = self.node_endpoint(n.name)
                    if client.health(ep):
                        health = "healthy"
                        with contextlib.suppress(EtcdError):
                            extra["leader"] = client.status(ep).is_leader
                    else:
                        health = "unhealthy"
                nodes.append(NodeStatus(name=n.name, id=str(pid) if pid else None, address=n.address, zone=self.plan.nodes[n.index].zone,
                                        state="running" if pid else "stopped", health=health, image=str(self.layout.node(n.name).disk),
                                        extra=extra))
        extra: dict[str, object] = {"haproxy": "running" if proc.running(self.layout.lb / "pid") else "stopped",
                                    "hub": "running" if proc.running(self.layout.hub / "pid") else "stopped"}
        if extra["haproxy"] == "running":
            try:
                extra["backends"] = lb.server_states(self.layout.stats_socket)
            except ProviderError as e:
                extra["backends"] = str(e)
        if self.spec.etcd.bootstrap == "discovery" and not self.spec.etcd.discovery_url:
            extra["discovery"] = "running" if proc.running(self.layout.discovery / "pid") else "stopped"
        return ClusterStatus(cluster=self.plan.name, provider=self.name, endpoint=self.endpoint, nodes=nodes, extra=extra)

    def cloud_init_result(self, name: str) -> str:
        """done, running, error: <first error>, or unreachable: <why> (asked over ssh)."""
        script = "cat /run/cloud-init/result.json 2>/dev/null || echo running"
        try:
            r = self.ssh_run(name, ["sh", "-c", script], timeout=30)
        except ProviderError as e:
            return f"unreachable: {e}"
        if r.returncode != 0:
            return f"unreachable: {r.stderr.strip()[-200:] or f'ssh exit {r.returncode}'}"
        text = r.stdout.strip()
        if text == "running":
            return "running"
        try:
            errors = json.loads(text)["v1"]["errors"]
        except (ValueError, KeyError, TypeError):
            return "unknown"
        return f"error: {errors[0]}" if errors else "done"

    # -- down ---------------------------------------------------------------------------

    def down(self, *, purge: bool = False) -> list[str]:
        """Stop every process by PID and remove what `up` made; `purge` also removes the disks."""
        done: list[str] = []
        # SIGTERM every VM at once, then wait: they shut down in parallel.
        pids = {}
        for n in self.net.nodes:
            record = proc.read(self.layout.node(n.name).pidfile)
            if proc.alive(record):
                assert record is not None
                os.kill(record.pid, 15)
                pids[n.name] = record.pid
        for n in self.net.nodes:
            pid = proc.stop(self.layout.node(n.name).pidfile)
            if pid or n.name in pids:
                done.append(f"vm {n.name} (pid {pid or pids[n.name]})")
                self.progress(f"master {n.name}", "stopped")
        for what, folder in (("network hub", self.layout.hub), ("haproxy", self.layout.lb), ("discovery etcd", self.layout.discovery)):
            pid = proc.stop(folder / "pid")
            if pid:
                done.append(f"{what} (pid {pid})")
                self.progress(what, "stopped")
        for n in self.net.nodes:
            folder = self.layout.node(n.name).folder
            for name in ("seed.iso", "user-data", "meta-data", "network-config", "vendor-data"):
                (folder / name).unlink(missing_ok=True)
        for folder in (self.layout.hub, self.layout.lb):
            shutil.rmtree(folder, ignore_errors=True)
        if purge:
            if self.layout.root.exists():
                shutil.rmtree(self.layout.root)
                done.append(f"disks, consoles, ssh key and discovery data under {self.layout.root}")
            st = state.load(self.paths)
            if st.get("discovery", {}).get("by") == STATE_BY or "local" in st:
                st.pop("local", None)
                if st.get("discovery", {}).get("by") == STATE_BY:
                    st.pop("discovery")
                state.save(self.paths, st)
        return done

    def _known(self, name: str) -> None:
        try:
            self.net.node(name)
        except KeyError:
            raise ProviderError(f"{name!r} is not a master of {self.plan.name} (masters: {', '.join(n.name for n in self.net.nodes)})") from None


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


def _read_boot(path: Path) -> console.Boot:
    try:
        return console.read(path.read_bytes())
    except FileNotFoundError:
        return console.read(b"")


def _started_members(client: Client) -> int:
    """Members that have started (a member added but not yet started has no name)."""
    try:
        return sum(1 for m in client.member_list() if m.name)
    except EtcdError:
        return 0


def _tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "no output"
    return " | ".join(text[-lines:]) or "no output"


def create(spec: ClusterSpec, paths: ClusterPaths, progress: Progress) -> LocalProvider:
    return LocalProvider(spec, paths, progress)
