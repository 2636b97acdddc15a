"""Issue 24 on real etcd: the operator's commands find the members where they are (not at
the plan's day-0 addresses), `bakery restore` refuses unless it positively saw every
member down, and a master acts on no restore request, and bootstraps no cluster, while
a member of the live one answers.

The "moved" cluster: etcd runs at loopback addresses other than the spec's (as after a
rollout of a group), known from bakery-node's member records in the store."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bakery import backup, reach, restore, spec, topology
from bakery.cli import main as bakery_main
from bakery.errors import EtcdError
from bakery.etcd import Client
from bakery.node import members as records
from bakery.store import layout
from bakery.store.folder import FolderStore
from tests.etcd_fixtures import RenderedCluster, SingleEtcd, wait_healthy
from tests.test_node_join import Loopback, join_all, voters

pytestmark = pytest.mark.etcd


def _objects(store: FolderStore) -> dict[str, bytes]:
    return {k: store.get(k) for k in store.list("")}


@pytest.fixture
def moved(tmp_path: Path, etcd_bin: Path) -> Iterator[tuple[RenderedCluster, FolderStore, list[str]]]:
    """Three members running at the addresses `bakery render` planned, the store's member
    records naming them, then the spec's addresses changed to three where nobody runs:
    (cluster, store, the bakery CLI's -f/-o arguments)."""
    rc = RenderedCluster(tmp_path / "c", 3)
    cli = ["-f", str(rc.spec_file), "-o", str(rc.build)]
    assert bakery_main(["render", *cli]) == 0
    rc.start(etcd_bin)
    try:
        rc.wait_healthy()
        store = FolderStore(rc.build / "lo" / "store")
        with rc.client() as c:
            for m in c.member_list():
                records.write(store, "lo", records.Record(m.name, m.peer_urls[0], m.client_urls[0], m.id))
            c.put("/app/before", "kept")
        prefix = rc.addresses[0].rsplit(".", 1)[0]
        retired = ", ".join(f"{prefix}.{111 + i}" for i in range(3))
        rc.spec_file.write_text(rc.spec_file.read_text().replace(", ".join(rc.addresses), retired))
        assert not {n.client_url for n in topology.plan(spec.load(rc.spec_file)).nodes} & set(rc.urls)
        yield rc, store, cli
    finally:
        rc.stop()


def test_backup_and_restore_find_the_members_where_the_store_records_them(
        moved: tuple[RenderedCluster, FolderStore, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    rc, store, cli = moved
    assert bakery_main(["backup", *cli]) == 0
    m = re.search(r"^backup (\S+): .* from member \S+ \((\S+), etcd", capsys.readouterr().out, re.M)
    assert m and m[2] in rc.urls, "the backup went through a member at its recorded address"
    backup_id = m[1]
    before = _objects(store)
    for force in ([], ["--force"]):
        assert bakery_main(["restore", *cli, "--backup", backup_id, *force]) == 6
        err = capsys.readouterr().err
        assert "refusing to restore over a running cluster" in err and all(u in err for u in rc.urls), err
        assert _objects(store) == before  # nothing changed
    # every member really gone: each address refuses the connection, and restore goes ahead
    rc.stop()
    assert bakery_main(["restore", *cli, "--backup", backup_id]) == 0
    checked = [line for line in capsys.readouterr().err.splitlines() if line.startswith("checked: ")]
    assert len(checked) == 6 and all("connection refused" in line for line in checked), checked  # 3 planned, 3 recorded
    req = restore.pending(store, "lo")
    assert req is not None and sorted(m["client_url"] for m in req.members if m["client_url"] in rc.urls) == sorted(rc.urls)
    assert not store.list(layout.members_prefix("lo"))


def test_no_answer_is_not_nothing_healthy(moved: tuple[RenderedCluster, FolderStore, list[str]],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A member that takes the connection and says nothing (a partition, a hung machine)
    leaves the cluster unknown: restore refuses unless --force, and says what it tried."""
    rc, store, cli = moved
    assert bakery_main(["backup", *cli]) == 0
    backup_id = re.search(r"^backup (\S+):", capsys.readouterr().out, re.M)[1]  # type: ignore[index]
    rc.stop()
    with socket.socket() as silent:
        silent.bind((rc.addresses[0].rsplit(".", 1)[0] + ".99", 0))
        silent.listen(8)  # the kernel accepts; nobody ever answers
        host, port = silent.getsockname()
        hung = f"https://{host}:{port}"
        records.write(store, "lo", records.Record("lo-hung", f"https://{host}:1", hung, 7))
        before = _objects(store)
        assert bakery_main(["restore", *cli, "--backup", backup_id]) == 6
        err = capsys.readouterr().err
        assert "cannot tell that no member of the cluster answers" in err and f"lo-hung ({hung}" in err, err
        assert "--force" in err and "connection refused" in err  # what was tried, each
        assert _objects(store) == before
        assert bakery_main(["restore", *cli, "--backup", backup_id, "--force"]) == 0
        assert "not every member was seen down" in capsys.readouterr().err
    assert restore.pending(store, "lo") is not None


def test_a_member_that_answers_without_quorum_needs_force(tmp_path: Path, etcd_bin: Path) -> None:
    """The minority survivor of a lost quorum answers /health, unhealthy: a restore over it
    needs --force; a healthy member refuses it even then."""
    rc = RenderedCluster(tmp_path / "c", 3)
    assert bakery_main(["render", "-f", str(rc.spec_file), "-o", str(rc.build)]) == 0
    rc.start(etcd_bin)
    try:
        rc.wait_healthy()
        s = spec.load(rc.spec_file)
        members = reach.locate(s, None, None)
        assert [e.url for e in members.endpoints] == rc.urls and all(e.sources == ("plan",) for e in members.endpoints)
        seen = reach.survey(members, rc.tls())
        assert [x.state for x in seen] == ["healthy"] * 3 and len({x.cluster_id for x in seen}) == 1
        assert sum(x.leader for x in seen) == 1
        with pytest.raises(EtcdError, match="refusing to restore over a running cluster"):
            reach.restore_allowed(members, seen, force=True)
        for name in rc.names[1:]:
            rc.procs[name].stop()
        deadline = time.monotonic() + 60
        while (seen := reach.survey(members, rc.tls()))[0].state != "unhealthy" and time.monotonic() < deadline:
            time.sleep(0.5)  # the survivor notices it lost its leader
        assert [x.state for x in seen] == ["unhealthy", "refused", "refused"], seen
        with pytest.raises(EtcdError, match=r"cannot tell .* lo-master-0 .* answers, not healthy"):
            reach.restore_allowed(members, seen, force=False)
        assert len(reach.restore_allowed(members, seen, force=True)) == 3
    finally:
        rc.stop()


# -- the node side: bakery-node's join ---------------------------------------------------------


@pytest.fixture
def loopback(tmp_path: Path, etcd_bin: Path) -> Iterator[Callable[..., Loopback]]:
    made: list[Loopback] = []

    def make(masters: int, bootstrap: str = "store") -> Loopback:
        made.append(Loopback(tmp_path / f"c{len(made)}", etcd_bin, masters, bootstrap))
        return made[-1]

    yield make
    for c in made:
        c.stop()


def _cluster_ids(c: Loopback, urls: list[str]) -> set[int]:
    with c.client(urls) as e:
        return {e.status(u).cluster_id for u in urls}


def test_a_restore_request_is_not_acted_on_while_an_old_member_answers(loopback: Callable[..., Loopback]) -> None:
    """A request over a live cluster (forced, or written by a bakery that looked at the
    wrong addresses): the next replacement joins the live cluster instead of restoring a
    second one beside it, and withdraws the request once the cluster is complete."""
    c = loopback(3)
    nodes = list(c.plan.nodes)
    join_all(c, nodes)
    with c.client(c.urls(nodes)) as e:
        e.put("/app/before-backup", "1")
        b = backup.take(e, backup.healthy_member(e, c.urls(nodes)), c.store, "lo")
        e.put("/app/after-backup", "2")  # a restore would lose it
    # what `bakery restore` leaves in the store (written here as a forced or older operator would)
    c.store.put(layout.restore_request("lo"), json.dumps({
        "backup": b.id, "sha256": b.sha256, "token": "lo-restore-test", "requested_at": "2026-12-07T00:00:00+00:00",
        "members": [{"name": n.name, "client_url": n.client_url} for n in nodes]}).encode())
    for key in [layout.bootstrapped("lo"), layout.bootstrap_claim("lo"), *c.store.list(layout.members_prefix("lo"))]:
        c.store.delete(key)
    assert restore.pending(c.store, "lo") is not None
    dead = nodes[2]
    c.kill(dead)
    new = c.new_node()
    joined = c.join(new, is_alive=lambda name: name != dead.name)
    assert joined.how == "learner" and dead.name in joined.removed, joined
    live = [nodes[0], nodes[1], new]
    assert sorted(voters(c, live)) == sorted(n.name for n in live)
    assert len(_cluster_ids(c, c.urls(live))) == 1
    with c.client(c.urls(live)) as e:
        assert e.get("/app/after-backup").value == b"2"  # nothing was restored
    assert restore.pending(c.store, "lo") is None  # withdrawn: it cannot restore into this cluster later
    assert records.bootstrapped(c.store, "lo") is not None


def test_a_master_never_bootstraps_a_second_cluster_beside_a_live_one(loopback: Callable[..., Loopback]) -> None:
    """The store lost its marker, claim and records (a store wiped or rebuilt), while the
    cluster runs: a new master wins the empty claim, finds a live peer and joins it."""
    c = loopback(3)
    nodes = list(c.plan.nodes)
    join_all(c, nodes)
    for key in [layout.bootstrapped("lo"), layout.bootstrap_claim("lo"), *c.store.list(layout.members_prefix("lo"))]:
        c.store.delete(key)
    dead = nodes[2]
    c.kill(dead)
    new = c.new_node()
    joined = c.join(new, is_alive=lambda name: name != dead.name)
    assert joined.how == "learner", joined
    live = [nodes[0], nodes[1], new]
    assert sorted(voters(c, live)) == sorted(n.name for n in live)
    assert len(_cluster_ids(c, c.urls(live))) == 1
    with Client(c.urls(live), c.tls) as e:
        wait_healthy(e, c.urls(live), 30)


class _Group:
    """A master group as bakery/surge.py knows it (the ASG's or MIG's answers, here two
    members: one at the test's etcd, one whose machine the group says is stopped)."""

    def __init__(self, endpoints: dict[str, str], running: set[str]) -> None:
        self._endpoints, self._running = endpoints, running

    def etcd_endpoints(self) -> dict[str, str]:
        return dict(self._endpoints)

    def running(self, name: str) -> bool:
        return name in self._running


class _GroupProvider:
    name = "aws"
    cattle = True

    def __init__(self, group: _Group) -> None:
        self._group = group

    def group(self) -> _Group:
        return self._group


def test_a_group_is_asked_where_its_members_are_and_which_machines_run(etcd: SingleEtcd, tmp_path: Path) -> None:
    """An asg spec: the plan's addresses are not asked at all; the group's members are,
    and a member whose machine the group says is stopped is not probed."""
    s = spec.parse("name: lo\nprovider: aws\nmasters: 3\naws: {region: us-east-1, masters: asg}\n")
    store = FolderStore(tmp_path / "store")
    stopped = "https://127.0.0.1:1"
    provider = _GroupProvider(_Group({"lo-a": etcd.url, "lo-b": stopped}, running={"lo-a"}))
    members = reach.locate(s, provider, store, machines=True)
    assert [(e.name, e.url, e.sources, e.machine) for e in members.endpoints] == [
        ("lo-a", etcd.url, ("group",), "running"), ("lo-b", stopped, ("group",), "not running")]
    assert members.urls == [etcd.url]  # a stopped machine is not where a backup goes
    seen = reach.survey(members, etcd.tls)
    assert [x.state for x in seen] == ["healthy", "not running"] and seen[0].cluster_id
    with pytest.raises(EtcdError, match=r"running cluster: lo-a \(https://"):
        reach.restore_allowed(members, seen, force=True)
    # the group lost its healthy member: only stopped machines remain, and restore may go ahead
    provider = _GroupProvider(_Group({"lo-b": stopped}, running=set()))
    members = reach.locate(s, provider, store, machines=True)
    lines = reach.restore_allowed(members, reach.survey(members, etcd.tls), force=False)
    assert lines == [f"lo-b ({stopped}, from group): its machine is not running"]
