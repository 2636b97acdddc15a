"""One bakery-node per cloud instance: the machines behind moto's autoscaling groups and
the fake GCE's managed instance groups.

The cloud fakes hand their instances addresses from loopback subnets (moto from the
spec's zone subnets, the fake GCE from its `ephemeral_range`), so every instance the
cloud says runs can have a real etcd on its own address. `Machines` watches the cloud
(a `list_instances` callable, polled in a thread, bounded) and, for each instance that
appears, runs bakery-node's etcd membership step (bakery/node/join.py, the real code) on
that address with the real store the provider made (moto S3, fake GCS): day 0 in the
spec's bootstrap mode, a learner join afterwards. An instance that is terminated,
deleted or replaced (a new id under the same name) loses its etcd at once, as a
machine does. Certificates: one throwaway CA whose server certificate covers the first
64 addresses of each subnet.
"""

from __future__ import annotations

import ipaddress
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bakery.discovery import Bootstrap
from bakery.etcd import TLS, Client
from bakery.node.join import Joined, Timing, join
from bakery.render import flags
from bakery.store import Store
from bakery.topology import ClusterPlan, Node
from tests.etcd_fixtures import (
    NODE_ETCD_PKI,
    Proc,
    _free_everywhere,
    free_port_on_all,
    localize,
    make_certs,
)

FAST = Timing(reach=60, lock_wait=120, lock_ttl=5, quorum=120, promote=90, promote_every=0.2, healthy=90, settle=30,
              poll=0.2, backoff=2.0)


@dataclass(frozen=True)
class Instance:
    id: str
    hostname: str
    address: str
    zone: str


def ports_free_on(subnets: Sequence[str], hosts_per_subnet: int = 16) -> tuple[int, int] | None:
    """(client, peer) ports free on the first hosts of every subnet (and the metrics port
    free there too), or None when the metrics port is taken: pick other subnets."""
    hosts = [str(h) for s in subnets for h in list(ipaddress.IPv4Network(s).hosts())[:hosts_per_subnet]]
    if not _free_everywhere(hosts, flags.ETCD_METRICS_PORT):
        return None
    client = free_port_on_all(hosts, avoid=[flags.ETCD_METRICS_PORT])
    peer = free_port_on_all(hosts, avoid=[flags.ETCD_METRICS_PORT, client])
    return client, peer


class Machines:
    def __init__(self, folder: Path, binary: Path, plan: ClusterPlan, subnets: Sequence[str], store: Store,
                 list_instances: Callable[[], list[Instance]], *, is_alive: Callable[[str], bool | None] | None = None,
                 poll: float = 0.2) -> None:
        self.folder, self.binary, self.plan, self.store = folder, binary, plan, store
        self.list_instances, self.is_alive, self.poll = list_instances, is_alive, poll
        addresses = [str(h) for s in subnets for h in list(ipaddress.IPv4Network(s).hosts())[:64]]
        self.certs = make_certs(folder / "pki", addresses)
        self.tls = TLS(self.certs["ca"], self.certs["client_crt"], self.certs["client_key"])
        self.procs: dict[str, Proc] = {}  # instance id -> its etcd
        self.joins: dict[str, threading.Thread] = {}
        self.joined: dict[str, Joined] = {}
        self.errors: dict[str, BaseException] = {}
        self.started: list[Instance] = []  # every machine ever booted, in order
        self.stopped: list[str] = []  # instance ids whose machine ended
        self._live: dict[str, Instance] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="machines", daemon=True)

    def __enter__(self) -> Machines:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        with self._lock:
            procs = list(self.procs.values())
        for p in procs:
            p.signal(signal.SIGTERM)
        for p in procs:
            p.stop(timeout=5)

    def client(self, endpoints: Sequence[str]) -> Client:
        return Client(list(endpoints), self.tls, timeout=3.0)

    # -- the watch ----------------------------------------------------------------------

    def _run(self) -> None:
        end = time.monotonic() + 1800
        while not self._stop.is_set() and time.monotonic() < end:
            try:
                self.sync()
            except Exception as e:  # a cloud call that failed: the next poll tries again
                self.errors.setdefault("watch", e)
            self._stop.wait(self.poll)

    def sync(self) -> None:
        """Boot a machine for every new instance, end the machine of every one that went."""
        now = {i.id: i for i in self.list_instances()}
        with self._lock:
            for iid in [iid for iid in self._live if iid not in now]:
                self._end(iid)
            for iid, inst in now.items():
                if iid not in self._live:
                    # a repaired instance may take the address of the one it replaces: that one is gone first
                    for other in [o for o, i in self._live.items() if i.address == inst.address]:
                        self._end(other)
                    self._boot(inst)

    def _end(self, iid: str) -> None:
        self._live.pop(iid, None)
        p = self.procs.pop(iid, None)
        if p is not None and p.alive():
            p.signal(signal.SIGKILL)
            p.wait(10)
        self.stopped.append(iid)

    def _boot(self, inst: Instance) -> None:
        subnet = next((z.subnet for z in self.plan.spec.zones if z.name == inst.zone and z.subnet), None) \
            or self.plan.spec.network.subnet
        node = Node(index=-1, name=inst.hostname, address=inst.address, zone=inst.zone, subnet=subnet,
                    client_port=self.plan.spec.etcd.client_port, peer_port=self.plan.spec.etcd.peer_port)
        data = self.folder / "data" / inst.id
        root = self.folder / "nodes" / inst.id
        pki = root / NODE_ETCD_PKI.lstrip("/")
        pki.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.certs["ca"], pki / "ca.crt")
        for kind in ("server", "peer"):
            shutil.copy(self.certs["server_crt"], pki / f"{kind}.crt")
            shutil.copy(self.certs["server_key"], pki / f"{kind}.key")

        def start(b: Bootstrap) -> None:
            argv = localize(flags.etcd_command(self.plan, node, b), self.binary, root, data)
            with self._lock:
                if inst.id in self._live:  # not ended meanwhile
                    self.procs[inst.id] = Proc(argv, self.folder / "logs" / f"{inst.id}.log")

        def agent() -> None:
            try:
                self.joined[inst.id] = join(self.plan, node, Bootstrap(mode=self.plan.spec.etcd.bootstrap), self.store,
                                            self.client, start, is_alive=self.is_alive, data_dir=data, timing=FAST)
            except BaseException as e:  # reported by the test, with the logs
                if inst.id in self._live:
                    self.errors[inst.id] = e

        self._live[inst.id] = inst
        self.started.append(inst)
        t = threading.Thread(target=agent, name=f"bakery-node-{inst.hostname}", daemon=True)
        self.joins[inst.id] = t
        t.start()

    # -- for the tests ------------------------------------------------------------------

    def live(self) -> list[Instance]:
        with self._lock:
            return list(self._live.values())

    def logs(self) -> str:
        return "\n---\n".join(f"{iid}:\n{p.tail(15)}" for iid, p in self.procs.items())


class VoterSampler:
    """The fewest started voters etcd listed at any sample, until stopped (bounded)."""

    def __init__(self, m: Machines, endpoints: Callable[[], list[str]]) -> None:
        self.fewest = 99
        self.samples = 0
        self._m, self._endpoints = m, endpoints
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        end = time.monotonic() + 1800
        while not self._stop.is_set() and time.monotonic() < end:
            try:
                with self._m.client(self._endpoints()) as e:
                    voters = [m for m in e.member_list() if m.name and not m.is_learner]
                self.fewest = min(self.fewest, len(voters))
                self.samples += 1
            except Exception:  # no member answered this time
                pass
            self._stop.wait(0.1)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        return self.fewest


def wait_for(what: str, probe: Callable[[], bool], timeout: float, m: Machines | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            detail = f"\nagent errors: {m.errors}\n{m.logs()}" if m is not None else ""
            raise AssertionError(f"{what}: not within {timeout:.0f}s{detail}")
        time.sleep(0.3)
