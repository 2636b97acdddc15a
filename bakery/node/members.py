"""What bakery-node keeps in the state store about etcd membership (keys from store.layout):

    <cluster>/members/<node>.json   one record per member: name, member id, peer and client URL
    <cluster>/etcd/bootstrap        store-mode day 0: the record of the node that won put_if_absent
    <cluster>/etcd/bootstrapped     marker: etcd exists, every later node joins as a learner

Every object is JSON; one that does not parse, or parses into something else, is a
StoreError naming the store, the key and what was expected, never a guess.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from bakery.errors import StoreError, StoreNotFound
from bakery.store import Store, layout
from bakery.topology import Node


@dataclass(frozen=True)
class Record:
    """One master as the store remembers it."""

    name: str
    peer_url: str
    client_url: str
    member_id: int = 0  # 0 in a bootstrap claim: the member does not exist yet

    @classmethod
    def of(cls, node: Node, member_id: int = 0) -> Record:
        return cls(node.name, node.peer_url, node.client_url, member_id)

    def to_json(self) -> bytes:
        body = {"name": self.name, "peer_url": self.peer_url, "client_url": self.client_url, "at": _now()}
        if self.member_id:
            body["member_id"] = f"{self.member_id:x}"
        return json.dumps(body, sort_keys=True).encode() + b"\n"


def _load(store: Store, key: str, data: bytes, what: str) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise StoreError(f"store {store.url}: {key} is not {what} (not JSON: {e}); fix or delete it") from None
    if not isinstance(body, dict):
        raise StoreError(f"store {store.url}: {key} is not {what} (a JSON object is expected, not {type(body).__name__}); fix or delete it")
    return body


def _record(store: Store, key: str, data: bytes, what: str) -> Record:
    body = _load(store, key, data, what)
    fields = {}
    for f in ("name", "peer_url", "client_url"):
        v = body.get(f)
        if not isinstance(v, str) or not v:
            raise StoreError(f"store {store.url}: {key} is not {what}: `{f}` must be a non-empty string; fix or delete it")
        fields[f] = v
    for f in ("peer_url", "client_url"):
        if not fields[f].startswith("https://"):
            raise StoreError(f"store {store.url}: {key} is not {what}: `{f}` must be an https:// URL, not {fields[f]!r}")
    raw_id = body.get("member_id", "0")
    try:
        member_id = int(raw_id, 16) if isinstance(raw_id, str) else -1
    except ValueError:
        member_id = -1
    if member_id < 0:
        raise StoreError(f"store {store.url}: {key} is not {what}: `member_id` must be a hex string, not {raw_id!r}")
    return Record(fields["name"], fields["peer_url"], fields["client_url"], member_id)


def records(store: Store, cluster: str) -> list[Record]:
    """Every membership record (a corrupt one is a StoreError: it could hide the cluster)."""
    out = []
    prefix = layout.members_prefix(cluster)
    for key in store.list(prefix):
        if not key.endswith(".json"):
            continue
        try:
            data = store.get(key)
        except StoreNotFound:
            continue  # deleted between list and get: that member was removed
        out.append(_record(store, key, data, "a membership record"))
    return out


def write(store: Store, cluster: str, record: Record) -> None:
    store.put(layout.member(cluster, record.name), record.to_json())


def forget(store: Store, cluster: str, name: str, member_id: int) -> None:
    """Delete `name`'s record if it still describes `member_id` (a replacement with the
    same name may already have written its own)."""
    key = layout.member(cluster, name)
    try:
        current = _record(store, key, store.get(key), "a membership record")
    except (StoreNotFound, StoreError):
        return
    if current.member_id == member_id:
        store.delete(key)


def forget_cluster(store: Store, cluster: str) -> list[str]:
    """Delete what says an etcd cluster runs: the bootstrapped marker, the store-mode
    bootstrap claim and every membership record; returns the keys deleted. For when no
    member's data is left (`down` deleted the masters with their disks) or a restore starts
    a new cluster: a marker that outlives its cluster has every later master wait, as a
    learner, for a cluster that no longer exists. The marker goes first: a crash after it
    leaves records of dead members, which a day-0 master probes and finds dead; the other
    order would leave exactly the marker that blocks."""
    etcd = set(store.list(f"{layout.cluster_prefix(cluster)}etcd/"))
    keys = [k for k in (layout.bootstrapped(cluster), layout.bootstrap_claim(cluster)) if k in etcd]
    keys += store.list(layout.members_prefix(cluster))
    for key in keys:
        store.delete(key)
    return keys


def claim(store: Store, cluster: str, me: Node) -> tuple[bool, Record]:
    """Try to win the store-mode bootstrap; returns (won, the winner's record)."""
    key = layout.bootstrap_claim(cluster)
    mine = Record.of(me)
    if store.put_if_absent(key, mine.to_json()):
        return True, mine
    try:
        winner = _record(store, key, store.get(key), "a bootstrap claim")
    except StoreNotFound:
        raise StoreError(f"store {store.url}: {key} existed a moment ago and is gone now; "
                         "something else deletes the cluster's objects") from None
    return winner.name == me.name, winner


def claimed(store: Store, cluster: str) -> Record | None:
    """The store-mode bootstrap claim's record, None when nobody claimed it (read only)."""
    key = layout.bootstrap_claim(cluster)
    try:
        return _record(store, key, store.get(key), "a bootstrap claim")
    except StoreNotFound:
        return None


def bootstrapped(store: Store, cluster: str) -> dict[str, Any] | None:
    """The marker's content, None when etcd has not bootstrapped yet."""
    key = layout.bootstrapped(cluster)
    try:
        data = store.get(key)
    except StoreNotFound:
        return None
    body = _load(store, key, data, "the bootstrapped marker")
    if body.get("cluster") != cluster:
        raise StoreError(f"store {store.url}: {key} is the marker of cluster {body.get('cluster')!r}, not {cluster!r}; fix or delete it")
    return body


def mark_bootstrapped(store: Store, cluster: str, by: str, members: list[str]) -> bool:
    """Write the marker once; True if this call wrote it."""
    body = {"cluster": cluster, "by": by, "at": _now(), "members": sorted(members)}
    return store.put_if_absent(layout.bootstrapped(cluster), json.dumps(body, sort_keys=True).encode() + b"\n")


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
