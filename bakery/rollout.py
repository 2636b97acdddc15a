"""Quorum-safe rolling replacement of masters (nightly rebuilds onto a new image).

One master at a time, and only while every other member is healthy:

    1. check: etcd has exactly the plan's members, all started voters, all healthy;
    2. remove the master's member (through the others), then add its peer URL back as a
       learner, which does not count toward quorum until it has caught up;
    3. render the master with --initial-cluster-state=existing and the membership etcd
       reported (a discovery token is for the first boot only), and have the provider
       replace the machine with it;
    4. promote the learner once it is in sync, and wait until every member is healthy.

Followers go first and the leader last, so the cluster elects a leader once. Any check
that fails stops the rollout before it touches the next master: at most one master is
ever out of the cluster, which a 3-, 5- or 7-member etcd survives by design.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from bakery import state
from bakery.errors import EtcdError
from bakery.etcd import Client, Member, while_unsettled
from bakery.pipeline import Cluster, write_nodes
from bakery.providers.base import Progress, RenderedNode, no_progress
from bakery.topology import ClusterPlan, Node

T = TypeVar("T")


class Replacer(Protocol):
    """What a provider offers a rollout: replace one master's machine."""

    def replace_master(self, node: RenderedNode) -> None:
        """Stop the machine that runs `node.name` and boot a new one (from the current
        image) with `node.user_data`, at the same address. Return once it is booting."""
        ...


@dataclass(frozen=True)
class Replaced:
    node: str
    old_member: int
    new_member: int
    seconds: float
    replacement: str = ""  # a surge rollout's new master (a slot rollout keeps the name)


@dataclass(frozen=True)
class Timing:
    """Bounds on every wait; a rollout never loops forever."""

    healthy: float = 900.0  # new member promoted and every member healthy
    settle: float = 60.0  # etcd accepts a membership change
    poll: float = 2.0


def rollout(
    cluster: Cluster,
    client: Callable[[Sequence[str]], Client],
    replacer: Replacer,
    *,
    nodes: Sequence[str] = (),
    endpoints: Mapping[str, str] | None = None,
    progress: Progress = no_progress,
    timing: Timing = Timing(),
) -> list[Replaced]:
    """Replace `nodes` (default: every master, leader last).

    `client(urls)` opens an etcd client on those client URLs with bakery's etcd client
    certificate; `endpoints` maps each master to the client URL that reaches it from
    here (default: the plan's, for a job that runs inside the masters' network).
    """
    plan = cluster.render().plan
    names = list(nodes) or [n.name for n in plan.nodes]
    for name in names:
        plan.node(name)  # KeyError names the masters
    urls = dict(endpoints or {n.name: n.client_url for n in plan.nodes})
    with client(list(urls.values())) as etcd:
        _require_healthy(etcd, plan, urls, "before the rollout")
        names = _leader_last(etcd, urls, names)
    done = []
    for name in names:
        done.append(_replace_one(cluster, plan.node(name), client, urls, replacer, progress, timing))
    return done


def _replace_one(cluster: Cluster, node: Node, client: Callable[[Sequence[str]], Client], urls: Mapping[str, str],
                 replacer: Replacer, progress: Progress, timing: Timing) -> Replaced:
    plan = cluster.render().plan
    step = f"rollout {node.name}"
    start = time.monotonic()
    others = [url for name, url in urls.items() if name != node.name]
    with client(others) as etcd:
        members = _require_healthy(etcd, plan, urls, f"before replacing {node.name}")
        old = next(m for m in members if m.name == node.name)
        new = rejoin(cluster, node, etcd, replacer.replace_master, old=old, progress=progress, timing=timing)
        _wait_healthy(etcd, plan, urls, timing, f"after replacing {node.name}")
    elapsed = time.monotonic() - start
    progress(step, "done", f"{elapsed:.1f}s")
    return Replaced(node.name, old.id, new.id, elapsed)


def rejoin(cluster: Cluster, node: Node, etcd: Client, launch: Callable[[RenderedNode], object], *,
           old: Member | None, progress: Progress = no_progress, timing: Timing = Timing()) -> Member:
    """Put a new machine for `node` into the cluster: remove its `old` member (None: it has
    none), add its peer URL back as a learner, render it to join the existing cluster with
    the membership etcd reports, `launch` it, promote the learner once in sync.

    `etcd` must reach the other members. Used by the rollout and by the local
    supervisor, which relaunches a master whose machine died (its data dir is gone, so
    its old member must go and a new one join)."""
    step = f"rollout {node.name}"
    if old is not None:
        hand_over_leadership(etcd, old, None, progress, step, timing)
        progress(step, "removing member", f"{old.id:x}")
        _while_unsettled(lambda: etcd.member_remove(old.id), timing)
    progress(step, "adding learner", node.peer_url)
    new = _while_unsettled(lambda: etcd.member_add([node.peer_url], learner=True), timing)
    voters = [m for m in etcd.member_list() if m.id != new.id and not m.is_learner]
    initial = ",".join(sorted([f"{m.name}={m.peer_urls[0]}" for m in voters] + [f"{node.name}={node.peer_url}"]))
    # every render from now on joins an existing cluster, with this membership
    cluster.state = state.update(cluster.paths, bootstrapped=True, initial_cluster=initial)
    rendered = cluster.render()
    write_nodes(cluster.paths, rendered)
    r = rendered.nodes[node.name]
    progress(step, "replacing machine")
    launch(RenderedNode(node.name, node.address, node.zone, r.user_data, r.document))
    progress(step, "waiting to promote", "the learner catches up from the leader")
    _promote_when_in_sync(etcd, new, node, timing)
    return new


def hand_over_leadership(etcd: Client, gone: Member, successor: int | None, progress: Progress, step: str,
                         timing: Timing) -> None:
    """When the member about to be removed leads, move the leadership first (to its
    successor, else another voter): removing a leader leaves the cluster without one for an
    election timeout, during which every write fails and /health is false everywhere."""
    if not gone.client_urls:
        return
    try:
        status = etcd.status(gone.client_urls[0])
    except EtcdError:
        return  # unreachable: it does not lead a cluster that answers; the removal goes ahead
    if status.leader != gone.id:
        return
    voters = [m for m in etcd.member_list() if m.id != gone.id and m.name and not m.is_learner]
    target = next((m.id for m in voters if m.id == successor), voters[0].id if voters else None)
    if target is None:
        return
    progress(step, "moving leadership", f"{gone.id:x} -> {target:x}")
    _while_unsettled(lambda: etcd.move_leader(gone.client_urls[0], target), timing)
    deadline = time.monotonic() + timing.settle
    while time.monotonic() < deadline:
        with contextlib.suppress(EtcdError):
            if etcd.status(gone.client_urls[0]).leader == target:
                return
        time.sleep(timing.poll)


def _while_unsettled(call: Callable[[], T], timing: Timing) -> T:
    return while_unsettled(call, settle=timing.settle, poll=timing.poll)


def _require_healthy(etcd: Client, plan: ClusterPlan, urls: Mapping[str, str], when: str) -> list[Member]:
    """The plan's members, all started voters and healthy; else EtcdError saying why."""
    members = etcd.member_list()
    by_name = {m.name: m for m in members}
    problems = []
    expected = {n.name: n for n in plan.nodes}
    for name, n in expected.items():
        m = by_name.get(name)
        if m is None:
            problems.append(f"{name} is not a member")
        elif m.is_learner:
            problems.append(f"{name} is still a learner")
        elif n.peer_url not in m.peer_urls:
            problems.append(f"{name} has peer URLs {', '.join(m.peer_urls)}, not {n.peer_url}")
        elif not etcd.health(urls[name]):
            problems.append(f"{name} ({urls[name]}) is not healthy")
    strangers = [m.name or f"{m.id:x} (not started)" for m in members if m.name not in expected]
    if strangers:
        problems.append(f"members outside the plan: {', '.join(strangers)}")
    if problems:
        raise EtcdError(f"refusing to replace a master {when}: {'; '.join(problems)}. "
                        "A rollout removes one member at a time and needs every other one healthy to keep quorum.")
    return members


def _leader_last(etcd: Client, urls: Mapping[str, str], names: list[str]) -> list[str]:
    leader = etcd.status(next(iter(urls.values()))).leader
    member_names = {m.id: m.name for m in etcd.member_list()}
    return sorted(names, key=lambda n: (member_names.get(leader) == n, names.index(n)))


def _promote_when_in_sync(etcd: Client, learner: Member, node: Node, timing: Timing) -> None:
    deadline = time.monotonic() + timing.healthy
    last = ""
    while time.monotonic() < deadline:
        try:
            etcd.member_promote(learner.id)
            return
        except EtcdError as e:  # "can only promote a learner member which is in sync with leader"
            last = str(e)
        # bakery-node on the new machine promotes its own learner too: a voter is done
        try:
            current = next((m for m in etcd.member_list() if m.id == learner.id), None)
        except EtcdError as e:
            current, last = None, str(e)
        if current is not None and not current.is_learner:
            return
        time.sleep(timing.poll)
    raise EtcdError(f"{node.name}: its new member {learner.id:x} did not catch up within {timing.healthy:.0f}s "
                    f"(last answer: {last}); it stays a learner, the cluster keeps quorum; see the machine's console")


def _wait_healthy(etcd: Client, plan: ClusterPlan, urls: Mapping[str, str], timing: Timing, when: str) -> None:
    deadline = time.monotonic() + timing.healthy
    while True:
        try:
            _require_healthy(etcd, plan, urls, when)
            return
        except EtcdError:
            if time.monotonic() > deadline:
                raise
        time.sleep(timing.poll)
