"""Rolling replacement on a real etcd cluster: every member is removed, re-added as a
learner and restarted from its re-rendered manifest, one at a time, while a writer keeps
writing; the rollout refuses to start when a member is already down."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from bakery import cli
from bakery.errors import EtcdError
from bakery.etcd import Client
from bakery.pipeline import Cluster
from bakery.providers.base import RenderedNode
from bakery.rollout import Timing, rollout
from bakery.validate import write_files
from tests.etcd_fixtures import Proc, RenderedCluster, localize

pytestmark = pytest.mark.etcd



@pytest.fixture
def running(tmp_path: Path, etcd_bin: Path) -> Iterator[RenderedCluster]:
    c = RenderedCluster(tmp_path, 3, "static")
    assert cli.main(["render", "-f", str(c.spec_file), "-o", str(c.build)]) == 0
    c.start(etcd_bin)
    c.wait_healthy(90)
    yield c
    c.stop()


class ProcessReplacer:
    """A "machine" is one etcd process: replacing it kills the process, wipes its data
    and starts etcd from the command in the new user-data's etcd.manifest."""

    def __init__(self, c: RenderedCluster, binary: Path) -> None:
        self.c, self.binary, self.commands = c, binary, {}

    def replace_master(self, node: RenderedNode) -> None:
        import yaml

        manifest = write_files(node.document)["/etc/kubernetes/manifests/etcd.manifest"]["data"]
        argv = yaml.safe_load(manifest)["spec"]["containers"][0]["command"]
        self.commands[node.name] = argv
        self.c.procs[node.name].stop()
        data = self.c.folder / "data" / node.name
        shutil.rmtree(data)
        argv = localize(argv, self.binary, self.c.node_files(node.name), data)
        self.c.procs[node.name] = Proc(argv, self.c.folder / "logs" / f"{node.name}.replaced.log")


def opener(c: RenderedCluster):
    def open_client(endpoints: Sequence[str]) -> Client:
        return Client(list(endpoints), c.tls())

    return open_client


def test_rollout_replaces_every_member_without_losing_a_write(running: RenderedCluster, etcd_bin: Path) -> None:
    c = running
    cluster = Cluster.load(c.spec_file, c.build)
    with c.client() as etcd:
        before = {m.name: m.id for m in etcd.member_list()}
        etcd.put("/before", "kept")
    stop = threading.Event()
    written: list[int] = []
    failed: list[str] = []

    def writer() -> None:
        with c.client() as etcd:
            i = 0
            while not stop.is_set() and i < 100_000:
                for attempt in range(4):  # a leader election costs a retry, never a lost write
                    try:
                        etcd.put(f"/w/{i:06d}", str(i))
                        written.append(i)
                        break
                    except EtcdError as e:
                        if attempt == 3:
                            failed.append(str(e))
                        time.sleep(0.5)
                i += 1
                time.sleep(0.02)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    replacer = ProcessReplacer(c, etcd_bin)
    try:
        done = rollout(cluster, opener(c), replacer, timing=Timing(healthy=120, poll=0.5))
    finally:
        stop.set()
        t.join(30)
    assert sorted(r.node for r in done) == sorted(c.names)
    assert failed == [], failed[:3]
    assert len(written) > 20
    for argv in replacer.commands.values():
        assert "--initial-cluster-state=existing" in argv
    with c.client() as etcd:
        after = {m.name: m for m in etcd.member_list()}
        assert set(after) == set(before) and not any(m.is_learner for m in after.values())
        assert all(after[n].id != before[n] for n in before), "every member was replaced"
        assert etcd.get("/before").value == b"kept"
        assert len(etcd.range("/w/", prefix=True)) == len(written)
    state = cluster.paths.state.read_text()
    assert '"bootstrapped": true' in state


def test_rollout_refuses_when_a_member_is_already_down(running: RenderedCluster, etcd_bin: Path) -> None:
    c = running
    c.procs[c.names[2]].stop()
    cluster = Cluster.load(c.spec_file, c.build)
    with pytest.raises(EtcdError) as e:
        rollout(cluster, opener(c), ProcessReplacer(c, etcd_bin), timing=Timing(healthy=5, poll=0.5))
    assert f"{c.names[2]} ({c.urls[2]}) is not healthy" in str(e.value)
    assert "keep quorum" in str(e.value)
    with Client(c.urls[:2], c.tls()) as etcd:
        assert sorted(m.name for m in etcd.member_list()) == sorted(c.names), "nothing was removed"
