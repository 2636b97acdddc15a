"""End to end on the vm runtime (`local.runtime: vm`), as one test: `bakery up` (three
QEMU VMs behind HAProxy) from the session's one real bake, checks inside the VMs over
ssh and against etcd through the load balancer, `bakery status`, then `bakery down
--purge`. ~3-5 minutes under TCG on two cores.

The container runtime (the default) has the detailed end-to-end tests
(tests/test_containers.py: supervisor, rollout under a writer, network safety, five
masters); the machine-independent parts (launch_master, rollout.rejoin, HAProxy, the
supervisor) are the same code for both runtimes. BAKERY_E2E_IMAGE=/path/disk.qcow2
(vmlinuz and initrd.img beside it) skips the bake while developing; CI always bakes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bakery import spec as spec_mod
from bakery.etcd import Client
from bakery.providers.base import no_progress
from bakery.providers.local import lb
from bakery.providers.local.net import free_port_base, listening_ports
from bakery.providers.local.provider import LocalProvider
from bakery.state import paths as cluster_paths
from tests.conftest import need_binary
from tests.etcd_fixtures import all_healthy_within

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
    base = free_port_base(24000)
    if base is None:
        raise AssertionError("no free port range")
    return base


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


def test_three_vms_up_healthy_checked_and_down(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    for tool in ("qemu-system-x86_64", "qemu-img", "cloud-localds", "haproxy", "ssh", "ssh-keygen"):
        need_binary(tool)
    image = os.environ.get("BAKERY_E2E_IMAGE") or _baked(request)
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(
        "name: e2e\nprovider: local\nmasters: 3\nelection: podmaster\nruntime: systemd\n"
        f"user_data: embedded\netcd: {{bootstrap: static}}\nlocal: {{runtime: vm, memory_mb: 1536, cpus: 1, port_base: {_free_base()}, image: '{image}'}}\n"
    )
    build = tmp_path / "build"
    s = spec_mod.load(spec_file)
    c = Cluster(spec_file, build, LocalProvider(s, cluster_paths(s.name, build), no_progress))
    nodes = [n.name for n in c.provider.net.nodes]
    try:
        r = c.bakery("up")
        assert r.returncode == 0, f"up failed:\n{r.stdout}\n{r.stderr[-3000:]}"
        assert "healthy" in r.stderr and c.provider.endpoint in r.stderr
        # and the Kubernetes API: every guest's kube-apiserver ready, the admin authorized through the LB
        assert "admin authorized" in r.stderr and c.provider.net.api_endpoint in r.stderr, r.stderr[-3000:]

        for node in nodes:
            # bounded: cloud-init may still be in its last stage when etcd is already healthy
            out = c.ssh(node, "timeout 600 cloud-init status --wait >/dev/null; cloud-init status; "
                              "cat /run/cloud-init/result.json", timeout=660)
            status, _, result = out.partition("\n")
            assert status == "status: done", f"{node}: {out}"
            assert json.loads(result)["v1"]["errors"] == [], f"{node}: {result}"

            user_data = yaml.safe_load((build / "e2e" / "nodes" / node / "user-data").read_bytes())
            files = user_data["write_files"]
            paths = " ".join(f"'{f['path']}'" for f in files)
            hostname, *lines = c.ssh(node, f"hostname; stat -c '%a %U:%G %n' {paths}").splitlines()
            assert hostname == node
            seen = {line.split(" ", 2)[2]: line.split(" ", 2)[:2] for line in lines}
            for f in files:
                mode, owner = seen[f["path"]]
                assert int(mode, 8) == int(f["permissions"], 8), f"{node}:{f['path']} mode {mode}, want {f['permissions']}"
                assert owner == f["owner"], f"{node}:{f['path']} owner {owner}, want {f['owner']}"

        with c.etcd() as etcd:
            assert sorted(m.name for m in etcd.member_list()) == sorted(nodes)
            health = all_healthy_within(etcd, [c.provider.endpoint, *map(c.provider.node_endpoint, nodes)])
            assert all(health.values()), health
            leaders = {etcd.status(c.provider.node_endpoint(n)).leader for n in nodes}
            assert len(leaders) == 1 and 0 not in leaders
            etcd.put("/e2e/hello", "world")
            assert etcd.get("/e2e/hello").value == b"world"
        assert set(lb.server_states(c.provider.layout.stats_socket).values()) == {"UP"}

        # status probes each member's /health once: under TCG a member can miss one (etcd's
        # linearizable health read times out), which status reports with the reason. Within a
        # bound, one status shows all three healthy; every other answer says why not.
        seen: list[list[tuple[str, str]]] = []
        for _ in range(10):
            r = c.bakery("status", "--output", "json", timeout=300)
            doc = json.loads(r.stdout)
            seen.append([(n["health"], n["extra"].get("health_detail", "")) for n in doc["nodes"]])
            if [h for h, _ in seen[-1]] == ["healthy"] * 3:
                break
            time.sleep(3)
        assert [h for h, _ in seen[-1]] == ["healthy"] * 3, seen
        assert all(d for answer in seen for h, d in answer if h != "healthy"), seen  # a reason with every miss
        assert all(n["extra"]["runtime"] == "vm" and n["extra"]["cloud-init"] == "done" for n in doc["nodes"])

        ports = set(c.provider.net.host_ports)
        r = c.bakery("down", "--purge", timeout=300)
        assert r.returncode == 0, r.stderr
        assert "vm e2e-master-0" in r.stdout and "network hub" in r.stdout and "haproxy" in r.stdout
        assert "supervisor" in r.stdout
        assert _our_processes("e2e", build) == []
        assert not ports & {p for _, p in listening_ports()}
        assert not c.provider.layout.root.exists()
    finally:
        c.bakery("down", "--purge", timeout=300)
        for pid in _our_processes(s.name, build):  # only if down failed: ours by marker, by PID
            os.kill(pid, signal.SIGKILL)


def _baked(request: pytest.FixtureRequest) -> str:
    build: Path = request.getfixturevalue("local_image")
    return json.loads((build / "demo" / "images.json").read_text())["local"]["disk"]
