"""End to end, as a user runs it: `bakery bake`, `bakery up` (three QEMU VMs behind
HAProxy), checks inside the VMs over ssh and against etcd through the load balancer,
one VM killed, then `bakery down --purge`.

One 3-VM cluster for the whole module, booted from the session's one real bake
(tests/conftest.py: local_image, shared with tests/test_bake.py); ~5 minutes under TCG
on two cores. BAKERY_E2E_IMAGE=/path/disk.qcow2 (vmlinuz and initrd.img beside it)
skips the bake while developing; CI always bakes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bakery import spec as spec_mod
from bakery.etcd import Client
from bakery.providers.base import no_progress
from bakery.providers.local import lb, proc
from bakery.providers.local.net import listening_ports
from bakery.providers.local.provider import LocalProvider
from bakery.state import paths as cluster_paths
from tests.conftest import need_binary

pytestmark = pytest.mark.e2e

BAKERY = str(Path(sys.executable).parent / "bakery")


@dataclass
class Cluster:
    spec_file: Path
    build: Path
    provider: LocalProvider

    def bakery(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        argv = [BAKERY, *args, "-f", str(self.spec_file), "-o", str(self.build)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def ssh(self, node: str, script: str, timeout: float = 120) -> str:
        r = self.provider.ssh_run(node, ["sh", "-c", script], timeout=timeout)
        assert r.returncode == 0, f"{node}: {script!r} exited {r.returncode}: {r.stderr}"
        return r.stdout

    def etcd(self) -> Client:
        return Client([self.provider.endpoint], tls=self.provider.tls(), timeout=10)


def _free_base() -> int:
    taken = {p for _, p in listening_ports()}
    for base in range(24000, 60000, 100):
        if not taken & set(range(base, base + 60)):
            return base
    raise AssertionError("no free port range")


def _our_processes(cluster: str, build: Path) -> list[int]:
    """PIDs whose command line carries this cluster's markers: QEMU's -name, or a path
    under the test's build folder (HAProxy's config, etcd's data)."""
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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    for tool in ("qemu-system-x86_64", "qemu-img", "cloud-localds", "haproxy", "ssh", "ssh-keygen"):
        need_binary(tool)
    tmp = tmp_path_factory.mktemp("e2e")
    base = _free_base()
    # the session's one real bake (tests/conftest.py), unless a developer points at an image
    image = os.environ.get("BAKERY_E2E_IMAGE") or _baked(request)
    text = (
        "name: e2e\nprovider: local\nmasters: 3\nelection: podmaster\nruntime: systemd\n"
        f"etcd: {{bootstrap: static}}\nlocal: {{memory_mb: 768, cpus: 1, port_base: {base}"
        + (f", image: '{image}'" if image else "")
        + "}\n"
    )
    spec_file = tmp / "cluster.yaml"
    spec_file.write_text(text)
    build = tmp / "build"
    s = spec_mod.load(spec_file)
    c = Cluster(spec_file, build, LocalProvider(s, cluster_paths(s.name, build), no_progress))
    try:
        r = c.bakery("up")
        assert r.returncode == 0, f"up failed:\n{r.stdout}\n{r.stderr[-3000:]}"
        assert "healthy" in r.stderr and c.provider.endpoint in r.stderr
        yield c
    finally:
        c.bakery("down", "--purge", timeout=300)
        for pid in _our_processes(s.name, build):  # only if down failed: ours by marker, by PID
            os.kill(pid, signal.SIGKILL)


def _baked(request: pytest.FixtureRequest) -> str:
    build: Path = request.getfixturevalue("local_image")
    return json.loads((build / "demo" / "images.json").read_text())["local"]["disk"]


def _nodes(c: Cluster) -> list[str]:
    return [n.name for n in c.provider.net.nodes]


def test_second_up_is_a_no_op(cluster: Cluster) -> None:
    pids = {n: cluster.provider.vm_pid(n) for n in _nodes(cluster)}
    r = cluster.bakery("up", timeout=600)
    assert r.returncode == 0, r.stderr
    assert "0 created" in r.stdout
    assert {n: cluster.provider.vm_pid(n) for n in _nodes(cluster)} == pids


def test_cloud_init_finished_without_errors_on_every_node(cluster: Cluster) -> None:
    for node in _nodes(cluster):
        # bounded: cloud-init may still be in its last stage when etcd is already healthy
        out = cluster.ssh(node, "timeout 600 cloud-init status --wait >/dev/null; cloud-init status; "
                                "cat /run/cloud-init/result.json", timeout=660)
        status, _, result = out.partition("\n")
        assert status == "status: done", f"{node}: {out}"
        assert json.loads(result)["v1"]["errors"] == [], f"{node}: {result}"


def test_user_data_files_are_in_the_vms_with_their_modes_and_owners(cluster: Cluster) -> None:
    for node in _nodes(cluster):
        user_data = yaml.safe_load((cluster.build / "e2e" / "nodes" / node / "user-data").read_bytes())
        files = user_data["write_files"]
        assert files, "user-data writes no files"
        paths = " ".join(f"'{f['path']}'" for f in files)
        hostname, *lines = cluster.ssh(node, f"hostname; stat -c '%a %U:%G %n' {paths}").splitlines()
        assert hostname == node
        seen = {line.split(" ", 2)[2]: line.split(" ", 2)[:2] for line in lines}
        for f in files:
            mode, owner = seen[f["path"]]
            assert int(mode, 8) == int(f["permissions"], 8), f"{node}:{f['path']} mode {mode}, want {f['permissions']}"
            assert owner == f["owner"], f"{node}:{f['path']} owner {owner}, want {f['owner']}"


def test_etcd_healthy_with_every_member_through_the_load_balancer(cluster: Cluster) -> None:
    with cluster.etcd() as etcd:
        members = etcd.member_list()
        assert sorted(m.name for m in members) == sorted(_nodes(cluster))
        assert etcd.health(cluster.provider.endpoint)
        leaders = {etcd.status(cluster.provider.node_endpoint(n)).leader for n in _nodes(cluster)}
        assert len(leaders) == 1 and 0 not in leaders
        etcd.put("/e2e/hello", "world")
        assert etcd.get("/e2e/hello").value == b"world"


def test_podmaster_lock_held_by_exactly_one_node(cluster: Cluster) -> None:
    nodes = _nodes(cluster)
    holders: dict[str, str] = {}
    for component in ("kube-scheduler", "kube-controller-manager"):
        key = f"/bakery/e2e/podmaster/{component}"
        holder = None
        deadline = time.monotonic() + 120
        with cluster.etcd() as etcd:
            while time.monotonic() < deadline:
                kv = etcd.get(key)
                if kv is not None:
                    holder = kv.value.decode()
                    break
                time.sleep(2)
            assert holder in nodes and kv is not None, f"{key}: no node holds the lock"
            assert kv.lease != 0  # held under a lease, so it frees itself
        holders[component] = holder
    # one login per node: which elected manifests it has
    have = {n: cluster.ssh(n, "ls /etc/kubernetes/manifests/").split() for n in nodes}
    for component, holder in holders.items():
        copies = [n for n in nodes if f"{component}.manifest" in have[n]]
        assert copies == [holder], f"{component}: manifest on {copies}, lock held by {holder}"


def test_rollout_replaces_one_master_onto_a_fresh_disk_keeping_quorum(cluster: Cluster) -> None:
    """`bakery rollout --node`: member removed, re-added as a learner, the VM rebooted from a
    fresh overlay with user-data that joins the existing cluster, promoted, all healthy."""
    target = _nodes(cluster)[1]
    with cluster.etcd() as etcd:
        before = {m.name: m.id for m in etcd.member_list()}
        etcd.put("/e2e/before-rollout", "kept")
    old_disk_inode = cluster.provider.layout.node(target).disk.stat().st_ino
    r = cluster.bakery("rollout", "--node", target, "--timeout", "900", timeout=1200)
    assert r.returncode == 0, f"rollout failed:\n{r.stdout}\n{r.stderr[-3000:]}"
    assert f"{target}: replaced in" in r.stdout
    assert cluster.provider.layout.node(target).disk.stat().st_ino != old_disk_inode, "a fresh overlay"
    with cluster.etcd() as etcd:
        after = {m.name: m for m in etcd.member_list()}
        assert set(after) == set(before) and not any(m.is_learner for m in after.values())
        assert after[target].id != before[target]
        assert all(after[n].id == before[n] for n in before if n != target)
        assert etcd.get("/e2e/before-rollout").value == b"kept"
        for n in _nodes(cluster):
            assert etcd.health(cluster.provider.node_endpoint(n)), n
    # etcd joins from cloud-init's network stage on; cloud-init itself finishes a little later
    deadline = time.monotonic() + 600
    while (result := cluster.provider.cloud_init_result(target)) != "done" and time.monotonic() < deadline:
        assert not result.startswith("error"), result
        time.sleep(5)
    assert result == "done"
    unit = cluster.ssh(target, "cat /etc/systemd/system/etcd.service")
    assert "--initial-cluster-state=existing" in unit and "--initial-cluster-token" not in unit


def test_one_vm_killed_quorum_holds_and_haproxy_marks_it_down(cluster: Cluster) -> None:
    victim = _nodes(cluster)[-1]
    pid = cluster.provider.vm_pid(victim)
    assert pid
    os.kill(pid, signal.SIGKILL)
    assert proc.wait_exit(pid, 30)
    stats = cluster.provider.layout.stats_socket
    deadline = time.monotonic() + 60
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = lb.server_states(stats)
        if states[victim].startswith("DOWN"):
            break
        time.sleep(1)
    assert states[victim].startswith("DOWN"), states
    assert all(states[n].startswith("UP") for n in _nodes(cluster) if n != victim), states
    with cluster.etcd() as etcd:
        for i in range(20):  # every write through the LB succeeds with a member gone
            etcd.put(f"/e2e/after-kill/{i}", str(i))
        assert len(etcd.range("/e2e/after-kill/", prefix=True)) == 20
        assert etcd.health(cluster.provider.endpoint)
    status = {n.name: n for n in cluster.provider.status().nodes}
    assert status[victim].state == "stopped"
    for n in _nodes(cluster):
        if n != victim:
            assert status[n].health == "healthy" and status[n].extra["cloud-init"] == "done", status[n]


def test_down_leaves_no_process_listener_or_network(cluster: Cluster) -> None:
    ports = set(cluster.provider.net.host_ports)
    r = cluster.bakery("down", "--purge", timeout=300)
    assert r.returncode == 0, r.stderr
    assert "vm e2e-master-0" in r.stdout and "network hub" in r.stdout and "haproxy" in r.stdout
    assert _our_processes("e2e", cluster.build) == []
    assert not ports & {p for _, p in listening_ports()}
    assert not cluster.provider.layout.root.exists()
    r = cluster.bakery("down", timeout=120)
    assert r.returncode == 0 and "nothing" in r.stdout
