"""bakery-node, step 5: etcd membership. Decides how this node's etcd starts, has it
started, and finishes the join afterwards.

    joined = join(plan, me, bootstrap, store, client, start_etcd, is_alive=cloud_runs)

Day 0 (no `etcd/bootstrapped` marker in the store):
  static, discovery, discovery-v3, dns-srv  the spec's Bootstrap as is; etcd forms the cluster.
  store   the first node to win put_if_absent on `etcd/bootstrap` starts a one-member
          cluster; every other one waits (bounded) until that member answers, then joins
          as a learner, like day 2 below (Talos' single bootstrap node, no discovery service).
  Once etcd has the spec's number of healthy voters, the marker is written (put_if_absent).
  restore (no marker, and the operator's `bakery restore` left a request in the store): as
          store mode, whatever the spec's mode, except that the claim's winner first
          restores the requested backup into its data dir (bakery/restore.py); a data dir
          of the old cluster is moved aside first on every node. While a member of the old
          cluster (the request names them; this node's own included) still answers
          healthy, the request is not acted on: this node joins that cluster, and
          withdraws the request once the cluster is complete.
  Before any node starts a new cluster (store mode's winner, a restore's winner) it asks
  the peers it can reach (the store's records, the plan's addresses) for /health, whatever
  the store says: a healthy peer is joined as a learner, never a second cluster id beside it.

Day 2 (marker present): the live members come from the store's membership records, then
from etcd's member list through any member that answers. Under a lease-held lock in etcd
(two joiners go one after the other; etcd 3.5 also takes one learner at a time), the
member whose machine is gone (my name, my peer URL, or an instance `is_alive` says the
cloud no longer runs) is removed, this node is added as a learner, etcd is started with
--initial-cluster-state=existing and the membership etcd reports, and the learner is
promoted once in sync. A node that restarts with its data dir intact and is still a
member just starts; one whose member was removed meanwhile moves its data dir aside and
joins anew.

Quorum (plan_change, pure): a join is refused, with one log line, and retried with
bounded backoff while fewer than a quorum of voters serve, or while the voters left after
the removals could not by themselves make a quorum of the cluster with this node added
(a lone member, store mode's day 0, is the exception). etcd itself (strict reconfiguration checks) adds a
learner only while every voting member is connected: a voter that is down and not this
node's to remove blocks the add, but the removals that are safe still go ahead, so two
replacements at once each remove their own dead member in turn.

`start_etcd(bootstrap)` is injected: on a master it writes the rendered file tree (the
kubelet or systemd then runs etcd); in tests it starts an etcd process from the flags the
render builds. Everything is read (and checked) from the store before anything starts; a
failure says why, and a learner added for an etcd that did not start is removed again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TypeVar

from bakery import restore as restore_mod
from bakery.discovery import Bootstrap
from bakery.errors import BakeryError, EtcdError, StoreError
from bakery.etcd import Client, Member, while_unsettled
from bakery.node import members as records
from bakery.node.lock import LeaseLock
from bakery.render.flags import ETCD_DATA_DIR
from bakery.store import Store, layout
from bakery.topology import ClusterPlan, Node

log = logging.getLogger("bakery.node.join")

ClientFactory = Callable[[Sequence[str]], Client]
T = TypeVar("T")


@dataclass(frozen=True)
class Timing:
    """Bounds on every wait: a join never loops forever."""

    reach: float = 300.0  # some member (store mode day 0: the bootstrap member) answers
    lock_wait: float = 600.0  # another node's join to finish
    lock_ttl: int = 15  # the join lock's lease, renewed every ttl/3 while held
    quorum: float = 900.0  # keep retrying a join refused for quorum
    promote: float = 300.0  # the learner catches up with the leader
    promote_every: float = 1.0  # one cheap request per try: no backoff, it only delays the promotion
    healthy: float = 600.0  # day 0: every member healthy, for the marker
    settle: float = 60.0  # etcd refuses membership changes as "unhealthy cluster" just after a restart
    poll: float = 0.5  # first pause between attempts
    backoff: float = 10.0  # longest pause between attempts


@dataclass(frozen=True)
class Joined:
    """What the join did."""

    node: str
    how: Literal["day0", "bootstrap", "learner", "restart", "restore"]
    bootstrap: Bootstrap
    member_id: int
    removed: tuple[str, ...] = ()
    refusals: int = 0  # quorum refusals before the join went through
    lock_held: tuple[float, float] | None = None  # monotonic times the join lock was held
    seconds: float = 0.0  # join start to done (member serving and recorded)
    marker_written: bool = False
    promoted: float | None = None  # join start to promotion, for a learner


def quorum(voters: int) -> int:
    return voters // 2 + 1


def started(m: Member) -> bool:
    """A member whose etcd ran: it published its client URLs (a static bootstrap names
    every member from --initial-cluster before it starts, so the name does not tell)."""
    return bool(m.client_urls)


def lock_key(cluster: str) -> str:
    return f"/bakery/{cluster}/node/join-lock"


class Refused(Exception):
    """A join that must wait: the reason is logged and the join retried."""


def join(plan: ClusterPlan, me: Node, bootstrap: Bootstrap, store: Store, client: ClientFactory,
         start_etcd: Callable[[Bootstrap], None], *, is_alive: Callable[[str], bool | None] | None = None,
         data_dir: str | Path = ETCD_DATA_DIR, timing: Timing = Timing(), restore_tool: str | None = None,
         stop_etcd: Callable[[], None] | None = None) -> Joined:
    """Make `me` a started, voting etcd member (see the module's doc); returns what it did.

    `me` is this machine's node (for groups: name and address from the instance, maybe
    not in plan.nodes); `client(urls)` opens an etcd client with this node's own client
    certificate; `is_alive(member_name)` says whether the cloud still runs that member's
    instance (None: unknown); `data_dir` is etcd's data dir on this machine; `restore_tool`
    the etcdutl (or etcdctl) a restore runs (default: restore.find_tool()); `stop_etcd()`
    stops this machine's etcd before a restore moves its data dir aside.
    """
    return _Join(plan, me, bootstrap, store, client, start_etcd, is_alive or (lambda _name: None), Path(data_dir), timing,
                 restore_tool, stop_etcd or (lambda: None)).run()


@dataclass
class Change:
    """A membership change that passed the quorum checks."""

    remove: list[tuple[Member, str]] = field(default_factory=list)  # member, why
    reuse: Member | None = None  # my own learner, added by an attempt that did not start it
    blocked: str | None = None  # why the learner cannot be added yet (after the removals)


def plan_change(me: Node, members: Sequence[Member], healthy: set[int], is_alive: Callable[[str], bool | None]) -> Change:
    """The membership change that makes room for `me`, from etcd's member list and which
    members serve (`healthy`: ids). Pure. Raises Refused when no change is safe for
    quorum, EtcdError when the list contradicts this machine (a healthy member with my
    name or peer URL)."""
    change = Change()
    for m in members:
        up = m.id in healthy
        if me.peer_url in m.peer_urls:
            if not started(m) and m.is_learner:
                change.reuse = m
            elif up:
                raise EtcdError(f"{me.name}: member {m.id:x} ({m.name}) at my peer URL {me.peer_url} is healthy; "
                                "is another etcd running on this address? Not touching it")
            else:
                change.remove.append((m, f"it holds my peer URL {me.peer_url} and this machine's data dir is empty"))
        elif m.name == me.name:
            if up:
                raise EtcdError(f"{me.name}: a healthy member {m.id:x} already has my name (peer URL {', '.join(m.peer_urls)}); "
                                "two machines with one name: not touching it")
            change.remove.append((m, "my name, at another address: this machine's previous incarnation"))
        elif not up and not started(m) and m.is_learner:
            change.remove.append((m, "a learner nobody started (an abandoned join)"))
        elif not up and m.name and is_alive(m.name) is False:
            change.remove.append((m, "the cloud no longer runs its instance"))
    voters = [m for m in members if not m.is_learner]
    up_voters = [m for m in voters if m.id in healthy]
    down = [m.name or f"{m.id:x}" for m in voters if m.id not in healthy]
    if len(up_voters) < quorum(len(voters)):
        raise Refused(f"no quorum: {len(up_voters)} of {len(voters)} voting members healthy (down: {', '.join(down)})")
    gone = {m.id for m, _ in change.remove}
    left = [m for m in voters if m.id not in gone]
    left_up = [m for m in left if m.id in healthy]
    # Once promoted I count as a voter: the others must still make a quorum of that cluster
    # by themselves, or my failing to catch up would stall it. A lone member (store mode's
    # day 0) cannot grow without passing through that state.
    need = quorum(len(left) + 1) if len(left) > 1 else len(left)
    if len(left_up) < need:
        still_down = [m.name or f"{m.id:x}" for m in left if m.id not in healthy]
        raise Refused(f"unsafe for quorum: after removing {len(gone)} member(s) {len(left_up)} healthy voting members would remain "
                      f"of {len(left)}, and {len(left) + 1} with me need {need} (down: {', '.join(still_down)})")
    # etcd (strict reconfiguration checks, the default) adds a learner only while every
    # voting member is connected to the leader, and 3.5 takes one learner at a time: the
    # safe removals above still go ahead, the add waits for the next attempt.
    learners = [m for m in members if m.is_learner and m.id not in gone and m is not change.reuse]
    if still_down := [m.name or f"{m.id:x}" for m in left if m.id not in healthy]:
        change.blocked = (f"voting member(s) {', '.join(still_down)} down and not mine to remove: etcd adds a learner "
                          "only while every voting member is connected")
    elif learners:
        change.blocked = f"learner {', '.join(m.name or f'{m.id:x}' for m in learners)} is still catching up (etcd 3.5 takes one at a time)"
    return change


class _Join:
    def __init__(self, plan: ClusterPlan, me: Node, bootstrap: Bootstrap, store: Store, client: ClientFactory,
                 start_etcd: Callable[[Bootstrap], None], is_alive: Callable[[str], bool | None], data_dir: Path,
                 timing: Timing, restore_tool: str | None = None, stop_etcd: Callable[[], None] = lambda: None) -> None:
        self.plan, self.me, self.spec_bootstrap, self.store = plan, me, bootstrap, store
        self.open, self.start_etcd, self.is_alive, self.data_dir, self.t = client, start_etcd, is_alive, data_dir, timing
        self.cluster = plan.name
        self.t0 = time.monotonic()
        self.restore_tool, self.stop_etcd = restore_tool, stop_etcd
        self.removed: list[str] = []  # across attempts

    def info(self, msg: str, *args: object) -> None:
        log.info("%s: " + msg, self.me.name, *args)

    def warn(self, msg: str, *args: object) -> None:
        log.warning("%s: " + msg, self.me.name, *args)

    # -- the decision -------------------------------------------------------------------

    def run(self) -> Joined:
        marker = records.bootstrapped(self.store, self.cluster)
        known = records.records(self.store, self.cluster)  # read (and checked) before anything starts
        mode = self.spec_bootstrap.mode
        if marker is not None:
            self.info("day 2: the store says etcd bootstrapped (marker by %s); joining the running cluster", marker.get("by", "?"))
            return self.learner_join(known)
        req = restore_mod.pending(self.store, self.cluster)
        if req is not None:
            return self.day0_restore(req, known)
        if mode != "store":
            return self.day0_spec(mode)
        won, winner = records.claim(self.store, self.cluster, self.me)
        others = [r for r in known if r.name != self.me.name]
        if won and (self.data_intact() or not others):
            live = self.live_peers(known)
            if live:
                self.warn("day 0: the bootstrap claim is mine, but %s answer healthy: joining that cluster, not starting "
                          "a second one beside it", ", ".join(r.name for r in live))
                return self.learner_join(live)
            return self.day0_bootstrap()
        if won:
            self.info("day 0: the bootstrap claim is mine but my data dir is empty and %s joined since; joining as a learner",
                      ", ".join(r.name for r in others))
        else:
            self.info("day 0: %s won the store's bootstrap claim; waiting for its member at %s", winner.name, winner.client_url)
        return self.learner_join([winner, *known])

    # -- day 0 --------------------------------------------------------------------------

    def day0_spec(self, mode: str) -> Joined:
        b = replace(self.spec_bootstrap, cluster_state="new")
        self.info("day 0: bootstrap mode %s, starting etcd with --initial-cluster-state=new", mode)
        self.start_etcd(b)
        member, wrote = self.after_day0(self.plan.client_urls if mode == "static" else (self.me.client_url,), wait=True)
        return self.done("day0", b, member, wrote=wrote)

    def day0_bootstrap(self) -> Joined:
        b = Bootstrap(mode="store", cluster_state="new", initial_cluster=f"{self.me.name}={self.me.peer_url}")
        self.info("day 0: won the store's bootstrap claim; starting a one-member cluster at %s", self.me.peer_url)
        self.start_etcd(b)
        member, wrote = self.after_day0((self.me.client_url,), wait=False)
        return self.done("bootstrap", b, member, wrote=wrote)

    def day0_restore(self, req: restore_mod.Request, known: Sequence[records.Record]) -> Joined:
        """A restore: the claim's winner starts a one-member cluster from the backup, the
        others join it as learners. A stamp beside the data dir says which restore made
        it, so a rerun keeps what this restore made and moves only the old cluster's aside."""
        stamp = self.data_dir.with_name(f"{self.data_dir.name}.restore")
        ours = stamp.is_file() and stamp.read_text().strip() == req.token
        alive = self.old_cluster_alive(req)
        if alive:
            # an operator's request over a cluster that still serves (forced, or made by an
            # older bakery that looked at the wrong addresses): restoring would start a
            # second cluster beside it (issue 24); this node stays in, or joins, the live one
            self.warn("restore of backup %s requested, but %s of the old cluster still answer healthy: not acting on it; "
                      "joining that cluster", req.backup, ", ".join(r.name for r in alive))
            joined = self.learner_join(alive)
            self.restore_done(req, "declined: the old cluster is alive and complete")
            return joined
        if self.data_intact() and not ours:
            aside = self.data_dir.with_name(f"{self.data_dir.name}.before-restore-{int(time.time())}")
            self.warn("restore of backup %s requested: stopping etcd, moving the old cluster's data dir to %s", req.backup, aside)
            self.stop_etcd()
            self.data_dir.rename(aside)
            ours = False
        won, winner = records.claim(self.store, self.cluster, self.me)
        if won and not (ours and self.data_intact()) and (live := self.live_peers(known)):
            self.warn("restore of backup %s: the claim is mine, but %s answer healthy: joining that cluster, not starting "
                      "a second one beside it", req.backup, ", ".join(r.name for r in live))
            return self.learner_join(live)
        if not won:
            self.info("restore of backup %s: %s restores it; joining its member as a learner", req.backup, winner.name)
            joined = self.learner_join([winner, *known])
            stamp.write_text(req.token + "\n")
            self.restore_done(req)
            return joined
        if not (ours and self.data_intact()):
            self.info("restore of backup %s: won the claim; restoring it into %s", req.backup, self.data_dir)
            restore_mod.restore_data_dir(self.store, self.cluster, req, self.me, self.data_dir, self.restore_tool)
            stamp.write_text(req.token + "\n")
        b = Bootstrap(mode="store", cluster_state="new", initial_cluster=f"{self.me.name}={self.me.peer_url}")
        self.info("restore of backup %s: starting a one-member cluster from it at %s", req.backup, self.me.peer_url)
        self.start_etcd(b)
        member, wrote = self.after_day0((self.me.client_url,), wait=False)
        self.restore_done(req)
        return self.done("restore", b, member, wrote=wrote)

    def restore_done(self, req: restore_mod.Request, why: str = "complete") -> None:
        """Once the restored cluster is complete (the marker is there), the request goes:
        a request left behind would restore an old backup into a later, new cluster."""
        if records.bootstrapped(self.store, self.cluster) is not None and restore_mod.pending(self.store, self.cluster) == req:
            self.store.delete(layout.restore_request(self.cluster))
            self.info("restore of backup %s %s: removed the restore request", req.backup, why)

    # -- never a second cluster beside a live one ---------------------------------------

    def live_peers(self, known: Sequence[records.Record]) -> list[records.Record]:
        """The members other than me that answer healthy, among the store's records and the
        plan's addresses: checked before this node starts a new cluster, whatever the
        store says (its marker and records may be gone while the cluster runs)."""
        plan = [records.Record.of(n) for n in self.plan.nodes]
        candidates = {r.client_url: r for r in [*known, *plan] if r.client_url != self.me.client_url}
        return self.healthy(list(candidates.values()))

    def old_cluster_alive(self, req: restore_mod.Request) -> list[records.Record]:
        """The old cluster's members (as the restore request names them, this node's own
        included) that still answer healthy. A member of the restored cluster (it lists
        the claim's winner, which restores) is not the old cluster."""
        restoring = records.claimed(self.store, self.cluster)
        alive = []
        for r in self.healthy(req.old_members()):
            if restoring is not None:
                with self.open([r.client_url]) as c:
                    listed = self.try_list(c) or []
                if any(restoring.peer_url in m.peer_urls for m in listed):
                    continue
            alive.append(r)
        return alive

    def healthy(self, candidates: Sequence[records.Record]) -> list[records.Record]:
        if not candidates:
            return []
        with self.open([r.client_url for r in candidates]) as c:
            return [r for r in candidates if c.health(r.client_url)]

    def after_day0(self, urls: Sequence[str], *, wait: bool) -> tuple[int, bool]:
        """Wait until my member serves, record it; write the marker once the cluster is
        complete (`wait` for it when every member starts at once)."""
        deadline = time.monotonic() + self.t.healthy
        with self.open(list(urls)) as c:
            mine = self.wait(deadline, lambda: self.started_member(c), "my etcd member to start")
            records.write(self.store, self.cluster, records.Record.of(self.me, mine.id))
            self.info("recorded member %x in the store", mine.id)
            return mine.id, self.mark_if_complete(c, deadline, wait=wait)

    def started_member(self, c: Client) -> Member | None:
        if not c.health(self.me.client_url):
            return None
        return next((m for m in c.member_list() if started(m) and m.name == self.me.name and self.me.peer_url in m.peer_urls), None)

    def mark_if_complete(self, c: Client, deadline: float, *, wait: bool) -> bool:
        """Write the marker once etcd has the spec's number of healthy voters; `wait` for
        that (day 0 static: every node waits for the others), or look once (a learner join:
        the last one to be promoted sees the cluster complete)."""
        want = self.plan.spec.masters
        voters: list[Member] = []

        def complete() -> bool:
            nonlocal voters
            voters = [m for m in c.member_list() if started(m) and not m.is_learner]
            return len(voters) >= want and all(c.health(m.client_urls[0]) for m in voters)

        try:
            if wait:
                self.wait(deadline, complete, f"{want} healthy voting members")
            elif not complete():
                self.info("etcd has %d of %d voting members; the bootstrapped marker is left to the node that completes it",
                          len(voters), want)
                return False
        except EtcdError as e:
            self.warn("etcd has %d of %d voting members (%s); the bootstrapped marker is left to the node that completes it",
                      len(voters), want, e)
            return False
        if records.mark_bootstrapped(self.store, self.cluster, self.me.name, [m.name for m in voters]):
            self.info("etcd has %d healthy voting members: wrote the store's bootstrapped marker", len(voters))
            return True
        return False

    # -- learner join (store mode day 0, day 2) -----------------------------------------

    def endpoints(self, known: Sequence[records.Record]) -> list[str]:
        urls = [r.client_url for r in known if r.client_url != self.me.client_url]
        if self.spec_bootstrap.mode == "static":
            urls += [u for u in self.plan.client_urls if u != self.me.client_url]
        return list(dict.fromkeys(urls))

    def learner_join(self, known: Sequence[records.Record]) -> Joined:
        urls = self.endpoints(known)
        if self.data_intact():
            restarted = self.restart(known, urls)
            if restarted is not None:
                return restarted
        if not urls:
            raise StoreError(f"store {self.store.url}: etcd bootstrapped (marker present) but the store holds no membership "
                             f"record of another member under {self.cluster}/members/ and the spec's bootstrap mode "
                             f"({self.spec_bootstrap.mode}) names no address: no member to join through; nothing started")
        deadline = time.monotonic() + self.t.quorum
        delay = self.t.poll
        refusals = 0
        while True:
            try:
                return self.attempt(urls, refusals)
            except Refused as r:
                refusals += 1
                done = f"; removed {', '.join(self.removed)} (safe for quorum)" if self.removed else ", etcd membership untouched"
                if time.monotonic() + delay > deadline:
                    raise EtcdError(f"{self.me.name}: join refused for {self.t.quorum:.0f}s{done}: {r}") from None
                self.warn("join refused%s: %s; retrying in %.1fs", done, r, delay)
                time.sleep(delay)
                delay = min(delay * 2, self.t.backoff)

    def attempt(self, urls: list[str], refusals: int) -> Joined:
        members, healthy = self.survey(urls)
        change = plan_change(self.me, members, healthy, self.alive)  # refuse before taking the lock: it needs quorum too
        if change.blocked and not change.remove:
            raise Refused(change.blocked)
        live = [m.client_urls[0] for m in members if m.id in healthy] or urls
        with LeaseLock(self.open, live, lock_key(self.cluster), self.me.name, ttl=self.t.lock_ttl, wait=self.t.lock_wait,
                       poll=self.t.poll, backoff=self.t.backoff) as lock:
            members, healthy = self.survey(live)  # what changed while another node held the lock
            change = plan_change(self.me, members, healthy, self.alive)
            live = [m.client_urls[0] for m in members if m.id in healthy and m not in [r for r, _ in change.remove]]
            with self.open(live) as c:
                removed = self.removed
                for m, why in change.remove:
                    lock.check()
                    self.info("removing member %x (%s): %s", m.id, m.name or "not started", why)
                    self.settled(lambda m=m: c.member_remove(m.id))
                    if m.name and m.name != self.me.name:
                        records.forget(self.store, self.cluster, m.name, m.id)
                    removed.append(m.name or f"{m.id:x}")
                if change.blocked:
                    raise Refused(change.blocked)
                lock.check()
                if change.reuse is not None:
                    new = change.reuse
                    self.info("reusing learner %x, added for my peer URL by an earlier attempt", new.id)
                else:
                    self.info("adding myself as a learner: %s", self.me.peer_url)
                    new = self.settled(lambda: c.member_add([self.me.peer_url], learner=True))
                try:
                    b = Bootstrap(mode=self.spec_bootstrap.mode, cluster_state="existing", initial_cluster=self.initial_cluster(c, new))
                    self.info("starting etcd with --initial-cluster-state=existing --initial-cluster=%s", b.initial_cluster)
                    self.start_etcd(b)
                except BaseException as e:
                    self.warn("etcd not started (%s): removing learner %x again", e, new.id)
                    try:
                        self.settled(lambda: c.member_remove(new.id))
                    except EtcdError as e2:
                        self.warn("could not remove learner %x: %s", new.id, e2)
                    raise
                self.promote(c, new, lock)
                promoted = time.monotonic() - self.t0
            held = (lock.acquired_at or 0.0, time.monotonic())
        wrote = self.finish(live, new.id)
        return self.done("learner", b, new.id, removed=tuple(removed), refusals=refusals, lock=held, wrote=wrote, promoted=promoted)

    def survey(self, urls: Sequence[str]) -> tuple[list[Member], set[int]]:
        """etcd's member list through any member that answers (bounded wait), and which
        members serve (their own /health: a leader and a quorum behind it)."""
        deadline = time.monotonic() + self.t.reach
        with self.open(list(urls)) as c:
            members = self.wait(deadline, lambda: self.try_list(c), f"a member of the cluster at {', '.join(urls)} to answer")
            healthy = {m.id for m in members if m.client_urls and not m.is_learner and c.health(m.client_urls[0])}
        return members, healthy

    def try_list(self, c: Client) -> list[Member] | None:
        try:
            return c.member_list()
        except EtcdError:
            return None

    def initial_cluster(self, c: Client, new: Member) -> str:
        parts = []
        for m in c.member_list():
            if m.id == new.id:
                parts.append(f"{self.me.name}={self.me.peer_url}")
            elif m.name:
                parts += [f"{m.name}={u}" for u in m.peer_urls]
            else:
                raise EtcdError(f"{self.me.name}: member {m.id:x} ({', '.join(m.peer_urls)}) was added but never started; "
                                "etcd cannot name it in --initial-cluster")
        return ",".join(sorted(parts))

    def promote(self, c: Client, new: Member, lock: LeaseLock | None) -> None:
        deadline = time.monotonic() + self.t.promote
        self.info("waiting to promote learner %x once it is in sync with the leader", new.id)
        last = ""
        while True:
            if lock is not None:
                lock.check()
            current = next((m for m in c.member_list() if m.id == new.id), None)
            if current is None:
                raise EtcdError(f"{self.me.name}: my member {new.id:x} left the member list while catching up; removed by someone")
            if not current.is_learner:
                break
            try:
                c.member_promote(new.id)
                break
            except EtcdError as e:  # "can only promote a learner member which is in sync with leader"
                last = str(e)
            if time.monotonic() + self.t.promote_every > deadline:
                raise EtcdError(f"{self.me.name}: learner {new.id:x} was not in sync within {self.t.promote:.0f}s "
                                f"(last answer: {last}); it stays a learner and the cluster keeps quorum; restart bakery-node to retry")
            time.sleep(self.t.promote_every)
        self.info("promoted member %x to a voting member", new.id)

    def finish(self, urls: Sequence[str], member_id: int) -> bool:
        with self.open([*urls, self.me.client_url]) as c:
            deadline = time.monotonic() + self.t.healthy
            self.wait(deadline, lambda: c.health(self.me.client_url), "my member to serve")
            records.write(self.store, self.cluster, records.Record.of(self.me, member_id))
            self.info("recorded member %x in the store", member_id)
            if records.bootstrapped(self.store, self.cluster) is not None:
                return False
            return self.mark_if_complete(c, deadline, wait=False)

    # -- restart with the data dir intact ----------------------------------------------

    def data_intact(self) -> bool:
        wal = self.data_dir / "member" / "wal"
        return wal.is_dir() and any(wal.iterdir())

    def restart(self, known: Sequence[records.Record], urls: Sequence[str]) -> Joined | None:
        """Start etcd as it was when this machine is still a member (or nobody answers: a
        whole-cluster reboot, where every member must start from its own data). None when
        the data dir belongs to a member etcd no longer has: it is moved aside."""
        with self.open([*urls, self.me.client_url]) as c:
            listed = self.try_list(c) if urls else None
            mine = next((m for m in listed or () if self.me.peer_url in m.peer_urls and m.name == self.me.name), None)
            if listed is not None and mine is None:
                aside = self.data_dir.with_name(f"{self.data_dir.name}.removed-{int(time.time())}")
                self.warn("my data dir belongs to a member etcd no longer lists: moving it to %s and joining anew", aside)
                try:
                    self.data_dir.rename(aside)
                except OSError as e:
                    raise EtcdError(f"{self.me.name}: cannot move the stale data dir {self.data_dir} aside: {e.strerror}; "
                                    "nothing started") from None
                return None
            if mine is None:
                initial = ",".join(sorted({f"{r.name}={r.peer_url}" for r in known if r.peer_url}
                                          | {f"{self.me.name}={self.me.peer_url}"}))
                self.info("no member answers and my data dir is intact: starting etcd from it (whole-cluster restart)")
            else:
                initial = ",".join(sorted(f"{m.name}={u}" for m in listed or () if m.name for u in m.peer_urls))
                self.info("still member %x with my data dir intact: starting etcd without a membership change", mine.id)
            b = Bootstrap(mode=self.spec_bootstrap.mode, cluster_state="existing", initial_cluster=initial)
            self.start_etcd(b)
            if mine is None:
                return self.done("restart", b, 0)
            if mine.is_learner:
                self.promote(c, mine, None)
        self.finish(urls, mine.id)
        return self.done("restart", b, mine.id)

    # -- helpers ------------------------------------------------------------------------

    def alive(self, name: str) -> bool | None:
        """The cloud's word on a member's instance; a cloud that cannot answer knows nothing."""
        try:
            return self.is_alive(name)
        except BakeryError as e:
            self.warn("cannot tell whether %s's instance runs (%s): keeping its member", name, e)
            return None

    def wait(self, deadline: float, probe: Callable[[], T | None], what: str) -> T:
        """probe() until it returns something truthy, with backoff, until `deadline`."""
        delay = self.t.poll
        while True:
            try:
                got = probe()
            except EtcdError as e:
                got, last = None, str(e)
            else:
                last = ""
            if got:
                return got
            if time.monotonic() + delay > deadline:
                raise EtcdError(f"{self.me.name}: gave up waiting for {what}{f' (last error: {last})' if last else ''}")
            time.sleep(delay)
            delay = min(delay * 2, self.t.backoff)

    def settled(self, call: Callable[[], T]) -> T:
        """A membership change, retried while etcd refuses it as "unhealthy cluster"."""
        return while_unsettled(call, settle=self.t.settle, poll=self.t.poll)

    def done(self, how: Literal["day0", "bootstrap", "learner", "restart", "restore"], b: Bootstrap, member_id: int, *,
             removed: tuple[str, ...] = (), refusals: int = 0, lock: tuple[float, float] | None = None, wrote: bool = False,
             promoted: float | None = None) -> Joined:
        seconds = time.monotonic() - self.t0
        self.info("etcd membership done (%s, member %x) in %.1fs", how, member_id, seconds)
        return Joined(self.me.name, how, b, member_id, removed, refusals, lock, seconds, wrote, promoted)
