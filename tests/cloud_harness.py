"""One bakery-node per cloud instance: the machines behind moto's autoscaling groups and
the fake GCE's managed instance groups.

The cloud fakes hand their instances addresses from loopback subnets (moto from the
spec's zone subnets, the fake GCE from its `ephemeral_range`), so every instance the
cloud says runs can have a real etcd on its own address. `Machines` watches the cloud
(a `list_instances` callable, polled in a thread, bounded) and, for each instance that
appears, boots a machine: an instance-data file built from what the cloud API reports
(id, hostname, the private address, zone), the node config read out of the instance's
own user-data (the cluster's one small user-data, as cloud-init would write it), and
bakery-node's Agent (bakery/node/agent.py, the real code) with the provider's own store
(moto S3, fake GCS): it fetches the description and CA material, checks their digests,
issues its own leaves, writes its tree and joins etcd; where the kubelet would start
the etcd static pod, the harness starts a real etcd from the manifest the agent wrote.
An instance that is terminated, deleted or replaced (a new id under the same name)
loses its etcd at once, as a machine does.
"""

from __future__ import annotations

import base64
import gzip
import ipaddress
import json
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from bakery.etcd import TLS, Client
from bakery.node import identity
from bakery.node.agent import Agent
from bakery.node.description import CONFIG, NodeConfig
from bakery.node.join import Joined, Timing
from bakery.render import flags
from bakery.store import Store
from tests.etcd_fixtures import Proc, _free_everywhere, free_port_on_all, localize, manifest_command

FAST = Timing(reach=60, lock_wait=120, lock_ttl=5, quorum=120, promote=90, promote_every=0.2, healthy=90, settle=30,
              poll=0.2, backoff=2.0)


@dataclass(frozen=True)
class Instance:
    id: str
    hostname: str
    address: str
    zone: str
    user_data: bytes  # as the cloud keeps it: decoded from base64, maybe gzipped
    cloud: str = "aws"


def node_config(user_data: bytes) -> NodeConfig:
    """/etc/bakery/node.json out of the small user-data, as cloud-init's write_files writes it."""
    raw = gzip.decompress(user_data) if user_data[:2] == b"\x1f\x8b" else user_data
    doc = yaml.safe_load(raw)
    (f,) = [f for f in doc["write_files"] if f["path"] == str(CONFIG)]
    content = f["content"]
    if f.get("encoding") in ("b64", "base64"):
        content = base64.b64decode(content).decode()
    return NodeConfig.load_text(content, "the instance's user-data")


def ports_free_on(subnets: Sequence[str], hosts_per_subnet: int = 16) -> tuple[int, int] | None:
    """(client, peer) ports free on the first hosts of every subnet (and the metrics port
    free there too), or None when the metrics port is taken: pick other subnets."""
    hosts = [str(h) for s in subnets for h in list(ipaddress.IPv4Network(s).hosts())[:hosts_per_subnet]]
    if not _free_everywhere(hosts, flags.ETCD_METRICS_PORT):
        return None
    client = free_port_on_all(hosts, avoid=[flags.ETCD_METRICS_PORT])
    peer = free_port_on_all(hosts, avoid=[flags.ETCD_METRICS_PORT, client])
    return client, peer


class _Etcd:
    """The start commands' runner on a machine: where the kubelet would start the etcd
    static pod, start the real etcd from the manifest the agent wrote."""

    def __init__(self, root: Path, binary: Path, data: Path, log: Path, may_start: Callable[[], bool]) -> None:
        self.root, self.binary, self.data, self.log, self.may_start = root, binary, data, log, may_start
        self.proc: Proc | None = None

    def __call__(self, argv: Sequence[str]) -> None:
        if "kubelet.service" in argv and self.may_start():
            manifest = self.root / "etc/kubernetes/manifests/etcd.manifest"
            self.proc = Proc(localize(manifest_command(manifest), self.binary, self.root, self.data), self.log)


class Machines:
    def __init__(self, folder: Path, binary: Path, tls: TLS, store: Store, list_instances: Callable[[], list[Instance]], *,
                 is_alive: Callable[[str], bool | None] | None = None, poll: float = 0.2) -> None:
        self.folder, self.binary, self.tls, self.store = folder, binary, tls, store
        self.list_instances, self.is_alive, self.poll = list_instances, is_alive, poll
        self.etcds: dict[str, _Etcd] = {}  # instance id -> its etcd runner
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
            procs = [e.proc for e in self.etcds.values() if e.proc is not None]
            self._live.clear()
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
        e = self.etcds.get(iid)
        if e is not None and e.proc is not None and e.proc.alive():
            e.proc.signal(signal.SIGKILL)
            e.proc.wait(10)
        self.stopped.append(iid)

    def end(self, iid: str) -> None:
        """The machine hangs or dies while the cloud still lists its instance."""
        with self._lock:
            e = self.etcds.get(iid)
            if e is not None and e.proc is not None:
                e.proc.signal(signal.SIGKILL)
                e.proc.wait(10)

    def _boot(self, inst: Instance) -> None:
        base = self.folder / inst.id
        base.mkdir(parents=True, exist_ok=True)
        doc = {"v1": {"instance_id": inst.id, "local_hostname": inst.hostname, "availability_zone": inst.zone,
                      "cloud_name": inst.cloud}, "ds": {"meta_data": {"local-ipv4": inst.address}}}
        (base / "instance-data.json").write_text(json.dumps(doc))
        etcd = _Etcd(base / "root", self.binary, base / "etcd-data", base / "etcd.log", lambda: inst.id in self._live)
        self.etcds[inst.id] = etcd

        def machine() -> None:
            try:
                agent = Agent(node_config(inst.user_data), identity.load(base / "instance-data.json"), self.store,
                              root=base / "root", state_dir=base / "state", run=etcd, etcd_data_dir=base / "etcd-data",
                              is_alive=self.is_alive, timing=FAST)
                self.joined[inst.id] = agent.apply()
            except BaseException as e:  # reported by the test, with the logs
                if inst.id in self._live:
                    self.errors[inst.id] = e

        self._live[inst.id] = inst
        self.started.append(inst)
        threading.Thread(target=machine, name=f"bakery-node-{inst.hostname}", daemon=True).start()

    # -- for the tests ------------------------------------------------------------------

    def live(self) -> list[Instance]:
        with self._lock:
            return list(self._live.values())

    def logs(self) -> str:
        return "\n---\n".join(f"{iid}:\n{e.proc.tail(15)}" for iid, e in self.etcds.items() if e.proc is not None)


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
