"""The local provider: masters as systemd-nspawn containers (default) or QEMU VMs on this
machine, HAProxy as their load balancer, a supervisor as their group.

`up` converges, in order: the discovery etcd (bootstrap `discovery` without a URL),
HAProxy, the rendered user-data, the runtime's network (a bridge, or the QEMU hub), then
one master per node (runtime.py: a container on an overlay of the baked root, or a VM
on a qcow2 overlay), each with its NoCloud seed. It follows each node through its
console (cloud-init stages) and etcd (member healthy), returns once etcd answers
through the load balancer with every member, and starts the supervisor
(supervisor.py) that relaunches a master whose machine died.

Everything lives under build/<cluster>/local/ and every process is recorded by PID
(proc.py): a second `up` finds the running processes and starts only what is
missing; `down` stops them by PID and removes what `up` made (mounts, namespaces,
bridge), keeping the disks and console logs unless `purge`.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bakery import apiserver, hosttools, state, topology
from bakery.errors import EtcdError, ProviderError
from bakery.etcd import TLS, Client
from bakery.output import atomic_write, locked
from bakery.providers.base import (
    ClusterStatus,
    LBAddress,
    Ledger,
    NodeStatus,
    Progress,
    RenderCallback,
    RenderedNode,
    UpResult,
    forget_etcd,
)
from bakery.providers.local import bridge, console, discovery, group, lb, proc
from bakery.providers.local.net import HOST, NetPlan, is_listening, listening_ports, net_plan
from bakery.providers.local.runtime import ContainerRuntime, Image, Runtime, VmRuntime
from bakery.render.userdata import UserData
from bakery.spec import ClusterSpec, LocalSpec
from bakery.state import ClusterPaths
from bakery.store import Store, location, open_store

UP_TIMEOUT = 900.0  # seconds; three VMs under TCG on two busy cores take 1-3 minutes
STATE_BY = "bakery-local"  # marks the state.json sections this provider owns


@dataclass(frozen=True)
class Layout:
    """The cluster-wide files of the local provider, under build/<cluster>/local/."""

    root: Path

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

    @property
    def supervisor(self) -> Path:
        return self.root / "supervisor"

    @property
    def group(self) -> Path:
        """The local group's membership (group.py), with the container runtime and user_data: store."""
        return self.root / "group.json"

    def hold(self, node: str) -> Path:
        """Present while bakery itself replaces `node`: the supervisor leaves it alone."""
        return self.root / node / "hold"


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
        self._fixed_net: NetPlan = net_plan(spec, self.plan)
        # absolute: HAProxy, QEMU and nspawn get these paths, and HAProxy reads
        # "dir/stats.sock" in a relative path as a host and a missing port
        self.layout = Layout(paths.local.resolve())
        self.runtime: Runtime
        # masters as cattle: each boots the same small user-data, so a replacement takes a
        # new name and address (group.py); QEMU guests and embedded user-data keep their slots
        self.cattle = local.runtime == "container" and spec.user_data == "store"
        if local.runtime == "container":
            store = Path(location.split(location.store_url(spec, paths.root))[2]) if spec.user_data == "store" else None
            self.runtime = ContainerRuntime(self.plan.name, self.layout.root, self._fixed_net, spec.network.subnet, progress, store)
        else:
            self.runtime = VmRuntime(self.plan.name, self.layout.root, self._fixed_net, local, progress)

    @property
    def net(self) -> NetPlan:
        """The masters that exist now: the plan's, or the local group's (read afresh: the
        supervisor changes it while other commands run)."""
        if not self.cattle:
            return self._fixed_net
        g = group.load(self.layout.group, self.plan)
        return net_plan(self.spec, self.plan, [(m.name, m.slot, m.address) for m in g.members])

    def zone_of(self, name: str) -> str:
        if self.cattle:
            return group.load(self.layout.group, self.plan).member(name).zone
        return self.plan.node(name).zone

    # -- what other commands use ------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return self.net.lb_endpoint

    @property
    def cluster_ca(self) -> Path:
        """The cluster CA the API servers' certificates chain to."""
        return self.paths.pki / "ca.crt"

    def tls(self) -> TLS:
        """The host's etcd client identity: the PKI's healthcheck client."""
        pki = self.paths.pki
        return TLS(ca=pki / "etcd/ca.crt", cert=pki / "etcd/healthcheck-client.crt", key=pki / "etcd/healthcheck-client.key")

    def node_endpoint(self, name: str) -> str:
        """A master's own etcd client URL as the host reaches it."""
        return self.runtime.etcd_url(self.net.node(name))

    def console_log(self, name: str) -> Path:
        self._known(name)
        return self.runtime.console(name)

    def ssh_argv(self, name: str, command: Sequence[str] = (), *, batch: bool = False) -> list[str]:
        """A root shell on master `name` (ssh into a VM, nsenter into a container)."""
        self._known(name)
        return self.runtime.shell_argv(name, command, batch=batch)

    def ssh_run(self, name: str, command: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `command` (an argv) on master `name` as root."""
        argv = self.ssh_argv(name, command, batch=True)
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ProviderError(f"{name}: no answer within {timeout:.0f}s") from None

    def master_pid(self, name: str) -> int | None:
        """The PID of master `name`'s QEMU or systemd-nspawn, when it runs."""
        return self.runtime.pid(name)

    def cloud_init_result(self, name: str) -> str:
        """done, running, error: <first error>, - (not running) or unreachable: <why>."""
        return self.runtime.cloud_init_result(name)

    # -- up -----------------------------------------------------------------------------

    def check_tools(self) -> None:
        """Every host program `up` runs, before anything starts (ProviderError, exit 5)."""
        hosttools.require(self.runtime.tools, f"`bakery up` ({self.runtime.kind} runtime)", ProviderError, target="up")

    def up(self, render: RenderCallback, *, wait: bool = True) -> UpResult:
        result = UpResult(endpoint=self.endpoint, api_endpoint=self.net.api_endpoint)
        self.check_tools()
        image = self.image()
        self._check_ports()
        # the network first: HAProxy checks its backends from its start, and the
        # containers' addresses must be on the bridge by then (never the default route)
        self.runtime.prepare(result.created, result.existing)
        uses_discovery = self._ensure_discovery(result)
        # rendered before HAProxy starts: its API health checks verify against the cluster CA
        rendered = render(LBAddress(ips=(HOST,), port=self.net.api_lb_port))
        self._ensure_lb(result)
        if self.cattle and not self.layout.group.exists():
            group.save(self.layout.group, group.initial(self.plan))
        kind = self.runtime.kind
        started: list[str] = []
        for n in self.net.nodes:
            step = f"master {n.name}"
            current = image.root if kind == "container" else image.disk
            booted = self.runtime.image_of(n.name)
            if booted is not None and booted != current.resolve():
                result.drift.append(f"{n.name} boots {booted}, not the current image {current}: "
                                    "`bakery down --purge` then `bakery up` to boot the new one")
            if self.runtime.pid(n.name):
                result.existing.append(f"{kind} {n.name}")
                self.progress(step, "exists", f"pid {self.runtime.pid(n.name)}")
                continue
            # a group member that replaced one of the plan's boots the same small user-data
            user_data = (rendered.get(n.name) or next(iter(rendered.values()))).user_data.plain
            pid = self.runtime.launch(n, image, user_data, fresh=False, discovery=uses_discovery)
            result.created.append(f"{kind} {n.name}")
            started.append(n.name)
            self.progress(step, "booting", f"pid {pid}, {n.address}, etcd {self.node_endpoint(n.name)}")
        state.update(self.paths, local={"runtime": kind, "endpoint": self.endpoint})
        if wait:
            self._wait(started)
            self._ensure_supervisor(result)
            self._wait_api()
        return result

    def image(self) -> Image:
        """The baked image: local.image (kernel, initrd and root/ beside it), else images.json."""
        from bakery.bake import images

        if self.local.image:
            disk = Path(self.local.image).resolve()
            image = Image(disk, disk.parent / "vmlinuz", disk.parent / "initrd.img", disk.parent / "root")
            source = "local.image"
        else:
            rec = images.current(self.paths.images, self.plan.name, "local")
            if rec is None:
                raise ProviderError(f"no local image recorded in {self.paths.images}: run `bakery bake -f <spec>` "
                                    "(or set local.image to a qcow2 with vmlinuz, initrd.img and root/ beside it)")
            disk = Path(rec["disk"])
            image = Image(disk, Path(rec["kernel"]), Path(rec["initrd"]), Path(rec.get("root") or disk.parent / "root"))
            source = str(self.paths.images)
        needed = (("root", image.root / "sbin/init"),) if self.runtime.kind == "container" else (
            ("disk", image.disk), ("kernel", image.kernel), ("initrd", image.initrd))
        for what, path in needed:
            if not path.exists():
                raise ProviderError(f"the image's {what} {path} (from {source}) is missing: bake again "
                                    "(images baked before the container runtime have no root/)")
        return image

    def _owned_ports(self) -> set[int]:
        """Ports that our own running processes hold (they may be listening)."""
        owned = self.runtime.owned_ports()
        if proc.running(self.layout.lb / "pid"):
            owned |= {self.net.lb_port, self.net.api_lb_port}
        if proc.running(self.layout.discovery / "pid"):
            owned |= {self.net.discovery_port, self.net.discovery_peer_port}
        return owned

    def _check_ports(self) -> None:
        taken = {port for addr, port in listening_ports() if addr in (HOST, "0.0.0.0")}
        ports = self.runtime.host_ports()
        busy = sorted((taken & set(ports)) - self._owned_ports())
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
        guest_host, guest_port = self.runtime.discovery_host()
        if proc.running(pidfile):
            result.existing.append("discovery etcd")
            self.progress("discovery", "exists", endpoint)
        else:
            if not Path(discovery.ETCD).exists():
                raise ProviderError(f"{discovery.ETCD} not found: the discovery etcd is Debian's etcd-server (make setup-system)")
            data = folder / "data"
            data.mkdir(parents=True, exist_ok=True)
            data.chmod(0o700)
            also = guest_host if self.runtime.kind == "container" else None
            argv = discovery.argv(self.plan.name, self.net, data, also_on=also)
            proc.start(argv, pidfile=pidfile, marker=str(data), log=folder / "etcd.log")
            proc.until(lambda: discovery.healthy(endpoint), 60, f"discovery etcd at {endpoint}", pidfile, folder / "etcd.log")
            result.created.append("discovery etcd")
            self.progress("discovery", "created", endpoint)
        recorded = state.load(self.paths).get("discovery", {})
        token = recorded.get("token") if recorded.get("by") == STATE_BY else None
        url = discovery.guest_url(token, guest_host, guest_port) if token else None
        if token is None or recorded.get("url") != url or not discovery.token_exists(endpoint, token):
            token = discovery.new_token(endpoint, self.spec.masters)
            state.update(self.paths, discovery={"by": STATE_BY, "token": token,
                                                "url": discovery.guest_url(token, guest_host, guest_port)})
            self.progress("discovery", "token", f"{self.spec.masters} members")
        return True

    def _ensure_lb(self, result: UpResult) -> None:
        pidfile = self.layout.lb / "pid"
        if proc.running(pidfile):
            result.existing.append("haproxy")
            self.progress("lb", "exists", self.endpoint)
            return
        self._start_lb(self._lb_config())
        result.created.append("haproxy")
        self.progress("lb", "created", self.endpoint)

    def _lb_config(self) -> str:
        net = self.net
        return lb.config(self.plan.name, net, self.layout.stats_socket, self.cluster_ca.resolve(),
                         {n.name: self.runtime.backend(n) for n in net.nodes},
                         {n.name: self.runtime.api_backend(n) for n in net.nodes})

    def _start_lb(self, text: str) -> None:
        cfg, pidfile = self.layout.haproxy_cfg, self.layout.lb / "pid"
        atomic_write(cfg, text)
        check = subprocess.run(["haproxy", "-c", "-q", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise ProviderError(f"{cfg}: haproxy rejects the configuration: {check.stderr.strip()[-300:]}")
        self.layout.stats_socket.unlink(missing_ok=True)
        proc.start(lb.argv(cfg), pidfile=pidfile, marker=str(cfg), log=self.layout.lb / "haproxy.log")
        proc.until(lambda: is_listening(self.net.lb_port), 15, f"haproxy on {HOST}:{self.net.lb_port}", pidfile,
                   self.layout.lb / "haproxy.log")

    def sync_lb(self) -> bool:
        """Point HAProxy at the masters that exist now. A changed configuration is
        checked, written and loaded seamlessly: a new HAProxy takes over the port and the
        old one finishes its connections (at most hard-stop-after; its PID is kept in
        lb/old-<pid> so `down` stops it too). True when it changed."""
        text = self._lb_config()
        cfg, pidfile = self.layout.haproxy_cfg, self.layout.lb / "pid"
        old = proc.read(pidfile)
        self._reap_old_lbs()
        if not proc.alive(old) or (cfg.exists() and cfg.read_text() == text):
            return False
        assert old is not None
        check = subprocess.run(["haproxy", "-c", "-q", "-f", "/dev/stdin"], input=text, capture_output=True, text=True,
                               timeout=30)
        if check.returncode != 0:
            raise ProviderError(f"haproxy rejects the new configuration for {cfg}: {check.stderr.strip()[-300:]}")
        atomic_write(self.layout.lb / f"old-{old.pid}", f'{{"pid": {old.pid}, "marker": "{old.marker}"}}\n')
        atomic_write(cfg, text)
        proc.start(lb.argv(cfg, replaces=old.pid), pidfile=pidfile, marker=str(cfg), log=self.layout.lb / "haproxy.log")
        # it binds within milliseconds, then soft-stops the old one; a config it refused ends it at once
        settle = time.monotonic() + 0.5
        proc.until(lambda: time.monotonic() > settle, 10, f"haproxy on {HOST}:{self.net.lb_port} (reload after pid {old.pid})",
                   pidfile, self.layout.lb / "haproxy.log")
        self.progress("lb", "updated", f"backends {', '.join(n.name for n in self.net.nodes)}")
        return True

    def _reap_old_lbs(self, *, stop: bool = False) -> list[int]:
        """Forget (or, with `stop`, stop) the HAProxy processes a reload replaced."""
        stopped = []
        for f in sorted(self.layout.lb.glob("old-*")) if self.layout.lb.exists() else []:
            if stop and (pid := proc.stop(f)):
                stopped.append(pid)
            elif not proc.alive(proc.read(f)):
                f.unlink(missing_ok=True)
        return stopped

    def _ensure_supervisor(self, result: UpResult) -> None:
        from bakery.providers.local import supervisor

        folder = self.layout.supervisor
        pidfile = folder / "pid"
        if proc.running(pidfile):
            result.existing.append("supervisor")
            return
        # what it needs to re-render a master: the spec as parsed, and the build folder
        atomic_write(folder / "spec.json", self.spec.model_dump_json(), 0o600)
        argv = supervisor.argv(self.paths.root.resolve(), folder / "spec.json")
        pid = proc.start(argv, pidfile=pidfile, marker=str(folder / "spec.json"), log=folder / "supervisor.log")
        result.created.append("supervisor")
        self.progress("supervisor", "created", f"pid {pid}: relaunches a master whose {self.runtime.kind} died")

    def _wait(self, started: Sequence[str]) -> None:
        """Follow every node to a healthy etcd through the load balancer.

        A node's etcd is probed only once cloud-init's network stage began (it writes
        the files; etcd can start from then on): before that, a VM's forwarded port
        accepts and then stalls, and each probe would cost its whole timeout.
        """
        t0 = time.monotonic()
        deadline = t0 + self.timeout
        want = len(self.net.nodes)
        healthy: set[str] = set()
        kind = self.runtime.kind
        with Client([self.endpoint], tls=self.tls(), timeout=2) as client, ThreadPoolExecutor(max_workers=want) as pool:
            while True:
                probe = []
                for n in self.net.nodes:
                    if not self.runtime.pid(n.name):
                        log = self.runtime.console(n.name)
                        raise ProviderError(f"{n.name}: its {kind} exited: {proc.tail(log)} (console: {log})")
                    boot = _read_boot(self.runtime.console(n.name)) if n.name in started else None
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
                # every member started and healthy on its own, and etcd answers through the LB
                if members == want and len(healthy) == want and client.health(self.endpoint):
                    self.progress("etcd", "healthy", f"{want} members through {self.endpoint} in {time.monotonic() - t0:.0f}s")
                    return
                self.progress("etcd", "waiting", f"{members}/{want} members through the load balancer")
                if time.monotonic() > deadline:
                    raise ProviderError(
                        f"etcd not healthy through {self.endpoint} after {self.timeout:.0f}s ({members}/{want} members); "
                        f"see the consoles: bakery logs <node>, {self.layout.root}/<node>/console.log"
                    )
                time.sleep(0.5 if kind == "container" else 1)

    def _wait_api(self) -> None:
        """Follow every master's API server to /readyz, then the API through the load
        balancer to the admin kubeconfig's rights (the RBAC addon a master applies): `up`
        returns when `kubectl --kubeconfig admin.kubeconfig` works."""
        t0 = time.monotonic()
        deadline = t0 + self.timeout
        ca, pki = self.cluster_ca, self.paths.pki
        ready: set[str] = set()
        with ThreadPoolExecutor(max_workers=len(self.net.nodes)) as pool:
            while True:
                names = [n.name for n in self.net.nodes if n.name not in ready]
                answers = dict(zip(names, pool.map(lambda name: apiserver.readyz(self.api_endpoint_of(name), ca), names),
                                   strict=True))
                for name, answer in answers.items():
                    if answer:
                        ready.add(name)
                        self.progress(f"master {name}", "API server", "ready")
                admin = apiserver.authorized(self.net.api_endpoint, ca, pki / "admin.crt", pki / "admin.key") \
                    if len(ready) == len(self.net.nodes) else None
                if admin:
                    self.progress("API", "ready", f"{len(ready)} API servers through {self.net.api_endpoint}, "
                                                  f"admin authorized, in {time.monotonic() - t0:.0f}s")
                    return
                waiting = [f"{name} ({a.detail})" for name, a in answers.items() if not a]
                if admin is not None:
                    waiting = [f"admin kubeconfig: {admin.detail}"]
                self.progress("API", "waiting", "; ".join(waiting))
                if time.monotonic() > deadline:
                    why = "; ".join(waiting)
                    raise ProviderError(
                        f"API not ready through {self.net.api_endpoint} after {self.timeout:.0f}s: {why}; see "
                        + ("`bakery ssh <node> journalctl -u kube-apiserver`" if self.spec.runtime == "systemd"
                           else "`bakery ssh <node> journalctl -u kubelet`"))
                time.sleep(1)

    def api_endpoint_of(self, name: str) -> str:
        """A master's own API server as the host reaches it."""
        host, port = self.runtime.api_backend(self.net.node(name))
        return f"https://{host}:{port}"

    # -- the group: launch, replace -----------------------------------------------------

    def launch_master(self, name: str, user_data: bytes) -> int:
        """Boot a new machine for master `name` in its slot from the current image with
        `user_data`: a fresh overlay (its etcd data is gone), the same address. Returns its
        PID. For masters in fixed slots (QEMU guests, embedded per-node user-data, whose
        name, address and certificates are fixed); masters as cattle take a new slot
        through `surge` instead."""
        n = self.net.node(name)
        uses_discovery = False  # a replacement joins the running cluster by member add, never through discovery
        pid = self.runtime.launch(n, self.image(), user_data, fresh=True, discovery=uses_discovery)
        self.progress(f"master {name}", "booting", f"pid {pid}, {n.address}")
        return pid

    # -- the group as cattle (container runtime, user_data: store): surge, retire ---------

    def members(self) -> list[str]:
        return [n.name for n in self.net.nodes]

    def peer_url(self, name: str) -> str:
        return f"https://{self.net.node(name).address}:{self.spec.etcd.peer_port}"

    def image_id(self, name: str) -> str | None:
        image = self.runtime.image_of(name)
        return str(image) if image else None

    def current_image(self) -> str:
        image = self.image()
        return str((image.root if self.runtime.kind == "container" else image.disk).resolve())

    def group(self) -> LocalProvider:
        """The master group bakery/surge.py drives: the provider itself."""
        return self

    def running(self, name: str) -> bool:
        return bool(self.master_pid(name))

    def surge(self, user_data: UserData, like: str | None = None) -> str:
        """Start one new master of the group from the current image with the cluster's
        small user-data, at a new name and address; HAProxy gets it as a backend. Its
        bakery-node joins etcd by itself (as a learner, promoted once in sync). Returns
        its name once its container runs."""
        self._require_cattle("surge")
        image = self.image()
        reserved = {self.runtime.br.host_address} if isinstance(self.runtime, ContainerRuntime) else set()
        with locked(self.layout.group):  # the supervisor and a rollout may change the group at once
            g, member = group.allocate(group.load(self.layout.group, self.plan), self.plan.name,
                                       self.spec.network.subnet, reserved)
            hold = self.layout.hold(member.name)
            atomic_write(hold, "starting\n")  # the supervisor must not heal it before its PID is recorded
            group.save(self.layout.group, g)  # first: `down` and the supervisor see it from now on
        try:
            n = self.net.node(member.name)
            bridge.remove_node_netns(self.runtime.netns(n), self.runtime.br.veth(n.index))  # type: ignore[attr-defined]
            pid = self.runtime.launch(n, image, user_data.plain, fresh=True, discovery=False)
        finally:
            hold.unlink(missing_ok=True)
        self.progress(f"master {member.name}", "booting", f"pid {pid}, {n.address} (new member of the group)")
        self.sync_lb()
        return member.name

    def retire(self, name: str) -> None:
        """Stop master `name`'s container and delete its machine (overlay, namespace,
        veth; its console log is kept as console.log.retired beside the others); the
        group forgets it and HAProxy drops it. Its etcd member must be gone already."""
        self._require_cattle("retire")
        self._known(name)
        hold = self.layout.hold(name)
        atomic_write(hold, "retiring\n")  # the supervisor must not heal what we stop on purpose
        try:
            n = self.net.node(name)
            # out of the group and HAProxy first: no new request reaches a master shutting
            # down (the replaced HAProxy finishes what it carries, hard-stop-after bounds it)
            with locked(self.layout.group):
                group.save(self.layout.group, group.without(group.load(self.layout.group, self.plan), name))
            self.sync_lb()
            t0 = time.monotonic()
            pid = self.runtime.stop(name)
            if pid:
                self.progress(f"master {name}", "stopped", f"pid {pid} in {time.monotonic() - t0:.1f}s")
            self.runtime.retire(n)  # type: ignore[attr-defined]
            self.progress(f"master {name}", "retired", n.address)
        finally:
            hold.unlink(missing_ok=True)

    def _require_cattle(self, what: str) -> None:
        if not self.cattle:
            raise ProviderError(f"{what}: the local group takes new members only with local.runtime: container and "
                                "user_data: store (every master boots the same small user-data); "
                                f"this cluster has runtime {self.local.runtime}, user_data {self.spec.user_data}")

    def etcd_endpoints(self) -> dict[str, str]:
        """Each master's etcd as the host reaches it: for `bakery rollout`."""
        if isinstance(self.runtime, ContainerRuntime) and not bridge.link_exists(self.runtime.br.bridge):
            # without the bridge the subnet has no route here: a connect would take the default route
            raise ProviderError(f"{self.plan.name}: its bridge {self.runtime.br.bridge} is not up; run `bakery up` first")
        return {n.name: self.node_endpoint(n.name) for n in self.net.nodes}

    def replace_master(self, node: RenderedNode) -> None:
        """Rollout step: stop the master's machine and launch a new one with `node`'s
        user-data at the same address; the supervisor keeps its hands off meanwhile."""
        self._known(node.name)
        hold = self.layout.hold(node.name)
        atomic_write(hold, "bakery rollout\n")
        try:
            pid = self.runtime.stop(node.name)
            if pid:
                self.progress(f"master {node.name}", "stopped", f"pid {pid}")
            self.launch_master(node.name, node.user_data.plain)
        finally:
            hold.unlink(missing_ok=True)

    # -- status -------------------------------------------------------------------------

    def store(self) -> Store:
        """The cluster's folder store, which the masters see bind-mounted."""
        return open_store(location.store_url(self.spec, self.paths.root))

    def status(self) -> ClusterStatus:
        pids = {n.name: self.runtime.pid(n.name) for n in self.net.nodes}
        ca = self.cluster_ca
        running = [name for name, pid in pids.items() if pid]
        # in parallel: a VM's ssh login takes seconds under TCG, an API server that is down its probe's timeout
        with ThreadPoolExecutor(max_workers=2 * len(pids)) as pool:
            cloud_init = dict(zip(pids, pool.map(self.runtime.cloud_init_result, pids), strict=True))
            api = dict(zip(running, pool.map(lambda name: apiserver.readyz(self.api_endpoint_of(name), ca), running),
                           strict=True))
        nodes = []
        # nothing running (or never up: no PKI yet): no etcd to ask
        opened = Client([self.endpoint], tls=self.tls(), timeout=3) if any(pids.values()) else contextlib.nullcontext()
        with opened as client:
            for n in self.net.nodes:
                pid = pids[n.name]
                extra: dict[str, object] = {"etcd": self.node_endpoint(n.name), "cloud-init": cloud_init[n.name],
                                            "runtime": self.runtime.kind, "leader": False}
                if self.runtime.kind == "vm":
                    extra["ssh"] = f"{HOST}:{n.ssh_port}"
                if n.name in api:
                    extra["api"] = "ready" if api[n.name] else f"not ready: {api[n.name].detail}"
                    extra["api_url"] = self.api_endpoint_of(n.name)
                health = "unknown"
                if pid and client is not None:
                    ep = self.node_endpoint(n.name)
                    probe = client.probe(ep)
                    # healthy, unhealthy (etcd answered, not healthy), refused or unreachable
                    health = probe.state
                    if probe.detail:
                        extra["health_detail"] = probe.detail
                    if health == "healthy":
                        with contextlib.suppress(EtcdError):
                            extra["leader"] = client.status(ep).is_leader
                image = self.runtime.image_of(n.name)
                nodes.append(NodeStatus(name=n.name, id=str(pid) if pid else None, address=n.address, zone=self.zone_of(n.name),
                                        state="running" if pid else "stopped", health=health,
                                        image=str(image) if image else None, extra=extra))
        services = {"haproxy": self.layout.lb / "pid", "supervisor": self.layout.supervisor / "pid"}
        if self.runtime.kind == "vm":
            services["hub"] = self.layout.root / "hub" / "pid"
        if self.spec.etcd.bootstrap == "discovery" and not self.spec.etcd.discovery_url:
            services["discovery"] = self.layout.discovery / "pid"
        extra: dict[str, object] = {"runtime": self.runtime.kind,
                                    "services": {k: ("running" if proc.running(p) else "stopped") for k, p in services.items()}}
        backends: dict[str, str] = {}
        api_backends: dict[str, str] = {}
        if proc.running(self.layout.lb / "pid"):
            try:
                states = lb.backend_states(self.layout.stats_socket)
                backends, api_backends = states.get(lb.ETCD_BACKEND, {}), states.get(lb.API_BACKEND, {})
            except ProviderError as e:
                extra["backends_error"] = str(e)
            through = apiserver.readyz(self.net.api_endpoint, ca)
            extra["api"] = {"endpoint": self.net.api_endpoint, "ready": through.ok, "detail": through.detail}
        extra["backends"] = backends
        extra["api_backends"] = api_backends
        if isinstance(self.runtime, ContainerRuntime):
            br = self.runtime.br
            try:
                fwd = bridge.forwarding(br.bridge)
            except OSError:
                fwd = "-"
            # forwarding: the bridge's own switch (what keeps its packets in); ip_forward: the host's
            extra["network"] = {"bridge": br.bridge, "host_address": br.host_address, "subnet": br.subnet,
                                "forwarding": fwd,
                                "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()}
        return ClusterStatus(cluster=self.plan.name, provider=self.name, endpoint=self.endpoint, nodes=nodes, extra=extra)

    # -- down ---------------------------------------------------------------------------

    def down(self, *, purge: bool = False) -> list[str]:
        """Stop every process by PID and remove what `up` made; `purge` also removes the disks."""
        done: list[str] = []
        pid = proc.stop(self.layout.supervisor / "pid")  # first: it would relaunch what we stop
        if pid:
            done.append(f"supervisor (pid {pid})")
            self.progress("supervisor", "stopped")
        # SIGTERM every machine at once, then wait: they shut down in parallel. A machine
        # that exits before its wait was still stopped here, and is reported with its PID.
        signalled: dict[str, int] = {}
        for n in self.net.nodes:
            with contextlib.suppress(ProcessLookupError):
                if (pid := self.runtime.pid(n.name)) is not None:
                    proc.signal_only(pid)
                    signalled[n.name] = pid
        for n in self.net.nodes:
            pid = self.runtime.stop(n.name) or signalled.get(n.name)
            if pid:
                done.append(f"{self.runtime.kind} {n.name} (pid {pid})")
                self.progress(f"master {n.name}", "stopped")
        for pid in self._reap_old_lbs(stop=True):
            done.append(f"haproxy (pid {pid}, replaced by a reload)")
        for what, folder in (("haproxy", self.layout.lb), ("discovery etcd", self.layout.discovery)):
            pid = proc.stop(folder / "pid")
            if pid:
                done.append(f"{what} (pid {pid})")
                self.progress(what, "stopped")
        done += self.runtime.down(purge, self.net.nodes)
        shutil.rmtree(self.layout.lb, ignore_errors=True)
        if purge:
            if self.layout.root.exists():
                shutil.rmtree(self.layout.root)
                done.append(f"disks, overlays, consoles, ssh key and discovery data under {self.layout.root}")
            # the disks held every member's data: the store's marker and records would have
            # the next `up`'s masters wait to join a cluster that no longer exists
            ledger = Ledger(self.progress)
            forget_etcd(self.store(), self.plan.name, ledger)
            done += ledger.deleted
            st = state.load(self.paths)
            # every member's data went with the overlays: the next `up` bootstraps a new
            # cluster, not a join of the one a rollout or the supervisor recorded
            if st.get("discovery", {}).get("by") == STATE_BY or {"local", "bootstrapped", "initial_cluster"} & set(st):
                for key in ("local", "bootstrapped", "initial_cluster"):
                    st.pop(key, None)
                if st.get("discovery", {}).get("by") == STATE_BY:
                    st.pop("discovery")
                state.save(self.paths, st)
        return done

    def _known(self, name: str) -> None:
        try:
            self.net.node(name)
        except KeyError:
            raise ProviderError(f"{name!r} is not a master of {self.plan.name} (masters: {', '.join(n.name for n in self.net.nodes)})") from None


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


def create(spec: ClusterSpec, paths: ClusterPaths, progress: Progress) -> LocalProvider:
    return LocalProvider(spec, paths, progress)
