"""End to end on the container runtime (the local default): `bakery up` boots three
systemd-nspawn masters from the session's one real bake, then checks inside the
containers (through nsenter), the network's safety, the supervisor replacing a killed
master, a rollout under a writer, five masters, and `down --purge` leaving nothing.

Needs root (mounts, network namespaces, a bridge). Selected with `-m containers`.
BAKERY_E2E_IMAGE=/path/disk.qcow2 (root/ beside it) skips the bake while developing.
Every packet goes to the test's own bridge subnet (chosen free of this host's routes)
or to 127.0.0.1; the "outside" address is only ever tried from inside a namespace that
has no route to it, where connect() fails before any packet exists.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from bakery import apiserver, backup, restore
from bakery import spec as spec_mod
from bakery.errors import EtcdError
from bakery.etcd import Client, Member
from bakery.node import members as records
from bakery.providers.base import no_progress
from bakery.providers.local import bridge, container, lb, proc
from bakery.providers.local.net import free_port_base, listening_ports
from bakery.providers.local.provider import LocalProvider
from bakery.state import paths as cluster_paths
from bakery.store import layout
from tests.conftest import need, need_binary
from tests.control_plane import binaries
from tests.etcd_fixtures import all_healthy_within

pytestmark = pytest.mark.containers

BAKERY = str(Path(sys.executable).parent / "bakery")
# An address in another private range, for the "cannot reach outside" check. It is never
# contacted: inside a master's namespace there is no route to it.
OUTSIDE = "192.168.255.1"


@dataclass
class Cluster:
    name: str
    spec_file: Path
    build: Path
    provider: LocalProvider

    def bakery(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        argv = [BAKERY, *args, "-f", str(self.spec_file), "-o", str(self.build)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def sh(self, node: str, script: str, timeout: float = 120) -> str:
        r = self.provider.ssh_run(node, ["sh", "-c", script], timeout=timeout)
        assert r.returncode == 0, f"{node}: {script!r} exited {r.returncode}: {r.stderr}"
        return r.stdout

    def etcd(self) -> Client:
        return Client([self.provider.endpoint], tls=self.provider.tls(), timeout=10)

    @property
    def nodes(self) -> list[str]:
        return [n.name for n in self.provider.net.nodes]

    @property
    def admin_kubeconfig(self) -> Path:
        return self.build / self.name / "admin.kubeconfig"

    def kubectl(self, *args: str, timeout: float = 60) -> str:
        """The real kubectl of the spec's version, as the admin kubeconfig `up` wrote."""
        argv = [str(binaries()["kubectl"]), f"--kubeconfig={self.admin_kubeconfig}", "--request-timeout=20s", *args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, f"kubectl {' '.join(args)} exited {r.returncode}: {r.stderr}"
        return r.stdout

    def lease_holder(self, component: str) -> str | None:
        """The master whose `component` holds its Lease (holderIdentity is `<hostname>_<uuid>`)."""
        try:
            lease = json.loads(self.kubectl("get", "lease", "-n", "kube-system", component, "-o", "json"))
        except AssertionError:
            return None
        holder = lease["spec"].get("holderIdentity") or ""
        return holder.split("_", 1)[0] or None

    def admin_api(self, timeout: float = 10) -> httpx.Client:
        """An HTTP client through the load balancer's API port as the admin identity."""
        pki = self.build / self.name / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return httpx.Client(base_url=self.provider.net.api_endpoint, verify=context, timeout=timeout)


def _free_base() -> int:
    base = free_port_base(26000)
    if base is None:
        raise AssertionError("no free port range")
    return base


def _free_subnet() -> str:
    """A /24 in 10.250-10.254 that overlaps no route of this host."""
    used = [ipaddress.IPv4Network(str(r["dst"]), strict=False) for r in bridge.routes()
            if r.get("dst") not in (None, "default")]
    for second in range(250, 255):
        for third in range(0, 256, 7):
            net = ipaddress.IPv4Network(f"10.{second}.{third}.0/24")
            if not any(net.overlaps(u) for u in used):
                return str(net)
    raise AssertionError("no free subnet")


def _our_processes(cluster: str, build: Path) -> list[int]:
    """PIDs whose command line carries this cluster's markers (nspawn's --machine, a path
    under the test's build folder: HAProxy's config, the supervisor's spec)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if f"bakery-{cluster}-".encode() in cmdline or str(build).encode() in cmdline:
            pids.append(int(d.name))
    return pids


def _mounts_under(build: Path) -> list[str]:
    return [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(build))]


def _image(request: pytest.FixtureRequest) -> str:
    if os.environ.get("BAKERY_E2E_IMAGE"):
        return os.environ["BAKERY_E2E_IMAGE"]
    build: Path = request.getfixturevalue("local_image")
    return json.loads((build / "demo" / "images.json").read_text())["local"]["disk"]


def _start(tmp: Path, name: str, masters: int, image: str, subnet: str) -> Cluster:
    text = (
        f"name: {name}\nprovider: local\nmasters: {masters}\nelection: podmaster\nruntime: systemd\n"
        f"network: {{subnet: {subnet}}}\netcd: {{bootstrap: static}}\n"
        f"local: {{runtime: container, port_base: {_free_base()}, image: '{image}'}}\n"
    )
    spec_file = tmp / "cluster.yaml"
    spec_file.write_text(text)
    build = tmp / "build"
    s = spec_mod.load(spec_file)
    return Cluster(name, spec_file, build, LocalProvider(s, cluster_paths(s.name, build), no_progress))


def _cleanup(c: Cluster) -> None:
    c.bakery("down", "--purge", timeout=300)
    for pid in _our_processes(c.name, c.build):  # only if down failed: ours by marker, by PID
        os.kill(pid, signal.SIGKILL)


def _root_tools() -> None:
    need("root (mounts, network namespaces, a bridge)", os.geteuid() == 0)
    for tool in ("systemd-nspawn", "nsenter", "ip", "haproxy", "mount"):
        need_binary(tool)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    _root_tools()
    image = _image(request)
    c = _start(tmp_path_factory.mktemp("ct"), "ct", 3, image, _free_subnet())
    try:
        r = c.bakery("up")
        assert r.returncode == 0, f"up failed:\n{r.stdout}\n{r.stderr[-3000:]}"
        assert "healthy" in r.stderr and "supervisor" in r.stderr
        assert "admin authorized" in r.stderr and "get leases -n kube-system" in r.stdout, r.stderr[-2000:]
        yield c
    finally:
        _cleanup(c)


def test_second_up_is_a_no_op(cluster: Cluster) -> None:
    pids = {n: cluster.provider.master_pid(n) for n in cluster.nodes}
    r = cluster.bakery("up")
    assert r.returncode == 0, r.stderr
    assert "0 created" in r.stdout
    assert {n: cluster.provider.master_pid(n) for n in cluster.nodes} == pids


def test_cloud_init_finished_without_errors_in_every_container(cluster: Cluster) -> None:
    for node in cluster.nodes:
        out = cluster.sh(node, "timeout 300 cloud-init status --wait >/dev/null; cloud-init status; "
                               "cat /run/cloud-init/result.json", timeout=330)
        status, _, result = out.partition("\n")
        assert status == "status: done", f"{node}: {out}"
        assert json.loads(result)["v1"]["errors"] == [], f"{node}: {result}"
        assert cluster.provider.cloud_init_result(node) == "done"


def test_masters_boot_the_small_user_data_and_bakery_node_writes_the_rendered_tree(cluster: Cluster) -> None:
    """Each master booted the cluster's one secret-free user-data; bakery-node wrote the
    tree `bakery render` writes (same modes; same bytes but for the node's own keys and
    certificates, which it made itself)."""
    for node in cluster.nodes:
        ours = cluster.build / cluster.name / "nodes" / node
        boot = (ours / "user-data").read_bytes()
        assert b"PRIVATE KEY" not in boot and b"bakery-node.service" in boot
        tree = ours / "files"
        files = sorted(p for p in tree.rglob("*") if p.is_file())
        assert len(files) > 20, "the render wrote no tree"
        paths = " ".join(f"'/{p.relative_to(tree)}'" for p in files)
        hostname, machine_id, active = cluster.sh(
            node, "hostname; cat /etc/machine-id; systemctl is-active bakery-node.service").splitlines()
        assert hostname == node
        assert len(machine_id) == 32  # made at first boot from the image's empty one
        assert active == "active", f"{node}: bakery-node.service {active}"
        stats = [line.split(" ", 2) for line in cluster.sh(node, f"stat -c '%a %U:%G %n' {paths}").splitlines()]
        modes = {path: (mode, owner) for mode, owner, path in stats}
        sums = {path: digest for digest, path in (line.split(maxsplit=1) for line in cluster.sh(node, f"sha256sum {paths}").splitlines())}
        for p in files:
            path = f"/{p.relative_to(tree)}"
            mode, owner = modes[path]
            assert int(mode, 8) == p.stat().st_mode & 0o777, f"{node}:{path} mode {mode}"
            assert owner == "root:root", f"{node}:{path} owner {owner}"
            same = sums[path] == hashlib.sha256(p.read_bytes()).hexdigest()
            shared = p.name in ("ca.crt", "ca.key", "front-proxy-ca.crt", "front-proxy-ca.key", "sa.key", "sa.pub")  # from the store
            own = path.endswith((".key", ".crt", ".conf")) and not shared  # issued on the node
            if path == "/var/log/kube-apiserver-audit.log":
                continue  # created empty by the render; the running API server writes into it
            if path.endswith(".key") and own:
                assert not same, f"{node}:{path}: the operator's key, not one made on the node"
            elif not own:
                assert same, f"{node}:{path} differs from what bakery render wrote"
    ids = {cluster.sh(n, "cat /etc/machine-id").strip() for n in cluster.nodes}
    assert len(ids) == len(cluster.nodes), "every container has its own machine-id"


def test_etcd_healthy_with_every_member_through_haproxy(cluster: Cluster) -> None:
    with cluster.etcd() as etcd:
        assert sorted(m.name for m in etcd.member_list()) == sorted(cluster.nodes)
        health = all_healthy_within(etcd, [cluster.provider.endpoint, *map(cluster.provider.node_endpoint, cluster.nodes)])
        assert all(health.values()), health
        leaders = {etcd.status(cluster.provider.node_endpoint(n)).leader for n in cluster.nodes}
        assert len(leaders) == 1 and 0 not in leaders
        etcd.put("/ct/hello", "world")
        assert etcd.get("/ct/hello").value == b"world"


def test_podmaster_lock_held_by_exactly_one_node(cluster: Cluster) -> None:
    holders: dict[str, str] = {}
    for component in ("kube-scheduler", "kube-controller-manager"):
        key = f"/bakery/{cluster.name}/podmaster/{component}"
        kv = None
        deadline = time.monotonic() + 60
        with cluster.etcd() as etcd:
            while time.monotonic() < deadline and (kv := etcd.get(key)) is None:
                time.sleep(1)
        assert kv is not None and kv.value.decode() in cluster.nodes, f"{key}: no node holds the lock"
        assert kv.lease != 0  # held under a lease, so it frees itself
        holders[component] = kv.value.decode()
    # runtime: systemd: the holder's podmaster keeps its token in /run/bakery/elected and runs
    # the component's unit; nobody else runs it
    have = {n: cluster.sh(n, "ls /run/bakery/elected/ 2>/dev/null || true").split() for n in cluster.nodes}
    for component, holder in holders.items():
        copies = [n for n in cluster.nodes if f"{component}.service" in have[n]]
        assert copies == [holder], f"{component}: token on {copies}, lock held by {holder}"
        deadline = time.monotonic() + 60
        while True:
            active = [n for n in cluster.nodes
                      if cluster.sh(n, f"systemctl is-active {component}.service || true").strip() in ("active", "activating")]
            if active == [holder] or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert active == [holder], f"{component}: running on {active}, lock held by {holder}"


def test_kubectl_through_the_load_balancer_acts_as_admin_and_the_leases_follow_the_podmaster_locks(cluster: Cluster) -> None:
    """What a user does after `make up`: the real kubectl with build/<cluster>/admin.kubeconfig,
    through the load balancer's API port. The scheduler and the controller-manager run only
    where the podmaster holds their lock, and that master's copy holds the Lease."""
    assert cluster.kubectl("get", "--raw=/readyz").strip() == "ok"
    assert cluster.kubectl("auth", "can-i", "*", "*", "--all-namespaces").strip() == "yes"  # bakery's RBAC addon
    server = yaml_server(cluster.admin_kubeconfig)
    assert server == cluster.provider.net.api_endpoint
    with cluster.etcd() as etcd:
        for component in ("kube-scheduler", "kube-controller-manager"):
            deadline = time.monotonic() + 90
            while (holder := cluster.lease_holder(component)) is None and time.monotonic() < deadline:
                time.sleep(2)
            lock = etcd.get(f"/bakery/{cluster.name}/podmaster/{component}")
            assert lock is not None and holder == lock.value.decode(), (component, holder, lock)
    doc = json.loads(cluster.bakery("status", "--output", "json").stdout)
    assert doc["extra"]["api"]["ready"] is True and all(n["extra"]["api"] == "ready" for n in doc["nodes"]), doc


def yaml_server(kubeconfig: Path) -> str:
    return yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]


def test_containers_reach_nothing_outside_the_cluster_subnet(cluster: Cluster) -> None:
    br = cluster.provider.runtime.br  # type: ignore[attr-defined]
    subnet = ipaddress.IPv4Network(br.subnet)
    # the bridge forwards nothing and has no IPv6
    assert bridge.forwarding(br.bridge) == "0"
    assert Path(f"/proc/sys/net/ipv6/conf/{br.bridge}/disable_ipv6").read_text().strip() == "1"
    for n in cluster.provider.net.nodes:
        ns = br.netns(cluster.name, n.index)
        table = bridge.routes(ns)
        assert not any(r.get("dst") == "default" for r in table), f"{ns}: a default route: {table}"
        for r in table:
            dst = ipaddress.IPv4Network(str(r["dst"]), strict=False)
            assert dst.subnet_of(subnet) or dst.is_loopback, f"{ns}: route to {r['dst']} outside {subnet}"
        # the container itself sees the same table, and connect() fails at once, sending nothing
        script = (f"ip -4 route show table all | grep -c default || true; "
                  f"python3 -c \"import socket,errno\ns=socket.socket()\ns.settimeout(5)\n"
                  f"try:\n s.connect(('{OUTSIDE}', 80)); print('connected')\n"
                  f"except OSError as e: print(errno.errorcode.get(e.errno, e.errno))\"")
        defaults, result = cluster.sh(n.name, script).split()
        assert defaults == "0" and result == "ENETUNREACH", (n.name, defaults, result)
    # and the host's own namespace: the same check from a netns of ours, via the kernel's route lookup
    r = subprocess.run(["ip", "netns", "exec", br.netns(cluster.name, 0), "ip", "-4", "route", "get", OUTSIDE],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "unreachable" in r.stderr.lower(), r
    # the host reaches the subnet through the bridge, by a route of its own
    assert any(x.get("dst") == br.subnet and x.get("dev") == br.bridge for x in bridge.routes())
    with socket.socket() as s:
        s.settimeout(5)
        assert s.connect_ex((cluster.provider.net.nodes[0].address, 2379)) == 0


def test_down_then_up_boots_the_same_masters_with_their_data(cluster: Cluster) -> None:
    with cluster.etcd() as etcd:
        ids = {m.name: m.id for m in etcd.member_list()}
        etcd.put("/ct/across-down", "kept")
    r = cluster.bakery("down")
    assert r.returncode == 0, r.stderr
    assert _mounts_under(cluster.build) == [] and not any(cluster.provider.master_pid(n) for n in cluster.nodes)
    assert all((cluster.provider.layout.root / n / "overlay" / "upper").is_dir() for n in cluster.nodes)  # kept
    r = cluster.bakery("up")
    assert r.returncode == 0, f"up failed:\n{r.stdout}\n{r.stderr[-3000:]}"
    with cluster.etcd() as etcd:
        assert {m.name: m.id for m in etcd.member_list()} == ids  # the same members, from their own data
        assert etcd.get("/ct/across-down").value == b"kept"


def test_a_killed_container_is_replaced_by_a_new_master_at_a_new_address(cluster: Cluster) -> None:
    """The supervisor as an autoscaling group: the dead master's member is removed, a new
    master with a new name and address boots the same small user-data, and its
    bakery-node joins etcd by itself; HAProxy follows."""
    victim = cluster.nodes[-1]
    old_address = cluster.provider.net.node(victim).address
    with cluster.etcd() as etcd:
        before = {m.name: m.id for m in etcd.member_list()}
        etcd.put("/ct/before-kill", "kept")
    _kill(cluster, victim)
    after = _wait_healed(cluster, victim)
    with cluster.etcd() as etcd:
        assert etcd.get("/ct/before-kill").value == b"kept"
    log = (cluster.provider.layout.supervisor / "supervisor.log").read_text()
    (new,) = set(after) - set(before)
    assert new == f"{cluster.name}-master-r1" and f"{victim}: replaced and promoted ({new} in its place)" in log
    assert all(after[n].id == before[n] for n in before if n != victim)
    address = cluster.provider.net.node(new).address
    assert address != old_address and address not in {cluster.provider.net.node(n).address for n in before if n != victim}
    assert ipaddress.IPv4Address(address) in ipaddress.IPv4Network(cluster.provider.runtime.br.subnet)  # type: ignore[attr-defined]
    assert cluster.sh(new, "hostname").strip() == new
    assert cluster.sh(new, "ip -4 -o addr show dev eth0").split()[3].split("/")[0] == address
    joined = cluster.sh(new, "journalctl -b --no-pager -u bakery-node -o cat")
    assert "learner" in joined, joined[-2000:]  # bakery-node joined it as a learner, nobody else did
    backends = lb.server_states(cluster.provider.layout.stats_socket)
    assert set(backends) == set(cluster.nodes) and victim not in backends
    assert f"server {new} {address}:" in cluster.provider.layout.haproxy_cfg.read_text()
    assert not (cluster.provider.layout.root / victim / "overlay").exists()  # the dead machine is gone
    assert (cluster.provider.layout.root / victim / "console.log.retired").exists()  # its console is kept


def test_killing_the_lease_holder_moves_the_lease_and_the_api_keeps_answering(cluster: Cluster) -> None:
    """HA for real: kill the master whose controller-manager holds the Lease. Its podmaster
    lock expires (its TTL), another master's podmaster starts the controller-manager, which
    takes the Lease once the dead holder's lease lapses; meanwhile /readyz through the load
    balancer, sampled every second, keeps answering."""
    component = "kube-controller-manager"
    # a live holder first: after the previous test's kill the Lease may still name the dead master
    deadline = time.monotonic() + 180
    while (victim := cluster.lease_holder(component)) not in cluster.nodes and time.monotonic() < deadline:
        time.sleep(2)
    assert victim in cluster.nodes, f"{component}'s Lease held by {victim}, not one of {cluster.nodes}"
    lease = json.loads(cluster.kubectl("get", "lease", "-n", "kube-system", component, "-o", "json"))["spec"]
    podmaster = int(re.search(r"--ttl-secs=(\d+)", cluster.sh(victim, f"systemctl cat podmaster-{component}.service"))[1])
    # the dead lock's TTL, then the component's start, then the dead holder's Lease
    bound = podmaster + int(lease["leaseDurationSeconds"]) + 30
    samples: list[tuple[float, str]] = []
    stop = threading.Event()

    def sample() -> None:
        ca = cluster.provider.cluster_ca
        for _ in range(600):  # bounded: one a second, at most 10 minutes
            if stop.is_set():
                return
            t = time.monotonic()
            samples.append((t, apiserver.readyz(cluster.provider.net.api_endpoint, ca, timeout=10).detail))
            stop.wait(max(0.0, 1 - (time.monotonic() - t)))

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        killed = time.monotonic()
        _kill(cluster, victim)
        moved = None
        while time.monotonic() < killed + bound + 30:
            holder = cluster.lease_holder(component)
            if holder is not None and holder != victim:
                moved = (holder, time.monotonic() - killed)
                break
            time.sleep(1)
        time.sleep(3)  # a few samples after the move
    finally:
        stop.set()
        t.join(30)
    assert moved is not None, f"{component}'s Lease still held by {victim} {bound + 30}s after it was killed"
    holder, took = moved
    assert holder in cluster.nodes and took <= bound, f"{holder} took the Lease {took:.0f}s after the kill (bound {bound}s)"
    during = [(round(at - killed, 1), d) for at, d in samples if at >= killed]
    assert len(during) >= took * 0.5, during  # sampled throughout (each at most 10 s)
    assert all(d == "ok" for _, d in during), f"/readyz through the load balancer failed while {victim} died: {during}"
    _wait_healed(cluster, victim)


def _wait_healed(cluster: Cluster, victim: str) -> dict[str, Member]:
    """Until the supervisor replaced `victim` and the group (read afresh) is three healthy
    voters again; the members then, by name."""
    deadline = time.monotonic() + 300
    log = cluster.provider.layout.supervisor / "supervisor.log"
    while time.monotonic() < deadline:
        names = cluster.nodes
        try:
            with cluster.etcd() as etcd:
                members = {m.name: m for m in etcd.member_list()}
                if (f"{victim}: replaced and promoted" in log.read_text() and victim not in names and len(names) == 3
                        and set(members) == set(names) and not any(m.is_learner for m in members.values())
                        and all(etcd.health(cluster.provider.node_endpoint(n)) for n in names)):
                    return members
        except EtcdError:
            pass
        time.sleep(2)
    raise AssertionError(f"{victim} not replaced within 300s; supervisor log:\n{log.read_text()[-3000:]}")


def test_rollout_under_a_writer_loses_no_acknowledged_write(cluster: Cluster) -> None:
    acked: list[int] = []
    failed: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        with Client([cluster.provider.endpoint], tls=cluster.provider.tls(), timeout=5) as etcd:
            for i in range(100_000):  # bounded in count, and by `stop`
                if stop.is_set():
                    return
                try:
                    etcd.put(f"/ct/w/{i:06d}", str(i))
                    acked.append(i)
                except EtcdError as e:
                    failed.append(str(e))
                time.sleep(0.02)

    api_acked: list[int] = []
    api_failed: list[str] = []

    def api_writer() -> None:
        with cluster.admin_api() as api:
            for i in range(100_000):  # bounded in count, and by `stop`
                if stop.is_set():
                    return
                try:
                    r = api.post("/api/v1/namespaces/default/configmaps",
                                 json={"metadata": {"name": f"w-{i:06d}"}, "data": {"i": str(i)}})
                    if r.status_code == 201:
                        api_acked.append(i)
                    else:
                        api_failed.append(f"HTTP {r.status_code}")
                except httpx.HTTPError as e:
                    api_failed.append(type(e).__name__)
                time.sleep(0.05)

    old = cluster.nodes
    r = cluster.bakery("rollout", "--dry-run")
    assert r.returncode == 0 and all(f"replace {n}" in r.stdout for n in old), r.stdout
    assert cluster.nodes == old  # a dry run changes nothing
    threads = [threading.Thread(target=writer, daemon=True), threading.Thread(target=api_writer, daemon=True)]
    for t in threads:
        t.start()
    try:
        r = cluster.bakery("rollout", "--timeout", "300", timeout=900)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert r.returncode == 0, f"rollout failed:\n{r.stdout}\n{r.stderr[-3000:]}"
    assert all(f"{n}: replaced in" in r.stdout for n in old), r.stdout
    assert not set(old) & set(cluster.nodes) and len(cluster.nodes) == len(old)  # surged: new names, old ones retired
    assert r.stderr.count("snapshot") >= len(old) and r.stderr.count("surging") >= len(old), r.stderr[-3000:]
    store = cluster.provider.store()
    assert layout.rollout_journal(cluster.name) not in store.list(layout.cluster_prefix(cluster.name))  # done: no journal
    assert backup.list_backups(store, cluster.name)  # a snapshot before each replacement (same minute and revision: one id)
    assert len(acked) > 10, f"the writer barely wrote ({len(acked)} acknowledged, {len(failed)} failed)"
    with cluster.etcd() as etcd:
        stored = {kv.key.decode(): kv.value.decode() for kv in etcd.range("/ct/w/", prefix=True)}
    lost = [i for i in acked if stored.get(f"/ct/w/{i:06d}") != str(i)]
    assert lost == [], f"{len(lost)} acknowledged writes lost (of {len(acked)})"
    # and through the Kubernetes API: every ConfigMap the API server acknowledged (201) is there
    assert len(api_acked) > 10, f"the API writer barely wrote ({len(api_acked)} acknowledged, failures: {api_failed[:10]})"
    with cluster.admin_api(timeout=30) as api:
        items = api.get("/api/v1/namespaces/default/configmaps").json()["items"]
    have = {c["metadata"]["name"]: c.get("data", {}).get("i") for c in items}
    lost_api = [i for i in api_acked if have.get(f"w-{i:06d}") != str(i)]
    assert lost_api == [], f"{len(lost_api)} acknowledged ConfigMaps lost (of {len(api_acked)})"


def _kill(cluster: Cluster, node: str) -> None:
    """SIGKILL the container's init: the whole container goes, as a dead machine does."""
    pid = cluster.provider.master_pid(node)
    assert pid
    leader = container.leader_pid(pid)
    assert leader
    os.kill(leader, signal.SIGKILL)
    assert proc.wait_exit(pid, 60), "nspawn outlived its container"


def _backup(cluster: Cluster) -> str:
    r = cluster.bakery("backup")
    assert r.returncode == 0, f"backup failed:\n{r.stdout}\n{r.stderr[-3000:]}"
    m = re.search(r"^backup (\S+): ", r.stdout, re.M)
    assert m, r.stdout
    return m[1]


def _objects(cluster: Cluster) -> dict[str, bytes]:
    store = cluster.provider.store()
    return {k: store.get(k) for k in store.list(layout.cluster_prefix(cluster.name))}


def _clusters(cluster: Cluster) -> dict[str, tuple[int, bool]]:
    """Each group member's etcd: (its cluster id, whether it leads)."""
    with cluster.etcd() as etcd:
        seen = {}
        for n in cluster.nodes:
            st = etcd.status(cluster.provider.node_endpoint(n))
            seen[n] = (st.cluster_id, st.is_leader)
    return seen


def test_after_a_rollout_backup_works_restore_is_refused_and_a_kill_heals_into_one_cluster(cluster: Cluster) -> None:
    """Issue 24, step by step as a new user runs it: after a rollout no master is at the
    plan's addresses; `bakery backup` still finds them, `bakery restore` sees them healthy
    and refuses (exit 6, the store unchanged, --force or not), and a killed master heals
    into the one cluster: one cluster id, one leader."""
    plan = {n.name for n in cluster.provider.plan.nodes}
    r = cluster.bakery("rollout", "--timeout", "300", timeout=900)
    assert r.returncode == 0, f"rollout failed:\n{r.stdout}\n{r.stderr[-3000:]}"
    assert not plan & set(cluster.nodes), cluster.nodes  # every master at a new name and address
    with cluster.etcd() as etcd:
        etcd.put("/ct/split/before", "kept")
    backup_id = _backup(cluster)
    before = _objects(cluster)
    for force in ((), ("--force",)):
        r = cluster.bakery("restore", "--backup", backup_id, *force)
        assert r.returncode == 6, f"restore {force} accepted over a healthy cluster:\n{r.stdout}\n{r.stderr}"
        assert "refusing to restore over a running cluster" in r.stderr, r.stderr
        assert all(f"{n} (" in r.stderr for n in cluster.nodes), r.stderr  # it names the members where they are
        assert _objects(cluster) == before  # nothing changed: request, marker, records as they were
    assert restore.pending(cluster.provider.store(), cluster.name) is None

    victim = cluster.nodes[0]
    _kill(cluster, victim)
    _wait_healed(cluster, victim)
    seen = _clusters(cluster)
    assert len({cid for cid, _ in seen.values()}) == 1 and 0 not in {cid for cid, _ in seen.values()}, seen
    assert sum(leads for _, leads in seen.values()) == 1, seen
    with cluster.etcd() as etcd:
        assert etcd.get("/ct/split/before").value == b"kept"
    r = cluster.bakery("status", "--output", "json")
    doc = json.loads(r.stdout)
    assert sum(1 for n in doc["nodes"] if n["extra"]["leader"]) == 1, doc["nodes"]
    found = doc["extra"]["etcd_members"]  # every member any source knows: one cluster, one leader
    assert {m["name"] for m in found} == set(cluster.nodes), found
    assert len({m["cluster_id"] for m in found}) == 1 and all(m["state"] == "healthy" for m in found), found
    assert len({m["name"] for m in found if m["leader"]}) == 1, found


def test_every_member_gone_restore_brings_the_backup_back_with_three_voters(cluster: Cluster) -> None:
    """The disaster the restore is for: every master and its data gone (`down --purge`
    keeps the store). The restore sees nothing running, needs no --force, and `up`
    brings the backup back as one cluster of three voters; a write after the backup is
    not in it."""
    with cluster.etcd() as etcd:
        for i in range(50):
            etcd.put(f"/ct/dr/k{i:03d}", f"v{i}")
    backup_id = _backup(cluster)
    with cluster.etcd() as etcd:
        etcd.put("/ct/dr/after-backup", "lost")
    r = cluster.bakery("down", "--purge", timeout=300)
    assert r.returncode == 0, r.stderr
    r = cluster.bakery("restore", "--backup", backup_id)
    assert r.returncode == 0, f"restore refused:\n{r.stdout}\n{r.stderr}"
    checked = [line for line in r.stderr.splitlines() if line.startswith("checked: ")]
    assert checked and all("its machine is not running" in line for line in checked), r.stderr
    assert restore.pending(cluster.provider.store(), cluster.name) is not None
    r = cluster.bakery("up")
    assert r.returncode == 0, f"up failed:\n{r.stdout}\n{r.stderr[-3000:]}"
    with cluster.etcd() as etcd:
        wait_until = time.monotonic() + 120
        while time.monotonic() < wait_until and restore.pending(cluster.provider.store(), cluster.name) is not None:
            time.sleep(2)  # the last member to be promoted completes the cluster and removes the request
        members = etcd.member_list()
        assert sorted((m.name, m.is_learner) for m in members) == [(n, False) for n in sorted(cluster.nodes)], members
        kvs = {kv.key.decode(): kv.value.decode() for kv in etcd.range("/ct/dr/", prefix=True)}
        assert kvs == {f"/ct/dr/k{i:03d}": f"v{i}" for i in range(50)}, sorted(kvs)[:5]
    seen = _clusters(cluster)
    assert len({cid for cid, _ in seen.values()}) == 1 and sum(leads for _, leads in seen.values()) == 1, seen
    assert restore.pending(cluster.provider.store(), cluster.name) is None


def test_down_purge_then_up_bootstraps_a_new_cluster(cluster: Cluster) -> None:
    """`down --purge` removes every master's disk and keeps the store: the store's marker and
    member records go with the disks, or the next `up`'s masters all wait, as learners, to
    join a cluster that no longer exists."""
    store = cluster.provider.store()
    assert records.bootstrapped(store, cluster.name) is not None
    with cluster.etcd() as etcd:
        etcd.put("/ct/before-purge", "old")
    r = cluster.bakery("down", "--purge", timeout=300)
    assert r.returncode == 0, r.stderr
    assert "etcd records etcd/bootstrapped" in r.stdout, r.stdout
    assert records.bootstrapped(store, cluster.name) is None and records.records(store, cluster.name) == []
    assert store.list(layout.pki_prefix(cluster.name)), "the CA material stays with the store"
    r = cluster.bakery("up")
    assert r.returncode == 0, f"up failed:\n{r.stdout}\n{r.stderr[-3000:]}"
    with cluster.etcd() as etcd:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(m.is_learner for m in etcd.member_list()):
            time.sleep(1)  # up waits for a healthy etcd; the last learners may still be promoting
        members = etcd.member_list()
        assert sorted((m.name, m.is_learner) for m in members) == [(n, False) for n in sorted(cluster.nodes)], members
        assert etcd.get("/ct/before-purge") is None  # a new cluster, not the old one's data
    assert records.bootstrapped(store, cluster.name) is not None  # the new cluster's own marker


def test_status_prints_tables_and_a_json_document(cluster: Cluster) -> None:
    r = cluster.bakery("status")
    assert r.returncode == 0, r.stderr
    assert "{" not in r.stdout and "'" not in r.stdout, f"a Python repr in:\n{r.stdout}"
    assert "CLOUD-INIT" in r.stdout and "LB BACKEND" in r.stdout and "forwarding off" in r.stdout
    r = cluster.bakery("status", "--output", "json")
    doc = json.loads(r.stdout)
    assert doc["schema"] == "bakery.status/v1" and doc["provider"] == "local"
    assert [n["name"] for n in doc["nodes"]] == cluster.nodes
    assert all(n["health"] == "healthy" and n["extra"]["runtime"] == "container" for n in doc["nodes"])
    assert doc["extra"]["services"] == {"haproxy": "running", "supervisor": "running"}
    assert set(doc["extra"]["backends"].values()) == {"UP"}
    node = cluster.nodes[0]
    r = cluster.bakery("logs", node, "-n", "400")  # the container's console
    assert r.returncode == 0 and "Cloud-init v." in r.stdout, r.stdout[-2000:]
    r = subprocess.run([BAKERY, "ssh", "-f", str(cluster.spec_file), "-o", str(cluster.build), node, "--", "hostname"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == node, r  # nsenter into the container


def test_down_purge_leaves_no_process_mount_netns_veth_bridge_or_file(cluster: Cluster) -> None:
    br = cluster.provider.runtime.br  # type: ignore[attr-defined]
    ports = set(cluster.provider.runtime.host_ports())
    first = cluster.nodes[0]
    r = cluster.bakery("down", "--purge", timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"container {first}" in r.stdout and "bridge" in r.stdout and "supervisor" in r.stdout
    assert _our_processes(cluster.name, cluster.build) == []
    assert _mounts_under(cluster.build) == []
    assert not any(bridge.netns_exists(br.netns(cluster.name, n.index)) for n in cluster.provider.net.nodes)
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True).stdout
    assert br.bridge not in links  # its veths carry its name too
    assert not ports & {p for _, p in listening_ports()}
    assert not cluster.provider.layout.root.exists()
    st = json.loads((cluster.build / cluster.name / "state.json").read_text())
    assert "bootstrapped" not in st and "initial_cluster" not in st  # the next up bootstraps afresh
    r = cluster.bakery("down", timeout=120)
    assert r.returncode == 0 and "nothing" in r.stdout


def test_five_masters(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    _root_tools()
    c = _start(tmp_path, "ct5", 5, _image(request), _free_subnet())
    try:
        r = c.bakery("up")
        assert r.returncode == 0, f"up failed:\n{r.stdout}\n{r.stderr[-3000:]}"
        with c.etcd() as etcd:
            assert sorted(m.name for m in etcd.member_list()) == sorted(c.nodes)
            health = all_healthy_within(etcd, [c.provider.node_endpoint(n) for n in c.nodes])
            assert all(health.values()), health
        for n in c.nodes:
            assert c.sh(n, "timeout 300 cloud-init status --wait >/dev/null; cloud-init status", timeout=330).strip() == "status: done"
    finally:
        _cleanup(c)
    assert _our_processes("ct5", c.build) == [] and _mounts_under(c.build) == []
