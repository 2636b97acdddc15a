"""The provider interface: one small Protocol and the values that cross it.

`bakery up` runs the same sequence on every provider:

    1. the provider finds or creates the load balancer and returns its addresses;
    2. it calls `render(lb)`: bakery issues or checks the API server certificate for
       those names and renders every master's user-data (RenderedCluster);
    3. it finds or creates the masters with that user-data, then registers targets.

Providers find every resource by its tags/labels (or deterministic name) before they
create it, so a rerun, or a run after an interruption, converges without duplicates.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bakery.render.userdata import UserData
from bakery.store import Store


@dataclass(frozen=True)
class LBAddress:
    """What the provider learnt about its load balancer: these go into the certificate SANs."""

    dns_names: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    # where clients reach it when that is not load_balancer.port (the API servers' own
    # port): the local LB's port on 127.0.0.1, one of a range chosen per cluster
    port: int | None = None


@dataclass(frozen=True)
class RenderedNode:
    name: str
    address: str
    zone: str
    user_data: UserData  # what the machine boots with
    document: bytes = b""  # the node's whole tree as #cloud-config (what bakery-node writes there)


# node name -> what to boot it with
RenderedCluster = Mapping[str, RenderedNode]
RenderCallback = Callable[[LBAddress], RenderedCluster]


class Progress(Protocol):
    """Where providers report what they are doing; cli.py turns it into lines or a bar.

    `step` names the resource or phase ("lb", "master demo-master-0"), `status` is a
    short word ("creating", "exists", "created", "waiting", "healthy", "deleted").
    """

    def __call__(self, step: str, status: str, detail: str = "") -> None: ...


def no_progress(step: str, status: str, detail: str = "") -> None:
    """A Progress that drops everything (library use, tests)."""


@dataclass
class NodeStatus:
    name: str
    id: str | None
    address: str | None
    zone: str | None
    state: str
    health: str = "unknown"
    image: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClusterStatus:
    cluster: str
    provider: str
    endpoint: str | None
    nodes: list[NodeStatus]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class UpResult:
    """What `up` did: ids of resources it created and found, and drift it refused to fix."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    endpoint: str | None = None
    # the local provider: its LB fronts etcd on `endpoint` and the Kubernetes API here
    api_endpoint: str | None = None


@dataclass
class Ledger:
    """What one provider command created, found, deleted and saw drift in, reported to
    `progress` as it happens (one line per resource). Thread-safe: providers run
    independent calls in parallel."""

    progress: Progress
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _add(self, into: list[str], kind: str, rid: str, status: str) -> None:
        with self._lock:
            into.append(f"{kind} {rid}")
            self.progress(f"{kind} {rid}", status)

    def found(self, kind: str, rid: str) -> None:
        self._add(self.existing, kind, rid, "exists")

    def made(self, kind: str, rid: str) -> None:
        self._add(self.created, kind, rid, "created")

    def gone(self, kind: str, rid: str) -> None:
        self._add(self.deleted, kind, rid, "deleted")

    def drifted(self, message: str) -> None:
        with self._lock:
            self.drift.append(message)


class Provider(Protocol):
    name: str

    def up(self, render: RenderCallback, *, wait: bool = False) -> UpResult: ...

    def status(self) -> ClusterStatus: ...

    def store(self) -> Store:
        """The cluster's state store, opened with the credentials this provider uses."""
        ...

    def down(self) -> list[str]:
        """Delete exactly the resources that carry the cluster's tag; return what was deleted."""
        ...


def forget_etcd(store: Store, cluster: str, ledger: Ledger) -> None:
    """`down` deleted every master with its disk, so no member's data is left: what the
    store says about the etcd cluster goes too (bakery/node/members.forget_cluster), and
    the next `up` bootstraps a new cluster instead of waiting to join the old one. The
    backups, the PKI and the descriptions stay; `bakery restore` brings a backup back."""
    from bakery.node import members

    gone = members.forget_cluster(store, cluster)
    if gone:
        prefix = f"{cluster}/"
        ledger.gone("etcd records", f"{', '.join(k.removeprefix(prefix) for k in gone)} in {store.url}")
