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
import contextlib
import gzip
import ipaddress
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bakery.errors import StoreError
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


class Unreachable:
    """The store as an instance without a network path sees it: every call times out
    (quickly: the harness does not wait a real connect timeout)."""

    def __init__(self, store: Store, why: str) -> None:
        self.url, self.why = store.url, why

    def _fail(self, key: str) -> Any:
        time.sleep(0.05)
        raise StoreError(f"{self.url}/{key}: connect timeout ({self.why})")

    def get(self, key: str) -> bytes:
        return self._fail(key)

    def put(self, key: str, data: bytes) -> None:
        self._fail(key)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self._fail(key)

    def list(self, prefix: str = "") -> list[str]:
        return self._fail(prefix)

    def delete(self, key: str) -> None:
        self._fail(key)


def aws_path(ec2: Any, region: str) -> Callable[[Instance], str | None]:
    """Why an EC2 instance cannot reach S3 and the EC2/Auto Scaling APIs, or None when it can,
    from the cloud's own state, by AWS's rules: an internet gateway serves only an instance
    with a public IPv4 address; a NAT gateway (or NAT instance) default route serves any; S3
    also through a gateway endpoint's prefix-list route in the subnet's route table; EC2 and
    Auto Scaling through interface endpoints with private DNS in the VPC whose security group
    admits HTTPS from the instance."""

    def why(inst: Instance) -> str | None:
        i = ec2.describe_instances(InstanceIds=[inst.id])["Reservations"][0]["Instances"][0]
        vpc, subnet, public = i["VpcId"], i["SubnetId"], i.get("PublicIpAddress")
        tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"]
        table = next((t for t in tables for a in t.get("Associations", []) if a.get("SubnetId") == subnet), None) \
            or next((t for t in tables for a in t.get("Associations", []) if a.get("Main")), {})
        routes = table.get("Routes", [])
        default = [r for r in routes if r.get("DestinationCidrBlock") == "0.0.0.0/0" and r.get("State", "active") == "active"]
        out = any(r.get("NatGatewayId") or r.get("InstanceId") for r in default) or \
            (public is not None and any(str(r.get("GatewayId", "")).startswith("igw-") for r in default))
        if out:
            return None
        endpoints = [e for e in ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["VpcEndpoints"]
                     if e.get("State", "").lower() == "available"]
        s3 = {e["VpcEndpointId"] for e in endpoints if e["ServiceName"] == f"com.amazonaws.{region}.s3"
              and e["VpcEndpointType"] == "Gateway"}
        if not any(r.get("DestinationPrefixListId") and r.get("GatewayId") in s3 for r in routes):
            return f"{inst.id} in {subnet}: no public address behind an internet gateway, no NAT, no S3 gateway endpoint route"
        groups = {g["GroupId"] for g in i.get("SecurityGroups", [])}
        addr = ipaddress.IPv4Address(inst.address)
        for svc in ("ec2", "autoscaling"):
            ok = False
            for e in endpoints:
                if e["ServiceName"] != f"com.amazonaws.{region}.{svc}" or e["VpcEndpointType"] != "Interface" \
                        or not e.get("PrivateDnsEnabled"):
                    continue
                sgs = ec2.describe_security_groups(GroupIds=[g["GroupId"] for g in e.get("Groups", [])])["SecurityGroups"]
                for sg in sgs:
                    for p in sg.get("IpPermissions", []):
                        if p.get("IpProtocol") not in ("tcp", "-1") or not (p.get("FromPort", 0) <= 443 <= p.get("ToPort", 65535)):
                            continue
                        ok = ok or any(addr in ipaddress.IPv4Network(r["CidrIp"]) for r in p.get("IpRanges", [])) \
                            or any(g["GroupId"] in groups for g in p.get("UserIdGroupPairs", []))
            if not ok:
                return f"{inst.id} in {subnet}: no NAT and no {svc} interface endpoint admitting HTTPS from it"
        return None

    return why


def gce_path(gce: Any) -> Callable[[Instance], str | None]:
    """Why a GCE instance cannot reach Cloud Storage and the Compute API, or None when it can,
    from the fake's state, by Google's rules: a route 0.0.0.0/0 to the default internet gateway
    that applies to the instance, and an external address (an accessConfig), or its
    subnetwork's Private Google Access, or a Cloud NAT on a router of the region covering the
    subnetwork. (A route to private.googleapis.com alone also serves with a private DNS zone,
    which the fake does not model: the harness is stricter there than GCE.)"""
    from bakery.providers.gcp.path import NAT_ALL

    def same(a: str, b: str) -> bool:
        return a[a.find("projects/"):] == b[b.find("projects/"):]

    def why(inst: Instance) -> str | None:
        found = [i for i in gce.resources("instances") if str(i["id"]) == inst.id]
        if not found:
            return f"{inst.id}: no such instance"
        nic = found[0]["networkInterfaces"][0]
        link = nic.get("subnetwork", "")
        subnet = next((s for s in gce.resources("subnetworks") if same(s["selfLink"], link)), None) if link else None
        if subnet is None:
            return f"{inst.hostname}: no subnetwork"
        # every way out (external address, Private Google Access, Cloud NAT) leaves through
        # the default internet gateway: a route to it that applies to the instance
        tags = set(found[0].get("tags", {}).get("items", []))
        if not any(same(r["network"], subnet["network"]) and r.get("nextHopGateway", "").endswith("/default-internet-gateway")
                   and r["destRange"] == "0.0.0.0/0" and (not r.get("tags") or tags & set(r["tags"]))
                   for r in gce.resources("routes")):
            return f"{inst.hostname}: network {subnet['network'].rsplit('/', 1)[-1]} has no route 0.0.0.0/0 to the internet gateway"
        if nic.get("accessConfigs") or subnet.get("privateIpGoogleAccess"):
            return None
        for r in gce.resources("routers"):
            if r.get("region") != subnet.get("region") or not same(r["network"], subnet["network"]):
                continue
            for nat in r.get("nats", []):
                scope = nat.get("sourceSubnetworkIpRangesToNat")
                if scope in NAT_ALL or (scope == "LIST_OF_SUBNETWORKS"
                                        and any(same(x.get("name", ""), link) for x in nat.get("subnetworks", []))):
                    return None
        return f"{inst.hostname}: no external address, subnetwork {subnet['name']} has no Private Google Access and no Cloud NAT"

    return why


class Machines:
    def __init__(self, folder: Path, binary: Path, tls: TLS, store: Store, list_instances: Callable[[], list[Instance]], *,
                 is_alive: Callable[[str], bool | None] | None = None, poll: float = 0.2,
                 path: Callable[[Instance], str | None] | None = None) -> None:
        self.folder, self.binary, self.tls, self.store = folder, binary, tls, store
        self.path = path  # why an instance cannot reach the store, from the cloud's state (None: it can)
        self.unreachable: dict[str, str] = {}
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
                store: Any = self.store
                why = self.path(inst) if self.path else None
                if why is not None:
                    self.unreachable[inst.id] = why
                    store = Unreachable(self.store, why)
                agent = Agent(node_config(inst.user_data), identity.load(base / "instance-data.json"), store,
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
    """The fewest healthy voters at any sample (started, not learners, their /health
    true), until stopped (bounded)."""

    def __init__(self, m: Machines, endpoints: Callable[[], list[str]]) -> None:
        self.fewest = 99
        self.samples = 0
        self.worst = ""
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
                    healthy = [m for m in voters if m.client_urls and e.health(m.client_urls[0])]
                if len(healthy) < self.fewest:
                    self.worst = f"{len(healthy)} healthy of voters {sorted(m.name for m in voters)} at {time.monotonic():.1f}"
                self.fewest = min(self.fewest, len(healthy))
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


# -- the clusters: an autoscaling group in moto, managed instance groups in the fake GCE ------


class Writer:
    """Puts /w/<i> through whatever members the group has now, until stopped (bounded);
    keeps what etcd acknowledged and counts what failed."""

    def __init__(self, m: Machines, endpoints: Callable[[], list[str]]) -> None:
        self.acked: list[str] = []
        self.failed = 0
        self._m, self._endpoints = m, endpoints
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        end = time.monotonic() + 900
        for i in range(50_000):
            if self._stop.is_set() or time.monotonic() > end:
                return
            try:
                with self._m.client(self._endpoints()) as e:
                    e.put(f"/w/{i:05d}", str(i))
                self.acked.append(f"/w/{i:05d}")
            except Exception:  # a member going away: the next put goes elsewhere
                self.failed += 1
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(30)

    @property
    def share(self) -> float:
        tried = len(self.acked) + self.failed
        return len(self.acked) / tried if tried else 0.0


class Env:
    """A cluster as `bakery` sees it: its spec file and build folder."""

    def __init__(self, spec_file: Path, build: Path) -> None:
        from bakery.pipeline import Cluster

        self.spec_file, self.build = spec_file, build
        self.cluster = Cluster.load(spec_file, build)
        self.paths = self.cluster.paths
        self.spec = self.cluster.spec

    def reload(self) -> Any:
        from bakery.pipeline import Cluster

        return Cluster.load(self.spec_file, self.build)

    def render_callback(self, **kw: Any) -> Any:
        return self.reload().render_callback(**kw)

    def tls(self) -> TLS:
        pki = self.paths.pki / "etcd"
        return TLS(pki / "ca.crt", pki / "healthcheck-client.crt", pki / "healthcheck-client.key")


@contextlib.contextmanager
def loopback_clouds() -> Iterator[None]:
    """While it lasts, AWS and GCP specs may put their masters on loopback. The harness runs
    every cloud instance as processes on this host, each on its own 127.x address, which is
    the one thing the real clouds refuse (bakery/spec.py SUBNET_REFUSED; the refusal itself
    is tested in tests/test_spec_grammar.py). Only the loopback rule is lifted, only here."""
    from bakery import grammar, spec

    saved = {c: spec.SUBNET_REFUSED[c] for c in ("aws", "gcp")}
    for c, refused in saved.items():
        spec.SUBNET_REFUSED[c] = tuple(r for r in refused if r != grammar.LOOPBACK)
    try:
        yield
    finally:
        spec.SUBNET_REFUSED.update(saved)


def _loopback_subnets(count: int) -> tuple[int, list[str], tuple[int, int]]:
    for _ in range(20):
        a = random.randint(64, 250)
        subnets = [f"127.{a}.{z}.0/24" for z in range(1, count + 1)]
        ports = ports_free_on(subnets)
        if ports:
            return a, subnets, ports
    raise AssertionError("no loopback subnets with free etcd ports")


@contextlib.contextmanager
def aws_group(folder: Path, moto: Any, etcd_bin: Path, masters: int = 3, *,
              latency: float = 0.0) -> Iterator[tuple[Any, Machines, Env]]:
    """`bakery up` of an `aws.masters: asg` cluster in moto with the real pipeline, and a
    machine per instance of its group. `latency`: seconds added before every AWS call the
    provider makes."""
    with loopback_clouds():
        yield from _aws_group(folder, moto, etcd_bin, masters, latency=latency)


def _aws_group(folder: Path, moto: Any, etcd_bin: Path, masters: int, *, latency: float) -> Iterator[tuple[Any, Machines, Env]]:
    from bakery.node import ec2 as node_ec2
    from bakery.providers.aws.provider import create
    from tests.moto_server import Calls, record_ami

    a, subnets, ports = _loopback_subnets(3)
    zones = "\n".join(f"    - {{name: us-east-1{z}, subnet: {s}}}" for z, s in zip("abc", subnets, strict=True))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cluster.yaml").write_text(
        f"name: demo\nprovider: aws\nmasters: {masters}\nnetwork: {{subnet: 127.{a}.0.0/16}}\n"
        f"etcd: {{client_port: {ports[0]}, peer_port: {ports[1]}}}\n"
        f"aws:\n  region: us-east-1\n  masters: asg\n  zones:\n{zones}\n")
    env = Env(folder / "cluster.yaml", folder / "build")
    env.paths.base.mkdir(parents=True, exist_ok=True)
    record_ami(env.paths, moto.register_ami())
    base = moto.factory(Calls())

    def factory(service: str) -> Any:
        client = base(service)
        if latency:
            client.meta.events.register("before-send.*.*", lambda **_: time.sleep(latency))
        return client

    provider = create(env.spec, env.paths, lambda *e: None, client_factory=factory, poll_interval=0.1, wait_timeout=180)
    ec2 = moto.plain("ec2")
    seen: dict[str, Instance] = {}

    def instances() -> list[Instance]:
        g = moto.plain("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=["demo-masters"])["AutoScalingGroups"]
        ids = [i["InstanceId"] for i in g[0]["Instances"]] if g else []
        if not ids:
            return []
        out = []
        for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]:
            for i in r["Instances"]:
                if i["State"]["Name"] not in ("pending", "running"):
                    continue
                iid = i["InstanceId"]
                if iid not in seen:
                    ud = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]
                    seen[iid] = Instance(iid, i["PrivateDnsName"].split(".")[0], i["PrivateIpAddress"],
                                         i["Placement"]["AvailabilityZone"], base64.b64decode(ud), "aws")
                out.append(seen[iid])
        return out

    provider.up(env.render_callback(store=provider.store))  # renders, publishes, then the group starts
    store = provider.store()
    with Machines(folder / "machines", etcd_bin, env.tls(), store, instances,
                  is_alive=node_ec2.instance_alive(ec2, store, env.spec.name), path=aws_path(ec2, "us-east-1")) as m:
        yield provider, m, env


GCP_IMAGE, GCP_IMAGE2 = "bakery-k8s-1-31-4-abc123", "bakery-k8s-1-31-4-def456"


@contextlib.contextmanager
def gcp_group(folder: Path, etcd_bin: Path, masters: int = 3, *,
              latency: float = 0.0) -> Iterator[tuple[Any, Machines, Any, Callable[[str], tuple[Any, Env]]]]:
    """`bakery up` of a `gcp.masters: mig` cluster in the fake GCE (store in the fake GCS)
    with the real pipeline, and a machine per instance of its groups. Yields (provider,
    machines, the fake GCE, make(image) -> (a provider for a spec with that image, its Env)).
    `latency`: seconds the fake GCE adds to every request."""
    from bakery.providers.gcp import GcpProvider
    from bakery.render.userdata import decode
    from tests.fake_gce import FakeGCE
    from tests.fake_gcs import FakeGCS

    _, (subnet,), ports = _loopback_subnets(1)
    saved = {k: os.environ.get(k) for k in ("BAKERY_GCS_ENDPOINT_URL", "BAKERY_GCP_IAM_ENDPOINT_URL")}
    with loopback_clouds(), FakeGCE(project="test-project", ephemeral_range=subnet, latency=latency).running() as gce, \
            FakeGCS(project="test-project").running() as gcs:
        os.environ["BAKERY_GCS_ENDPOINT_URL"] = os.environ["BAKERY_GCP_IAM_ENDPOINT_URL"] = gcs.url
        try:
            gce.add_image(GCP_IMAGE)
            gce.add_image(GCP_IMAGE2)
            folder.mkdir(parents=True, exist_ok=True)

            def make(image: str) -> tuple[Any, Env]:
                (folder / "cluster.yaml").write_text(
                    f"name: demo\nprovider: gcp\nmasters: {masters}\nnetwork: {{subnet: {subnet}}}\n"
                    f"etcd: {{client_port: {ports[0]}, peer_port: {ports[1]}}}\n"
                    f"gcp:\n  project: test-project\n  image: {image}\n  endpoint_url: {gce.url}\n")
                env = Env(folder / "cluster.yaml", folder / "build")
                return GcpProvider(env.spec, env.paths, poll_seconds=0.05), env

            provider, env = make(GCP_IMAGE)
            provider.up(env.render_callback(store=provider.store))
            store = provider.store()
            seen: dict[str, Instance] = {}

            def instances() -> list[Instance]:
                out = []
                for i in gce.resources("instances"):
                    if i["status"] not in ("STAGING", "RUNNING"):
                        continue
                    iid = str(i["id"])
                    if iid not in seen:
                        meta = {x["key"]: x["value"] for x in i["metadata"]["items"]}
                        ud = decode(meta["user-data"].encode(), meta.get("user-data-encoding", "plain"))  # type: ignore[arg-type]
                        seen[iid] = Instance(iid, i["name"], i["networkInterfaces"][0]["networkIP"],
                                             i["zone"].rsplit("/", 1)[-1], ud, "gce")
                    out.append(seen[iid])
                return out

            with Machines(folder / "machines", etcd_bin, env.tls(), store, instances, path=gce_path(gce)) as m:
                yield provider, m, gce, make
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
