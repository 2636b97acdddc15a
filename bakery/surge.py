"""Surge rollouts and healing for master groups whose masters are cattle (every master
boots the cluster's one small user-data; bakery-node joins it as a learner by itself).

Per old master, followers first and the leader last:

    1. check: etcd's voters are exactly the group's members, all healthy;
    2. snapshot etcd into the state store (bakery/backup.py);
    3. surge: the group starts one new master (desired + 1) from the current image;
    4. wait until its member is a promoted voter and every member is healthy;
    5. remove the old master's member (the cluster still has N healthy voters) and
       forget its membership record; the group retires the old machine (desired = N).

The cluster never has fewer than N healthy voters. Every wait is bounded. A journal in
the store (layout.rollout_journal) records each step before it is taken, so a rerun
after Ctrl-C, a crash or a failed step continues where it stopped: a surged master is
adopted, never surged twice; a learner whose machine is gone is removed; an old master
whose member was removed is retired. `plan` says what a run would do (--dry-run).

`heal` is the group's other half: a master whose machine died is removed from etcd
(the others keep quorum), retired, and replaced by a new one that joins by itself.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bakery import backup
from bakery.errors import EtcdError, StoreError, StoreNotFound
from bakery.etcd import Client, Member, while_unsettled
from bakery.node import members as records
from bakery.pipeline import Cluster
from bakery.providers.base import Progress, no_progress
from bakery.render.userdata import UserData
from bakery.rollout import Replaced, Timing, hand_over_leadership
from bakery.store import Store, layout

JOURNAL_VERSION = 1
DEFAULT_TIMING = Timing()
SURGES = 3  # new masters one replacement may start (one lost before it joined is replaced, twice)


class Group(Protocol):
    """What a master group offers (the local group today; ASG and MIG the same way)."""

    def members(self) -> list[str]: ...
    def etcd_endpoints(self) -> dict[str, str]: ...
    def peer_url(self, name: str) -> str: ...
    def running(self, name: str) -> bool: ...
    def surge(self, user_data: UserData, like: str | None = None) -> str: ...
    def retire(self, name: str) -> None: ...


ClientFactory = Callable[[Sequence[str]], Client]


def user_data(cluster: Cluster, store: Store) -> UserData:
    """The cluster's one small user-data, with the description it names published to
    `store` first (uploads only what changed)."""
    rendered = cluster.render()
    cluster.publish(rendered, store)
    return next(iter(rendered.nodes.values())).user_data


# -- the journal ------------------------------------------------------------------------------


@dataclass
class Journal:
    todo: list[str]
    started: str
    done: list[dict[str, Any]]
    current: dict[str, Any] | None = None

    def to_json(self) -> bytes:
        return json.dumps({"version": JOURNAL_VERSION, "started": self.started, "todo": self.todo,
                           "done": self.done, "current": self.current}, indent=2).encode()


def load_journal(store: Store, cluster: str) -> Journal | None:
    key = layout.rollout_journal(cluster)
    try:
        doc = json.loads(store.get(key))
    except StoreNotFound:
        return None
    except ValueError as e:
        raise StoreError(f"{key}: the rollout journal is not JSON ({e}); look at it, then delete it to start afresh") from None
    if not isinstance(doc, dict) or doc.get("version") != JOURNAL_VERSION or not isinstance(doc.get("todo"), list):
        raise StoreError(f"{key}: not a rollout journal this bakery writes (version {JOURNAL_VERSION}); "
                         "look at it, then delete it to start afresh")
    return Journal(todo=[str(t) for t in doc["todo"]], started=str(doc.get("started", "")),
                   done=list(doc.get("done") or []), current=doc.get("current"))


def _save(store: Store, cluster: str, j: Journal) -> None:
    store.put(layout.rollout_journal(cluster), j.to_json())


# -- the plan ---------------------------------------------------------------------------------


def plan(group: Group, journal: Journal | None, nodes: Sequence[str], leader: str | None) -> list[str]:
    """The lines a --dry-run prints: what a run would do, in order."""
    lines = []
    if journal is not None:
        lines.append(f"resume the rollout started {journal.started} ({len(journal.done)} of {len(journal.todo)} replaced)")
        if journal.current:
            c = journal.current
            lines.append(f"finish replacing {c['old']} (stopped at step {c['phase']}"
                         + (f", new master {c['new']}" if c.get("new") else "") + ")")
    for name in _order(group, journal, nodes, leader):
        if journal and journal.current and journal.current["old"] == name:
            continue
        lines.append(f"replace {name}{' (leader, last)' if name == leader else ''}: snapshot etcd into the store, "
                     "start one new master, wait until it is a healthy voter, remove "
                     f"{name}'s member, retire {name}")
    return lines or ["nothing to replace"]


def _order(group: Group, journal: Journal | None, nodes: Sequence[str], leader: str | None) -> list[str]:
    members = group.members()
    if journal is not None:
        replaced = {d["old"] for d in journal.done}
        names = [n for n in journal.todo if n not in replaced and n in members]
    else:
        names = list(nodes) or members
    return sorted(names, key=lambda n: (n == leader, names.index(n)))


# -- the rollout ------------------------------------------------------------------------------


def rollout(cluster: str, client: ClientFactory, group: Group, store: Store, data: UserData, *, nodes: Sequence[str] = (),
            progress: Progress = no_progress, timing: Timing = DEFAULT_TIMING, workdir: Any = None) -> list[Replaced]:
    """Replace `nodes` (default: every member) of `cluster` by surging, leader last, each
    new master booting `data` (user_data()); resumes a journal."""
    for name in nodes:
        if name not in group.members():
            raise EtcdError(f"{name} is not a master of the group (masters: {', '.join(group.members())})")
    journal = load_journal(store, cluster)
    urls = group.etcd_endpoints()
    with client(list(urls.values())) as etcd:
        if journal is not None:
            progress("rollout", "resuming", f"journal of {journal.started}: {len(journal.done)} of {len(journal.todo)} done")
        if journal is not None and journal.current:
            _finish(cluster, client, group, store, journal, data, progress, timing, workdir)
        require_healthy(etcd, group, "before the rollout")
        leader = leader_name(etcd, group)
        order = _order(group, journal, nodes, leader)
        if journal is None:
            journal = Journal(todo=order, started=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), done=[])
            _save(store, cluster, journal)
    for name in order:
        journal.current = {"old": name, "phase": "check", "started": time.time()}
        _save(store, cluster, journal)
        _finish(cluster, client, group, store, journal, data, progress, timing, workdir)
    store.delete(layout.rollout_journal(cluster))
    return [Replaced(d["old"], int(d["old_member"]), int(d["new_member"]), float(d["seconds"]), d["new"]) for d in journal.done]


def _settled(call: Callable[[], Any], timing: Timing) -> Any:
    return while_unsettled(call, settle=timing.settle, poll=timing.poll)


def _finish(cluster: str, client: ClientFactory, group: Group, store: Store, journal: Journal, data: UserData,
            progress: Progress, timing: Timing, workdir: Any) -> None:
    """Carry journal.current (one old master) through to the end, from whichever step it
    stopped at; each step is recorded before the next begins."""
    c = journal.current
    assert c is not None
    old, name = c["old"], cluster
    step = f"rollout {old}"

    def save(**kw: Any) -> None:
        c.update(kw)
        _save(store, name, journal)

    with client(list(group.etcd_endpoints().values())) as etcd:
        if c["phase"] == "check":
            require_healthy(etcd, group, f"before replacing {old}")
            status = backup.healthy_member(etcd, list(group.etcd_endpoints().values()))
            progress(step, "snapshot", f"through {status.endpoint}, revision {status.revision}")
            b = backup.take(etcd, status, store, name, workdir=workdir)
            peer = group.peer_url(old)
            save(phase="surging", backup=b.id, old_peer=peer, old_member=_member_id(etcd, old, peer),
                 known=group.members(), surges=0)
        while c["phase"] in ("surging", "surged"):
            if c["phase"] == "surging":
                extra = [m for m in group.members() if m not in c["known"]]
                if extra:  # the surge happened before the interruption: adopt it, never a second one
                    progress(step, "adopting", f"{extra[0]}, started by the interrupted run")
                    save(phase="surged", new=extra[0])
                    continue
                if c["surges"] >= SURGES:
                    raise EtcdError(f"replacing {old}: {SURGES} new masters were lost before they joined; {old} stays in "
                                    "place and the cluster keeps its quorum; see their consoles (bakery logs), then rerun")
                progress(step, "surging", "one new master from the current image")
                save(surges=c["surges"] + 1)
                save(phase="surged", new=group.surge(data, like=old))
            new = c["new"]
            if new not in group.members() or not group.running(new):
                # its machine is gone: remove any learner it left, then surge anew
                left = _member(etcd, new, "")
                if left is not None:
                    _settled(lambda lid=left.id: etcd.member_remove(lid), timing)
                if new in group.members():
                    group.retire(new)
                progress(step, "surge lost", f"{new} is gone")
                save(phase="surging", new=None, known=group.members())
                continue
            progress(step, "waiting", f"{new} joins etcd as a learner and is promoted")
            save(phase="remove", new_member=wait_voter(etcd, group, new, timing).id)
        if c["phase"] == "remove":
            gone = _member(etcd, old, c.get("old_peer", ""))
            if gone is not None:
                hand_over_leadership(etcd, gone, c.get("new_member"), progress, step, timing)
                progress(step, "removing member", f"{gone.id:x}")
                # through the others: a member asked to remove itself stops before it answers
                others = [url for n, url in group.etcd_endpoints().items() if n != old]
                with client(others) as rest:
                    _settled(lambda: rest.member_remove(gone.id), timing)
            records.forget(store, name, old, int(c.get("old_member") or 0))
            save(phase="retire")
        if c["phase"] == "retire":
            if old in group.members():
                progress(step, "retiring", f"{old}'s machine")
                group.retire(old)
            wait_all_healthy(etcd, group, timing, f"after replacing {old}")
            journal.done.append({"old": old, "new": c["new"], "old_member": int(c.get("old_member") or 0),
                                 "new_member": int(c["new_member"]), "backup": c.get("backup"),
                                 "seconds": round(max(time.time() - float(c.get("started", time.time())), 0.0), 1)})
            journal.current = None
            _save(store, name, journal)
            progress(step, "done", f"{c['new']} in its place")


# -- healing ----------------------------------------------------------------------------------


def heal(cluster: str, client: ClientFactory, group: Group, store: Store, data: UserData, dead: str, *,
         progress: Progress = no_progress, timing: Timing = DEFAULT_TIMING) -> str:
    """Replace master `dead` of `cluster`, whose machine is gone: remove its member
    through the others, forget its record, retire it, start a new master booting `data`;
    returns the new one's name once it is a healthy voter."""
    others = [url for n, url in group.etcd_endpoints().items() if n != dead]
    with client(others) as etcd:
        gone = _member(etcd, dead, group.peer_url(dead))
        if gone is not None:
            progress(f"heal {dead}", "removing member", f"{gone.id:x}")
            _settled(lambda: etcd.member_remove(gone.id), timing)
            records.forget(store, cluster, dead, gone.id)
        like = next((m for m in group.members() if m != dead), None)  # the dead one's zone may be gone with it
        group.retire(dead)
        new = group.surge(data, like=like)
        progress(f"heal {dead}", "waiting", f"{new} joins etcd as a learner and is promoted")
        wait_voter(etcd, group, new, timing)
    return new


# -- checks and waits -------------------------------------------------------------------------


def _member(etcd: Client, name: str, peer_url: str) -> Member | None:
    return next((m for m in etcd.member_list() if (name and m.name == name) or (peer_url and peer_url in m.peer_urls)), None)


def _member_id(etcd: Client, name: str, peer_url: str) -> int:
    m = _member(etcd, name, peer_url)
    return m.id if m else 0


def leader_name(etcd: Client, group: Group) -> str | None:
    urls = group.etcd_endpoints()
    leader = etcd.status(next(iter(urls.values()))).leader
    return next((m.name for m in etcd.member_list() if m.id == leader), None)


def require_healthy(etcd: Client, group: Group, when: str) -> list[Member]:
    """etcd's members are exactly the group's, all started voters and healthy; else EtcdError."""
    members = etcd.member_list()
    urls = group.etcd_endpoints()
    by_name = {m.name: m for m in members}
    problems = []
    for name, url in urls.items():
        m = by_name.get(name)
        if m is None:
            problems.append(f"{name} is not a member")
        elif m.is_learner:
            problems.append(f"{name} is still a learner")
        elif not etcd.health(url):
            problems.append(f"{name} ({url}) is not healthy")
    strangers = [m.name or f"{m.id:x} (not started)" for m in members if m.name not in urls]
    if strangers:
        problems.append(f"members without a machine in the group: {', '.join(strangers)}")
    if problems:
        raise EtcdError(f"refusing to replace a master {when}: {'; '.join(problems)}. A surge rollout needs every "
                        "member healthy; rerun once they are (the journal keeps its place)")
    return members


def wait_voter(etcd: Client, group: Group, name: str, timing: Timing) -> Member:
    """Until member `name` is a started voter and every member of the group is healthy (bounded)."""
    deadline = time.monotonic() + timing.healthy
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            m = _member(etcd, name, "")
            if m is None:
                last = f"{name} is not a member yet"
            elif m.is_learner:
                last = f"{name} is still a learner"
            else:
                urls = group.etcd_endpoints()
                down = [n for n, url in urls.items() if not etcd.health(url)]
                if not down:
                    return m
                last = f"not healthy: {', '.join(down)}"
        except EtcdError as e:
            last = str(e)
        time.sleep(timing.poll)
    raise EtcdError(f"{name} did not become a healthy voter within {timing.healthy:.0f}s ({last}); the cluster keeps "
                    "its quorum; see its console (bakery logs), then rerun: the journal continues from here")


def wait_all_healthy(etcd: Client, group: Group, timing: Timing, when: str) -> None:
    deadline = time.monotonic() + timing.healthy
    while True:
        try:
            require_healthy(etcd, group, when)
            return
        except EtcdError:
            if time.monotonic() > deadline:
                raise
        time.sleep(timing.poll)
