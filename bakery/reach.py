"""Where the cluster's etcd members are, for every operation that reaches etcd from the
operator's machine (backup, restore, rollout, nightly, status): one answer, from every
source that knows, never the plan's day-0 addresses alone.

    members = reach.locate(spec, provider, store, overrides)      # who and where
    seen = reach.survey(members, tls)                              # what each one says
    reach.restore_allowed(members, seen, force=...)                # restore's refusal

Sources, in this order (one URL named by several sources is one endpoint, with every source):

    --etcd-endpoint   the operator's NODE=URL (how to reach a master from here)
    group             the master group's current members (build/<cluster>/local/group.json,
                      the autoscaling group, the managed instance groups) with the
                      provider's own view of whether each machine runs
    provider          masters in fixed slots as the provider reaches them (local VMs:
                      forwarded ports)
    plan              masters in fixed slots at the plan's addresses (the plan is where
                      they are: a replacement keeps its slot)
    store record      bakery-node's membership records (<cluster>/members/), each written
                      by the member itself once it served
    restore request   the old cluster's members a pending restore request names (its
                      records are gone from the store by then)

The local provider's PID files say which of its masters run: one that does not is
"not running" and never probed (a retired container's address has no host; a VM's
hub address has no route from here). A group replaces masters at new names and
addresses: after a rollout the plan's addresses name nobody, which is how `bakery
restore` once saw "no healthy member" over a healthy cluster (issue 24).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bakery import restore, topology
from bakery.errors import BakeryError, EtcdError
from bakery.etcd import TLS, Client, Probe
from bakery.node import members as records
from bakery.spec import ClusterSpec
from bakery.store import Store

PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class Endpoint:
    """One member as this machine reaches it."""

    name: str
    url: str  # how this machine reaches its etcd
    sources: tuple[str, ...]
    advertised: str = ""  # its own client URL, as its peers reach it ("" unknown)
    machine: str = "unknown"  # the provider's word on its machine: running, not running, unknown

    def describe(self) -> str:
        return f"{self.name} ({self.url}, from {' and '.join(self.sources)})"


@dataclass(frozen=True)
class Members:
    cluster: str
    endpoints: tuple[Endpoint, ...]
    problems: tuple[str, ...] = ()  # sources that could not be read: what they hold is unknown
    asked: tuple[str, ...] = field(default=())  # the sources that were read

    @property
    def urls(self) -> list[str]:
        """Where to reach the members, less those whose machine the provider says is not running."""
        return list(dict.fromkeys(e.url for e in self.endpoints if e.machine != "not running"))

    def by_name(self) -> dict[str, str]:
        """Each name's first URL (--etcd-endpoint before the provider's, before the plan's)."""
        out: dict[str, str] = {}
        for e in self.endpoints:
            out.setdefault(e.name, e.url)
        return out

    def require(self, what: str) -> list[str]:
        """The URLs, or EtcdError naming what was looked at when there are none."""
        if not self.urls:
            stopped = ", ".join(e.name for e in self.endpoints if e.machine == "not running")
            raise EtcdError(f"{self.cluster}: no etcd member to {what}{f' (not running: {stopped})' if stopped else ''}: "
                            f"{self.looked_at()}")
        return self.urls

    def looked_at(self) -> str:
        text = f"looked at {', '.join(self.asked) or 'nothing'}"
        return text + (f"; could not read {'; '.join(self.problems)}" if self.problems else "")


def locate(spec: ClusterSpec, provider: Any, store: Store | None, overrides: Sequence[tuple[str, str]] = (), *,
           plan: topology.ClusterPlan | None = None, machines: bool = False) -> Members:
    """Every member of `spec`'s cluster that any source knows (see the module's doc).
    `provider` may be None (no provider is asked: masters on loopback addresses, in
    development); `machines` also asks the provider whether each group member's machine
    runs (cloud API calls per member: restore only)."""
    plan = plan or topology.plan(spec)
    found: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    asked: list[str] = []

    def add(name: str, url: str, source: str, advertised: str = "", machine: str = "unknown") -> None:
        e = found.setdefault(url, {"name": name, "sources": [], "advertised": advertised, "machine": machine})
        if source not in e["sources"]:
            e["sources"].append(source)
        e["advertised"] = e["advertised"] or advertised
        if e["machine"] == "unknown":
            e["machine"] = machine

    for name, url in overrides:
        add(name, url, "--etcd-endpoint")
    if overrides:
        asked.append("--etcd-endpoint")
    on_loopback = all(ipaddress.ip_address(n.address).is_loopback for n in plan.nodes)
    by_plan = {n.name: n for n in plan.nodes}
    if on_loopback:
        provider = None  # several members on one host (development): the plan's addresses are theirs
    # the provider's own word on a machine, where it is cheap and authoritative (the local
    # provider's PID files: a master it does not run is not running, and is never probed)
    pid_of = getattr(provider, "master_pid", None) if getattr(provider, "name", "") == "local" else None

    def machine(name: str, ask: Any = None) -> str:
        if pid_of is not None:
            return "running" if pid_of(name) else "not running"
        if machines and ask is not None:
            return "running" if ask(name) else "not running"
        return "unknown"

    if provider is not None and getattr(provider, "cattle", False):
        asked.append(f"the {provider.name} master group")
        try:
            group = provider.group()
            for name, url in group.etcd_endpoints().items():
                add(name, url, "group", url, machine(name, group.running))  # a group member's own address
        except BakeryError as e:
            names = provider.members() if pid_of is not None else []
            if pid_of is not None and not any(pid_of(n) for n in names):
                # no network for the group (the bridge is down), and none of its machines runs
                for name in names:
                    add(name, provider.node_endpoint(name), "group", machine="not running")
            else:
                problems.append(f"the {provider.name} master group ({e.lines()[0]})")
    elif provider is not None and hasattr(provider, "etcd_endpoints"):
        asked.append(f"the {provider.name} provider's masters")
        try:
            for name, url in provider.etcd_endpoints().items():
                add(name, url, "provider", by_plan[name].client_url if name in by_plan else "", machine(name))
        except BakeryError as e:
            problems.append(f"the {provider.name} provider's masters ({e.lines()[0]})")
    else:
        asked.append("the plan's fixed addresses")
        for n in plan.nodes:
            add(n.name, n.client_url, "plan", n.client_url, machine(n.name))
    if store is not None:
        asked.append(f"the store's member records ({store.url})")
        try:
            for r in records.records(store, spec.name):
                add(r.name, _reachable(r.client_url, found), "store record", r.client_url, machine(r.name))
        except BakeryError as e:
            problems.append(f"the store's member records ({e.lines()[0]})")
        try:
            req = restore.pending(store, spec.name)
        except BakeryError as e:
            problems.append(f"the store's restore request ({e.lines()[0]})")
            req = None
        if req is not None:
            asked.append("the pending restore request's old members")
            for m in req.members:
                add(m["name"], _reachable(m["client_url"], found), "restore request", m["client_url"], machine(m["name"]))
    endpoints = tuple(Endpoint(e["name"], url, tuple(e["sources"]), e["advertised"], e["machine"]) for url, e in found.items())
    return Members(spec.name, endpoints, tuple(problems), tuple(asked))


def _reachable(advertised: str, found: dict[str, dict[str, Any]]) -> str:
    """A member's advertised URL as this machine reaches it: through the URL a source
    already gave for that address (a forwarded port), else as advertised."""
    for url, e in found.items():
        if e["advertised"] == advertised:
            return url
    return advertised


# -- what the members say ----------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    endpoint: Endpoint
    state: str  # healthy, unhealthy, refused, unreachable, not running
    detail: str = ""
    cluster_id: int = 0
    member_id: int = 0
    leader: bool = False

    def describe(self) -> str:
        what = {"healthy": "healthy", "unhealthy": "answers, not healthy", "refused": "connection refused (no etcd there)",
                "unreachable": "no answer", "not running": "its machine is not running"}[self.state]
        return f"{self.endpoint.describe()}: {what}{f' ({self.detail})' if self.detail else ''}"


def survey(members: Members, tls: TLS, timeout: float = PROBE_TIMEOUT) -> list[Seen]:
    """Each member's /health (in parallel), with its cluster and member id when it answers.
    A member whose machine the provider says is not running is not probed."""
    todo = [e for e in members.endpoints if e.machine != "not running"]
    out = {e.name: Seen(e, "not running") for e in members.endpoints if e.machine == "not running"}
    if todo:
        with Client([e.url for e in todo], tls, timeout=timeout) as c, ThreadPoolExecutor(max_workers=min(len(todo), 8)) as pool:
            for e, seen in zip(todo, pool.map(lambda e: _look(c, e), todo), strict=True):
                out[e.name] = seen
    return [out[e.name] for e in members.endpoints]


def _look(c: Client, e: Endpoint) -> Seen:
    p: Probe = c.probe(e.url)
    if not p.answered:
        return Seen(e, p.state, p.detail)
    try:
        st = c.status(e.url)
    except EtcdError:
        return Seen(e, p.state, p.detail)
    return Seen(e, p.state, p.detail, st.cluster_id, st.member_id, st.is_leader)


def restore_allowed(members: Members, seen: Sequence[Seen], *, force: bool) -> list[str]:
    """Whether a restore may replace the cluster: only once every member known anywhere was
    positively seen down (connection refused, or its machine not running). A healthy
    member refuses it even with --force (the masters would not act on the request while
    it serves); no answer, an unhealthy answer, a source that could not be read, or no
    member known at all refuse it unless --force. Returns the lines that say what was
    seen; EtcdError (exit 6) otherwise, before anything changed."""
    lines = [s.describe() for s in seen]
    healthy = [s for s in seen if s.state == "healthy"]
    if healthy:
        raise EtcdError(f"refusing to restore over a running cluster: {'; '.join(s.describe() for s in healthy)}. "
                        "A restore starts a new cluster beside it; the masters would not act on the request while "
                        "a member of the old cluster serves. Nothing changed")
    unknown = [s.describe() for s in seen if s.state not in ("refused", "not running")]
    if members.problems:
        unknown += [f"could not read {p}" for p in members.problems]
    if not members.endpoints:
        unknown.append(f"found no member anywhere ({members.looked_at()})")
    if unknown and not force:
        raise EtcdError(f"refusing to restore: cannot tell that no member of the cluster answers: {'; '.join(unknown)}. "
                        f"Tried: {'; '.join(lines) or 'nothing'}. No answer is not \"nothing is healthy\": once you know "
                        "every master is gone, rerun with --force. Nothing changed")
    return lines
