"""bakery-node's etcd membership (bakery/node/join.py) on real etcd 3.5 processes.

Each "machine" is one etcd process on its own loopback address (127.a.b.x), started by
the join's `start_etcd` from exactly the argv the render builds for the Bootstrap the
join chose (flags.etcd_command, TLS for peers and clients as rendered), with a folder
store. Day 0 in static and store mode with 3 and 5 members started together in varied
order; day 2 replacements at new addresses under a writer, two at once, one refused for
quorum until a member is back, and store objects that are corrupt or missing.
"""

from __future__ import annotations

import itertools
import logging
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from bakery import spec as spec_mod
from bakery import topology
from bakery.discovery import Bootstrap
from bakery.errors import EtcdError, StoreError
from bakery.etcd import TLS, Client, Member
from bakery.node import members as records
from bakery.node.join import Joined, Refused, Timing, join, lock_key, plan_change, quorum
from bakery.node.lock import LeaseLock
from bakery.render import flags
from bakery.store import layout
from bakery.store.folder import FolderStore
from bakery.topology import Node
from tests.etcd_fixtures import (
    NODE_ETCD_PKI,
    LoseAnswers,
    Proc,
    SingleEtcd,
    _free_everywhere,
    free_port_on_all,
    localize,
    loopback_net,
    make_certs,
)

pytestmark = pytest.mark.etcd

# Short waits: every bound in a test is well above what a loopback cluster needs.
FAST = Timing(reach=60, lock_wait=120, lock_ttl=5, quorum=120, promote=90, promote_every=0.2, healthy=90, settle=30,
              poll=0.2, backoff=2.0)


class Loopback:
    """A cluster spec on loopback addresses, spare addresses for replacements, one CA
    whose server/peer certificate covers them all, a folder store, and the etcd
    processes the joins started (keyed by address: a replacement may reuse a name)."""

    def __init__(self, folder: Path, binary: Path, masters: int, bootstrap: str = "static", spares: int = 3) -> None:
        for _ in range(10):
            prefix = loopback_net()
            self.addresses = [f"{prefix}{11 + i}" for i in range(masters + spares)]
            if _free_everywhere(self.addresses, flags.ETCD_METRICS_PORT):
                break
        client_port = free_port_on_all(self.addresses, avoid=[flags.ETCD_METRICS_PORT])
        peer_port = free_port_on_all(self.addresses, avoid=[flags.ETCD_METRICS_PORT, client_port])
        self.folder, self.binary, self.mode = folder, binary, bootstrap
        text = "\n".join([
            "name: lo", "provider: local", f"masters: {masters}",
            "network:", f"  subnet: {prefix}0/24", f"  addresses: [{', '.join(self.addresses[:masters])}]",
            "etcd:", f"  bootstrap: {bootstrap}", f"  client_port: {client_port}", f"  peer_port: {peer_port}",
        ]) + "\n"  # fmt: skip
        self.plan = topology.plan(spec_mod.parse(text))
        self.spare = list(self.addresses[masters:])
        self.certs = make_certs(folder / "pki", self.addresses)
        self.tls = TLS(self.certs["ca"], self.certs["client_crt"], self.certs["client_key"])
        self.store = FolderStore(folder / "store")
        self.procs: dict[str, Proc] = {}  # address -> etcd
        self.argvs: dict[str, list[str]] = {}
        self.started: list[tuple[str, Bootstrap]] = []

    # -- machines ---------------------------------------------------------------------

    def node(self, i: int) -> Node:
        return self.plan.nodes[i]

    def new_node(self, name: str | None = None, like: int = 0) -> Node:
        """A machine at a spare address (a replacement, or a group's new instance)."""
        address = self.spare.pop(0)
        base = self.plan.nodes[like]
        return replace(base, name=name or f"lo-node-{address.rsplit('.', 1)[1]}", address=address)

    def data_dir(self, node: Node) -> Path:
        return self.folder / "data" / node.address

    def files(self, node: Node) -> Path:
        """The node's PKI folder, as pki.node_files lays it out (the server certificate
        serves as peer certificate: it carries both usages)."""
        root = self.folder / "nodes" / node.address
        pki = root / NODE_ETCD_PKI.lstrip("/")
        if not pki.is_dir():
            pki.mkdir(parents=True)
            shutil.copy(self.certs["ca"], pki / "ca.crt")
            for kind in ("server", "peer"):
                shutil.copy(self.certs["server_crt"], pki / f"{kind}.crt")
                shutil.copy(self.certs["server_key"], pki / f"{kind}.key")
        return root

    def starter(self, node: Node) -> Callable[[Bootstrap], None]:
        def start(b: Bootstrap) -> None:
            argv = localize(flags.etcd_command(self.plan, node, b), self.binary, self.files(node), self.data_dir(node))
            self.argvs[node.address] = argv
            self.started.append((node.name, b))
            self.procs[node.address] = Proc(argv, self.folder / "logs" / f"{node.address}.log")

        return start

    def client(self, endpoints: Sequence[str]) -> Client:
        return Client(list(endpoints), self.tls, timeout=3.0)

    def join(self, node: Node, timing: Timing = FAST, is_alive: Callable[[str], bool | None] | None = None,
             start: Callable[[Bootstrap], None] | None = None) -> Joined:
        return join(self.plan, node, Bootstrap(mode=self.mode), self.store, self.client, start or self.starter(node),
                    is_alive=is_alive, data_dir=self.data_dir(node), timing=timing)

    def kill(self, node: Node) -> None:
        p = self.procs[node.address]
        p.signal(signal.SIGKILL)
        p.wait(10)

    def stop(self) -> None:
        for p in self.procs.values():
            p.signal(signal.SIGTERM)  # all at once: one by one, each waits for a leader transfer
        for p in self.procs.values():
            p.stop(timeout=2)

    def urls(self, nodes: Sequence[Node]) -> list[str]:
        return [n.client_url for n in nodes]


def join_all(c: Loopback, nodes: Sequence[Node], stagger: float = 0.0, seed: int = 0) -> dict[str, Joined]:
    """Join `nodes` in threads, started in the given order, `stagger` seconds apart at most."""
    rng = random.Random(seed)
    results: dict[str, Joined] = {}
    errors: dict[str, BaseException] = {}

    def run(n: Node) -> None:
        try:
            results[n.name] = c.join(n)
        except BaseException as e:  # reported below, with every etcd's log
            errors[n.name] = e

    threads = []
    for n in nodes:
        t = threading.Thread(target=run, args=(n,), name=f"join-{n.name}")
        t.start()
        threads.append(t)
        if stagger:
            time.sleep(rng.uniform(0, stagger))
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "a join did not return within 300 s"
    assert not errors, f"{errors}\n" + "\n---\n".join(p.tail(15) for p in c.procs.values())
    return results


def voters(c: Loopback, nodes: Sequence[Node]) -> dict[str, tuple[int, tuple[str, ...]]]:
    """name -> (member id, peer URLs) of every member; asserts none is a learner or unstarted."""
    with c.client(c.urls(nodes)) as e:
        members = e.member_list()
        assert all(m.name and m.client_urls and not m.is_learner for m in members), members
        assert all(e.health(m.client_urls[0]) for m in members), members
        return {m.name: (m.id, m.peer_urls) for m in members}


def assert_recorded(c: Loopback, members: dict[str, tuple[int, tuple[str, ...]]]) -> None:
    recs = {r.name: r for r in records.records(c.store, "lo")}
    assert set(recs) == set(members)
    for name, (member_id, peer_urls) in members.items():
        assert recs[name].member_id == member_id
        assert (recs[name].peer_url,) == peer_urls


@pytest.fixture
def cluster(tmp_path: Path, etcd_bin: Path) -> Iterator[Callable[..., Loopback]]:
    made: list[Loopback] = []

    def make(masters: int, bootstrap: str = "static", spares: int = 3) -> Loopback:
        made.append(Loopback(tmp_path / f"c{len(made)}", etcd_bin, masters, bootstrap, spares))
        return made[-1]

    yield make
    for c in made:
        c.stop()


# -- the render's flags for the store mode (pure) ------------------------------------------


def test_store_mode_renders_a_one_member_cluster_for_the_winner_and_existing_for_the_others(tmp_path: Path) -> None:
    text = "name: lo\nprovider: local\nmasters: 3\netcd:\n  bootstrap: store\n"
    plan = topology.plan(spec_mod.parse(text))
    me = replace(plan.nodes[0], name="lo-node-7", address="10.0.0.77")
    argv = flags.etcd_command(plan, me, Bootstrap(mode="store"))
    assert "--initial-cluster=lo-node-7=https://10.0.0.77:2380" in argv
    assert "--initial-cluster-state=new" in argv
    existing = flags.etcd_command(plan, me, Bootstrap(mode="store", cluster_state="existing",
                                                      initial_cluster="a=https://10.0.0.10:2380,lo-node-7=https://10.0.0.77:2380"))
    assert "--initial-cluster=a=https://10.0.0.10:2380,lo-node-7=https://10.0.0.77:2380" in existing
    assert "--initial-cluster-state=existing" in existing
    assert not [a for a in existing if a.startswith("--initial-cluster-token")]


def test_quorum() -> None:
    assert [quorum(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]


# -- the decision: which members go, whether the add may happen (pure) ------------------------

ME = Node(0, "m-1", "10.0.0.21", "z", "10.0.0.0/24", 2379, 2380)  # m-1's replacement, at a new address


def member(i: int, name: str | None = None, *, learner: bool = False, started: bool = True, address: str | None = None) -> Member:
    address = address or f"10.0.0.{10 + i}"
    return Member(i, f"m-{i}" if name is None else name, (f"https://{address}:2380",),
                  (f"https://{address}:2379",) if started else (), learner)


def unknown(_name: str) -> bool | None:
    return None


def test_plan_change_removes_my_old_member_and_keeps_quorum() -> None:
    members = [member(0), member(1), member(2)]
    change = plan_change(ME, members, {0, 2}, unknown)
    assert [m.name for m, _ in change.remove] == ["m-1"] and change.blocked is None


def test_plan_change_refuses_without_quorum_and_touches_nothing() -> None:
    members = [member(0), member(1), member(2)]
    with pytest.raises(Refused, match=r"no quorum: 1 of 3 voting members healthy \(down: m-1, m-2\)"):
        plan_change(ME, members, {0}, unknown)


def test_plan_change_day2_keeps_a_quorum_that_does_not_count_on_me() -> None:
    # 3 voters, none mine, m-3 down and not known gone: a quorum now, but with me a 4th
    # voter, the cluster would need me to be healthy
    members = [member(0), member(2), member(3)]
    with pytest.raises(Refused, match=r"unsafe for quorum: .* 2 healthy voting members would remain of 3, and 4 with me need 3"):
        plan_change(ME, members, {0, 2}, unknown)


def test_plan_change_removes_what_it_may_and_waits_for_the_rest() -> None:
    # 5 voters, mine and another down: mine goes, the add waits while the other is down
    members = [member(i) for i in range(5)]
    change = plan_change(ME, members, {0, 2, 4}, unknown)
    assert [m.name for m, _ in change.remove] == ["m-1"]
    assert change.blocked and "m-3 down and not mine to remove" in change.blocked
    # ...unless the cloud says that instance is gone
    change = plan_change(ME, members, {0, 2, 4}, lambda n: n != "m-3")
    assert sorted(m.name for m, _ in change.remove) == ["m-1", "m-3"] and change.blocked is None


def test_plan_change_learners() -> None:
    mine = member(7, "", learner=True, started=False, address=ME.address)
    change = plan_change(ME, [member(0), member(2), mine], {0, 2}, unknown)
    assert change.reuse == mine and change.remove == []
    abandoned = member(8, "", learner=True, started=False)
    change = plan_change(ME, [member(0), member(2), abandoned], {0, 2}, unknown)
    assert [m.id for m, _ in change.remove] == [8] and change.blocked is None
    catching_up = member(9, "m-9", learner=True)
    change = plan_change(ME, [member(0), member(2), catching_up], {0, 2}, unknown)
    assert change.blocked and "learner m-9 is still catching up" in change.blocked


def test_plan_change_never_removes_a_healthy_member_with_my_name_or_address() -> None:
    with pytest.raises(EtcdError, match="already has my name"):
        plan_change(ME, [member(0), member(1), member(2)], {0, 1, 2}, unknown)
    with pytest.raises(EtcdError, match=r"at my peer URL .* is healthy"):
        plan_change(ME, [member(0), member(5, "m-5", address=ME.address)], {0, 5}, unknown)


def test_plan_change_grows_a_lone_member() -> None:
    change = plan_change(ME, [member(0)], {0}, unknown)
    assert change.remove == [] and change.blocked is None
    with pytest.raises(Refused, match="no quorum: 0 of 1"):
        plan_change(ME, [member(0)], set(), unknown)


# -- the join lock on a real etcd ------------------------------------------------------------


def test_join_lock_is_held_by_one_at_a_time_and_released_at_once(etcd: SingleEtcd) -> None:
    def opener(urls: Sequence[str]) -> Client:
        return Client(list(urls), etcd.tls)

    key = f"/test/{time.monotonic_ns()}/join-lock"
    first = LeaseLock(opener, [etcd.url], key, "a", ttl=5, wait=10, poll=0.05, backoff=0.2)
    second = LeaseLock(opener, [etcd.url], key, "b", ttl=5, wait=10, poll=0.05, backoff=0.2)
    order: list[str] = []
    with first:
        t = threading.Thread(target=lambda: (second.acquire(), order.append("b"), second.release()))
        t.start()
        time.sleep(0.5)
        assert order == [] and etcd.client.get(key).value == b"a"  # type: ignore[union-attr]
        order.append("a")
    t.join(10)
    assert order == ["a", "b"]
    assert first.released_at is not None and second.acquired_at is not None and first.released_at <= second.acquired_at
    assert etcd.client.get(key) is None  # revoked with its lease


def test_join_lock_gives_up_on_a_stuck_holder_and_notices_a_lost_lease(etcd: SingleEtcd) -> None:
    def opener(urls: Sequence[str]) -> Client:
        return Client(list(urls), etcd.tls)

    key = f"/test/{time.monotonic_ns()}/join-lock"
    stuck = LeaseLock(opener, [etcd.url], key, "stuck", ttl=3, wait=5)
    stuck.acquire()
    try:
        with pytest.raises(EtcdError, match="stayed held by stuck for 1s"):
            LeaseLock(opener, [etcd.url], key, "late", ttl=5, wait=1, poll=0.1, backoff=0.2).acquire()
        etcd.client.lease_revoke(stuck.lease)  # e.g. expired while this holder was frozen
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                stuck.check()
            except EtcdError as e:
                assert "lost the join lock" in str(e)
                break
            time.sleep(0.2)
        else:
            pytest.fail("the holder did not notice its lease was gone")
    finally:
        stuck.release()


# -- day 0 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "masters", "order"), [
    ("static", 3, "together"), ("store", 3, "reversed"), ("static", 5, "shuffled"), ("store", 5, "shuffled"),
])  # fmt: skip
def test_day0(cluster: Callable[..., Loopback], mode: str, masters: int, order: str) -> None:
    c = cluster(masters, mode, spares=0)
    nodes = list(c.plan.nodes)
    if order == "reversed":
        nodes.reverse()
    elif order == "shuffled":
        random.Random(masters).shuffle(nodes)
    results = join_all(c, nodes, stagger=0.0 if order == "together" else 1.0, seed=masters)

    members = voters(c, c.plan.nodes)
    assert sorted(members) == sorted(n.name for n in c.plan.nodes)
    assert {k: v[1] for k, v in members.items()} == {n.name: (n.peer_url,) for n in c.plan.nodes}
    assert {r.member_id for r in results.values()} == {m[0] for m in members.values()}
    assert_recorded(c, members)
    marker = records.bootstrapped(c.store, "lo")
    assert marker is not None and sorted(marker["members"]) == sorted(members)
    assert sum(r.marker_written for r in results.values()) == 1
    if mode == "static":
        assert {r.how for r in results.values()} == {"day0"}
        assert all(b.cluster_state == "new" and b.mode == "static" for _, b in c.started)
    else:
        hows = sorted(r.how for r in results.values())
        assert hows == ["bootstrap"] + ["learner"] * (masters - 1)
        (winner,) = [r.node for r in results.values() if r.how == "bootstrap"]
        claim = records._record(c.store, "k", c.store.get(layout.bootstrap_claim("lo")), "a claim")
        assert claim.name == winner
        started = dict(c.started)
        assert started[winner].cluster_state == "new"
        assert all(started[n].cluster_state == "existing" for n in members if n != winner)
        # the joins held the lock one after the other
        held = sorted(r.lock_held for r in results.values() if r.lock_held)
        assert len(held) == masters - 1
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(held))


# -- day 2 -----------------------------------------------------------------------------------


def formed(c: Loopback) -> dict[str, tuple[int, tuple[str, ...]]]:
    join_all(c, list(c.plan.nodes))
    return voters(c, c.plan.nodes)


class Writer:
    """Writes /w/<i> through the given members until stopped (bounded: 120 s, 5000 keys);
    remembers every write etcd acknowledged."""

    def __init__(self, c: Loopback, urls: Sequence[str]) -> None:
        self.client = c.client(urls)
        self.acked: list[str] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        end = time.monotonic() + 120
        for i in range(5000):
            if self._stop.is_set() or time.monotonic() > end:
                return
            key = f"/w/{i:05d}"
            try:
                self.client.put(key, f"v{i}")
                self.acked.append(key)
            except EtcdError:
                self.failed += 1
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.client.close()


def test_replacement_at_a_new_address_is_added_as_learner_and_promoted_under_writes(
        cluster: Callable[..., Loopback], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bakery.node")
    c = cluster(3, "static")
    before = formed(c)
    dead = c.node(1)
    c.kill(dead)
    survivors = [c.node(0), c.node(2)]
    writer = Writer(c, c.urls(survivors))
    time.sleep(0.5)
    new = c.new_node(name=dead.name, like=1)  # the same master, booted again at another address
    j = c.join(new)
    time.sleep(0.5)
    writer.stop()

    assert j.how == "learner" and j.removed == (dead.name,)
    started = dict(c.started)
    assert started[new.name].cluster_state == "existing"
    assert f"{new.name}={new.peer_url}" in (started[new.name].initial_cluster or "").split(",")
    after = voters(c, [*survivors, new])
    assert sorted(after) == sorted(before)
    assert after[dead.name][1] == (new.peer_url,) and after[dead.name][0] != before[dead.name][0]
    assert_recorded(c, after)
    # every acknowledged write is there, read through the new member
    assert len(writer.acked) > 20
    with c.client([new.client_url]) as e:
        stored = {kv.key.decode() for kv in e.range("/w/", prefix=True)}
    missing = set(writer.acked) - stored
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:5]}"

    # A corrupt membership record: a clear error naming it, nothing started, etcd as it was.
    key = layout.member("lo", c.node(0).name)
    good = c.store.get(key)
    c.store.put(key, b"{not json")
    count = len(c.started)
    another = c.new_node(like=0)
    with pytest.raises(StoreError, match=rf"{key} is not a membership record \(not JSON"):
        c.join(another)
    assert len(c.started) == count
    assert voters(c, [*survivors, new]) == after

    # etcd that cannot be started: the learner added for it is removed again
    c.store.put(key, good)

    def broken(b: Bootstrap) -> None:
        raise OSError("no space left on device")

    with pytest.raises(OSError, match="no space left"):
        c.join(another, start=broken)
    assert any(f"{another.name}: adding myself as a learner" in r.getMessage() for r in caplog.records)
    assert any(f"{another.name}: etcd not started (no space left on device): removing learner" in r.getMessage() for r in caplog.records)
    assert voters(c, [*survivors, new]) == after


def test_two_replacements_at_once_are_serialized(cluster: Callable[..., Loopback]) -> None:
    c = cluster(5, "static")
    before = formed(c)
    gone_same, gone_other = c.node(1), c.node(3)
    c.kill(gone_same)
    c.kill(gone_other)
    a = c.new_node(name=gone_same.name, like=1)  # same name, new address
    b = c.new_node(like=3)  # a new instance name; the cloud says node 3's instance is gone

    def is_alive(name: str) -> bool | None:
        return False if name == gone_other.name else None

    results: dict[str, Joined] = {}
    errors: list[BaseException] = []

    def run(n: Node) -> None:
        try:
            results[n.name] = c.join(n, is_alive=is_alive)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors

    ra, rb = results[a.name], results[b.name]
    assert ra.how == rb.how == "learner"
    first, second = sorted([ra.lock_held, rb.lock_held])  # type: ignore[type-var]
    assert first[1] <= second[0], "the two joins held the lock at the same time"
    assert set(ra.removed) | set(rb.removed) == {gone_same.name, gone_other.name}
    live = [c.node(0), c.node(2), c.node(4), a, b]
    after = voters(c, live)
    assert sorted(after) == sorted({*before} - {gone_other.name} | {b.name})
    assert after[a.name][1] == (a.peer_url,) and after[b.name][1] == (b.peer_url,)
    assert_recorded(c, after)


def test_replacement_while_another_member_is_down_is_refused_until_it_is_back(
        cluster: Callable[..., Loopback], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bakery.node")
    c = cluster(3, "static")
    before = formed(c)
    dead, down, up = c.node(1), c.node(2), c.node(0)
    c.kill(dead)
    c.procs[down.address].stop()  # a member that is only restarting: its machine and data stay
    new = c.new_node(name=dead.name, like=1)
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["joined"] = c.join(new)
        except BaseException as e:  # reported below
            box["error"] = e

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("join refused" in r.getMessage() for r in caplog.records):
        time.sleep(0.2)
    refusals = [r.getMessage() for r in caplog.records if "join refused" in r.getMessage()]
    assert refusals, "the join was not refused"
    # the lone survivor has no leader, so its own /health says false too
    assert "no quorum: 0 of 3 voting members healthy" in refusals[0]
    assert new.address not in c.procs, "etcd started although the join was refused"
    with c.client([up.client_url]) as e:
        assert {m.name: m.id for m in e.member_list()} == {n: v[0] for n, v in before.items()}

    # the down member comes back: its data dir is intact and it is still a member, so it just starts
    back = c.join(down)
    assert back.how == "restart" and back.member_id == before[down.name][0]
    t.join(180)
    assert not t.is_alive() and "error" not in box, box
    joined = box["joined"]
    assert isinstance(joined, Joined)
    assert joined.refusals >= 1 and joined.removed == (dead.name,)
    after = voters(c, [up, down, new])
    assert after[dead.name][1] == (new.peer_url,)
    assert after[down.name][0] == before[down.name][0]


def test_a_member_removed_while_down_comes_back_with_its_data_moved_aside(cluster: Callable[..., Loopback]) -> None:
    c = cluster(3, "static")
    before = formed(c)
    away = c.node(2)
    c.procs[away.address].stop()  # stopped, data kept; the cloud reports its instance gone
    newcomer = c.new_node(like=2)
    j = c.join(newcomer, is_alive=lambda name: False if name == away.name else None)
    assert j.how == "learner" and j.removed == (away.name,)
    assert sorted(voters(c, [c.node(0), c.node(1), newcomer])) == sorted([c.node(0).name, c.node(1).name, newcomer.name])

    back = c.join(away)  # its old data dir names a member etcd no longer has
    assert back.how == "learner" and back.member_id != before[away.name][0]
    assert [p.name for p in c.data_dir(away).parent.iterdir() if p.name.startswith(f"{away.address}.removed-")]
    after = voters(c, [c.node(0), c.node(1), newcomer, away])
    assert sorted(after) == sorted([*before, newcomer.name])
    assert_recorded(c, after)


# -- membership races: another actor first, answers lost after etcd applied the call ---------


def test_a_dead_member_removed_by_someone_else_first_does_not_fail_the_join(cluster: Callable[..., Loopback]) -> None:
    c = cluster(3, "static")
    before = formed(c)
    dead = c.node(2)
    c.kill(dead)
    healed: list[int] = []

    def is_alive(name: str) -> bool | None:
        """The cloud says the dead member's instance is gone, and a heal (which takes no
        join lock) removes its member while this join holds the lock, before its remove."""
        if name != dead.name:
            return None
        with c.client(c.urls([c.node(0), c.node(1)])) as e:
            if e.get(lock_key("lo")) is not None and any(m.name == dead.name for m in e.member_list(linearizable=True)):
                e.member_remove(before[dead.name][0])
                healed.append(before[dead.name][0])
        return False

    newcomer = c.new_node(like=2)
    j = c.join(newcomer, is_alive=is_alive)
    assert healed == [before[dead.name][0]], "the heal did not run while the join held its lock"
    assert j.how == "learner" and j.removed == (dead.name,)
    after = voters(c, [c.node(0), c.node(1), newcomer])
    assert sorted(after) == sorted([c.node(0).name, c.node(1).name, newcomer.name])
    assert_recorded(c, after)


def test_a_join_whose_answers_are_lost_resends_no_change_blindly(cluster: Callable[..., Loopback]) -> None:
    """A master deleted and recreated under its name (a MIG's repair) joins while the first
    answer to each of its changes is lost after etcd applied it: the lock's txn, the remove
    of its old member, its add, its promotion."""
    c = cluster(3, "static")
    before = formed(c)
    dead = c.node(1)
    c.kill(dead)
    budget = {"kv/txn": 1, "cluster/member/remove": 1, "cluster/member/add": 1, "cluster/member/promote": 1}
    transports: list[LoseAnswers] = []

    def lossy(endpoints: Sequence[str]) -> Client:
        transports.append(LoseAnswers(c.tls, budget))
        return Client(list(endpoints), c.tls, timeout=3.0, transport=transports[-1])

    new = c.new_node(name=dead.name, like=1)
    j = join(c.plan, new, Bootstrap(mode="static"), c.store, lossy, c.starter(new), data_dir=c.data_dir(new),
             timing=replace(FAST, lock_wait=30))
    lost: dict[str, int] = {}
    for t in transports:
        for path, n in t.lost.items():
            lost[path] = lost.get(path, 0) + n
    assert lost == {"kv/txn": 1, "cluster/member/remove": 1, "cluster/member/add": 1, "cluster/member/promote": 1}
    assert j.how == "learner" and j.removed == (dead.name,)
    after = voters(c, [c.node(0), c.node(2), new])
    assert sorted(after) == sorted(before) and after[dead.name] == (j.member_id, (new.peer_url,))
    assert_recorded(c, after)


# -- store objects that are corrupt or missing: a clear error, nothing started -----------------


def test_store_problems_start_nothing(cluster: Callable[..., Loopback]) -> None:
    c = cluster(3, "store", spares=1)
    me = c.node(0)
    cases: list[tuple[str, bytes | None, str]] = [
        (layout.bootstrap_claim("lo"), b"\x00\xffgarbage", r"etcd/bootstrap is not a bootstrap claim \(not JSON"),
        (layout.bootstrap_claim("lo"), b'{"name": "x", "peer_url": "http://a:1", "client_url": "https://a:2"}',
         r"`peer_url` must be an https:// URL"),
        (layout.bootstrapped("lo"), b"[]", r"etcd/bootstrapped is not the bootstrapped marker \(a JSON object is expected"),
        (layout.bootstrapped("lo"), b'{"cluster": "other"}', r"marker of cluster 'other', not 'lo'"),
        (layout.member("lo", "lo-master-1"), b'{"name": "lo-master-1"}', r"members/lo-master-1.json is not a membership record: `peer_url`"),
        # the marker says etcd exists, but no record says where: nothing to join through
        (layout.bootstrapped("lo"), b'{"cluster": "lo"}', r"holds no membership record of another member under lo/members/"),
    ]
    for key, data, message in cases:
        shutil.rmtree(c.store.root, ignore_errors=True)
        assert data is not None
        c.store.put(key, data)
        with pytest.raises(StoreError, match=message):
            c.join(me)
        assert c.started == [] and c.procs == {}, key
        assert not c.data_dir(me).exists()
