"""Surge rollouts and healing (bakery/surge.py) on real etcd 3.5 processes.

The group is a small stand-in for an autoscaling group whose machines are etcd
processes on loopback addresses: `surge` starts a new machine at a spare address and
runs bakery-node's own join there (bakery/node/join.py, in a thread), exactly as a new
instance's agent would; `retire` kills the machine. The rollout, its journal in a folder
store and the backups it takes are bakery's real code. A sampler watches etcd's member
list throughout, so "never fewer than N started voters" is observed, not assumed.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bakery import backup
from bakery.errors import EtcdError
from bakery.render.userdata import UserData, encode
from bakery.rollout import Timing
from bakery.store import layout
from bakery.surge import heal, load_journal, plan, rollout
from bakery.topology import Node
from tests.test_node_join import Loopback, Writer, formed

pytestmark = pytest.mark.etcd

T = Timing(healthy=120, settle=30, poll=0.3)
DATA = encode(b"#cloud-config\n{}\n", "local")  # what a new machine boots; the stand-in records it


class Interrupt(Exception):
    """Stands in for Ctrl-C at one step of the rollout."""


class LoopGroup:
    def __init__(self, c: Loopback) -> None:
        self.c = c
        self.nodes: dict[str, Node] = {n.name: n for n in c.plan.nodes}
        self.surges: list[str] = []
        self.booted: list[bytes] = []
        self.joins: dict[str, threading.Thread] = {}
        self.errors: dict[str, BaseException] = {}

    def members(self) -> list[str]:
        return list(self.nodes)

    def etcd_endpoints(self) -> dict[str, str]:
        return {name: n.client_url for name, n in self.nodes.items()}

    def peer_url(self, name: str) -> str:
        return self.nodes[name].peer_url

    def running(self, name: str) -> bool:
        """The machine runs while its agent's join does (etcd not started yet) or its etcd does."""
        p = self.c.procs.get(self.nodes[name].address)
        if p is not None:
            return p.alive()
        t = self.joins.get(name)
        return t is not None and t.is_alive()

    def surge(self, user_data: UserData, like: str | None = None) -> str:
        node = self.c.new_node(like=0)
        self.nodes[node.name] = node
        self.surges.append(node.name)
        self.booted.append(user_data.plain)

        def agent() -> None:
            try:
                self.c.join(node)
            except BaseException as e:  # reported by the test
                self.errors[node.name] = e

        t = threading.Thread(target=agent, name=f"agent-{node.name}", daemon=True)
        t.start()
        self.joins[node.name] = t
        time.sleep(0.2)  # the agent's etcd has a PID once it started; until then the join is running
        return node.name

    def retire(self, name: str) -> None:
        node = self.nodes.pop(name)
        p = self.c.procs.get(node.address)
        if p is not None and p.alive():
            p.stop(timeout=10)


class Sampler:
    """The fewest started voters etcd listed at any sample, until stopped (bounded)."""

    def __init__(self, c: Loopback, group: LoopGroup) -> None:
        self.fewest = 99
        self._stop = threading.Event()
        self._group, self._c = group, c
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        end = time.monotonic() + 600
        while not self._stop.is_set() and time.monotonic() < end:
            try:
                with self._c.client(list(self._group.etcd_endpoints().values())) as e:
                    voters = [m for m in e.member_list() if m.name and not m.is_learner]
                    self.fewest = min(self.fewest, len(voters))
            except (EtcdError, RuntimeError):
                pass
            time.sleep(0.1)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        return self.fewest


@pytest.fixture
def cluster(tmp_path: Path, etcd_bin: Path) -> Iterator[Callable[..., Loopback]]:
    made: list[Loopback] = []

    def make(masters: int, bootstrap: str = "static", spares: int = 3) -> Loopback:
        made.append(Loopback(tmp_path / f"c{len(made)}", etcd_bin, masters, bootstrap, spares))
        return made[-1]

    yield make
    for c in made:
        c.stop()


def _interrupt_at(phase: str, nth: int = 1) -> Callable[[str, str, str], None]:
    seen = [0]

    def progress(step: str, status: str, detail: str = "") -> None:
        if status == phase:
            seen[0] += 1
            if seen[0] == nth:
                raise Interrupt(f"{step}: {status}")

    return progress


def _run(c: Loopback, g: LoopGroup, **kw: object) -> list:
    return rollout("lo", c.client, g, c.store, DATA, timing=T, workdir=c.folder, **kw)  # type: ignore[arg-type]


def test_surge_rollout_replaces_every_master_never_below_n_voters_and_loses_no_write(
        cluster: Callable[..., Loopback]) -> None:
    c = cluster(3, "static", spares=4)
    formed(c)
    g = LoopGroup(c)
    old = g.members()
    writer = Writer(c, list(g.etcd_endpoints().values()))
    sampler = Sampler(c, g)
    done = _run(c, g)
    fewest = sampler.stop()
    writer.stop()
    assert not g.errors, g.errors
    assert [r.node for r in done][:2] and sorted(r.node for r in done) == sorted(old)
    assert len(g.surges) == 3 and set(g.members()) == set(g.surges) and g.booted == [DATA.plain] * 3
    assert fewest >= 3, f"etcd listed only {fewest} started voters at one moment"
    assert load_journal(c.store, "lo") is None  # done: the journal is gone
    assert backup.list_backups(c.store, "lo")
    with c.client(list(g.etcd_endpoints().values())) as e:
        members = e.member_list()
        assert sorted(m.name for m in members) == sorted(g.surges) and not any(m.is_learner for m in members)
        stored = {kv.key.decode() for kv in e.range("/w/", prefix=True)}
    assert len(writer.acked) > 20 and not set(writer.acked) - stored


@pytest.mark.parametrize("phase", ["snapshot", "surging", "waiting", "removing member"])
def test_an_interrupted_rollout_continues_where_it_stopped_and_never_surges_twice(
        cluster: Callable[..., Loopback], phase: str) -> None:
    c = cluster(3, "static", spares=4)
    formed(c)
    g = LoopGroup(c)
    old = g.members()
    with pytest.raises(Interrupt):
        _run(c, g, progress=_interrupt_at(phase, nth=2))  # during the second master
    j = load_journal(c.store, "lo")
    assert j is not None and len(j.done) == 1 and j.current is not None
    lines = plan(g, j, (), None)
    assert lines[0].startswith("resume the rollout") and f"finish replacing {j.current['old']}" in lines[1]
    surged_before = len(g.surges)
    for t in g.joins.values():
        t.join(120)  # the interrupted run's agent finishes its join on its own, as a real machine's would
    done = _run(c, g)
    assert not g.errors, g.errors
    assert sorted(r.node for r in done) == sorted(old)
    assert len(g.surges) == 3, f"{len(g.surges)} surges ({surged_before} before the rerun): one per master"
    assert load_journal(c.store, "lo") is None
    with c.client(list(g.etcd_endpoints().values())) as e:
        members = e.member_list()
        assert sorted(m.name for m in members) == sorted(g.members()) and len(members) == 3
        assert not any(m.is_learner for m in members)


def test_a_surged_master_lost_before_it_joined_is_removed_and_surged_anew(cluster: Callable[..., Loopback]) -> None:
    c = cluster(3, "static", spares=5)
    formed(c)
    g = LoopGroup(c)
    with pytest.raises(Interrupt):
        _run(c, g, progress=_interrupt_at("waiting"))
    lost = g.surges[-1]
    g.joins[lost].join(120)
    g.retire(lost)  # its machine died before the rerun
    done = _run(c, g)
    assert len(done) == 3 and lost not in g.members() and len(g.surges) == 4
    with c.client(list(g.etcd_endpoints().values())) as e:
        assert sorted(m.name for m in e.member_list()) == sorted(g.members())


def test_a_rollout_refuses_to_start_while_a_member_is_down_and_changes_nothing(cluster: Callable[..., Loopback]) -> None:
    c = cluster(3, "static", spares=2)
    formed(c)
    g = LoopGroup(c)
    c.kill(c.node(2))
    # Only the dead member's refusal is promised: when it led, the others have no leader for an
    # election timeout and their /health says false too, so the message may name them first.
    down = re.escape(f"{c.node(2).name} ({c.node(2).client_url}) is not healthy")
    with pytest.raises(EtcdError, match=rf"refusing to replace a master before the rollout: (.*; )?{down}"):
        _run(c, g)
    assert g.surges == [] and load_journal(c.store, "lo") is None
    assert c.store.list(layout.backups_prefix("lo")) == []


def test_heal_replaces_a_dead_master_with_a_new_one_that_joins_by_itself(cluster: Callable[..., Loopback]) -> None:
    c = cluster(3, "static", spares=2)
    before = formed(c)
    g = LoopGroup(c)
    dead = c.node(1)
    c.kill(dead)
    new = heal("lo", c.client, g, c.store, DATA, dead.name, timing=T)
    assert new in g.members() and dead.name not in g.members() and not g.errors
    with c.client(list(g.etcd_endpoints().values())) as e:
        members = {m.name: m for m in e.member_list()}
    assert set(members) == {c.node(0).name, c.node(2).name, new} and not any(m.is_learner for m in members.values())
    assert members[c.node(0).name].id == before[c.node(0).name][0]
