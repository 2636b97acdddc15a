"""etcd backups in the state store: take, list, check, prune.

    <cluster>/backups/<id>.db          the snapshot, as etcd's maintenance/snapshot streams it
    <cluster>/backups/<id>.json        {bakery_backup, cluster, revision, member, size, etcd_version, sha256, taken_at}
    <cluster>/backups/<id>.db.sha256   "<hex>  <id>.db" (sha256sum's format), written last

An id is the UTC minute and the revision the member had reached when the snapshot
began (the snapshot holds at least that revision): `20261201T2300Z-r12345`. A backup
is complete once its checksum object exists; `fetch` refuses one whose bytes do not
match it. Retention (`retained`) is kops' default: one backup per hour for a week, one
per day for a year. `prune` deletes only backups this module wrote (a well-formed id
and a metadata object that says so); anything else under the prefix is left alone.

Used by `bakery backup` (through any healthy member) and by `bakery-node backup` on the
masters (through the local member, only on the leader).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bakery.errors import EtcdError, StoreError, StoreNotFound
from bakery.etcd import Client, Status
from bakery.output import atomic_write
from bakery.spec import ClusterSpec
from bakery.store import Store, layout, location

VERSION = 1
ID_RE = re.compile(r"^(?P<at>\d{8}T\d{4}Z)-r(?P<rev>[0-9]+)$")
ID_TIME = "%Y%m%dT%H%MZ"
HOURLY_FOR = dt.timedelta(days=7)
DAILY_FOR = dt.timedelta(days=365)


def store_url(spec: ClusterSpec, build_dir: str | Path, override: str | None = None) -> str:
    """The state store backups go to: `override` (--store), else the cluster's store
    (the spec's `store.url` or the provider's default, bakery.store.location)."""
    return override or location.store_url(spec, build_dir)


# -- ids and retention (pure) ---------------------------------------------------------------


def make_id(at: dt.datetime, revision: int) -> str:
    return f"{at.astimezone(dt.UTC).strftime(ID_TIME)}-r{revision}"


def parse_id(backup_id: str) -> tuple[dt.datetime, int] | None:
    """(time, revision) of a well-formed id, else None."""
    m = ID_RE.match(backup_id)
    if not m:
        return None
    try:
        at = dt.datetime.strptime(m["at"], ID_TIME).replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return at, int(m["rev"])


def retained(ids: Iterable[str], now: dt.datetime) -> set[str]:
    """The ids to keep: the newest backup of each UTC hour younger than a week, the
    newest of each UTC day younger than a year, and the newest backup of all (a cluster
    that was off for a year keeps its last one). Ids dated in the future (a skewed clock)
    are kept; ids that are not backup ids are not this function's business and are
    never in the result."""
    parsed = {i: p for i in ids if (p := parse_id(i)) is not None}
    if not parsed:
        return set()
    keep: set[str] = set()
    hourly: dict[dt.datetime, str] = {}
    daily: dict[dt.date, str] = {}
    order = sorted(parsed, key=lambda i: parsed[i])  # oldest first: later ones overwrite
    for i in order:
        at, _ = parsed[i]
        age = now - at
        if age < dt.timedelta(0):
            keep.add(i)
            continue
        if age < HOURLY_FOR:
            hourly[at.replace(minute=0)] = i
        if age < DAILY_FOR:
            daily[at.date()] = i
    keep.update(hourly.values(), daily.values())
    keep.add(order[-1])
    return keep


# -- taking a backup --------------------------------------------------------------------------


@dataclass(frozen=True)
class Backup:
    id: str
    cluster: str
    revision: int
    member: str  # hex member id
    endpoint: str
    size: int
    sha256: str
    etcd_version: str
    taken_at: str
    seconds: float = 0.0  # snapshot + upload
    created: bool = True  # False: a backup with this id was already there

    def meta(self) -> dict[str, object]:
        return {"bakery_backup": VERSION, "id": self.id, "cluster": self.cluster, "revision": self.revision,
                "member": self.member, "endpoint": self.endpoint, "size": self.size, "sha256": self.sha256,
                "etcd_version": self.etcd_version, "taken_at": self.taken_at}


def healthy_member(client: Client, endpoints: Sequence[str]) -> Status:
    """The status of the first endpoint whose member is healthy; EtcdError when none is."""
    down = []
    for ep in endpoints:
        if client.health(ep):
            try:
                return client.status(ep)
            except EtcdError as e:
                down.append(f"{ep} ({e})")
                continue
        down.append(ep)
    raise EtcdError(f"no healthy etcd member to take a snapshot through (tried {', '.join(down)})")


def take(client: Client, status: Status, store: Store, cluster: str, *, now: dt.datetime | None = None,
         workdir: str | Path | None = None) -> Backup:
    """Snapshot the member `status` describes and upload it; returns what was stored. The
    snapshot streams into a temporary file under `workdir` (default: the system's temp
    folder; a master passes its state folder, /tmp may be a small tmpfs)."""
    start = time.monotonic()
    now = now or dt.datetime.now(dt.UTC)
    backup_id = make_id(now, status.revision)
    with tempfile.TemporaryDirectory(prefix="bakery-backup-", dir=workdir) as tmp:
        path = client.snapshot(Path(tmp) / "snapshot.db", status.endpoint)
        data = path.read_bytes()
    if not data:
        raise EtcdError(f"{status.endpoint}: etcd maintenance/snapshot returned no bytes")
    b = Backup(backup_id, cluster, status.revision, f"{status.member_id:x}", status.endpoint, len(data),
               hashlib.sha256(data).hexdigest(), status.version, now.astimezone(dt.UTC).isoformat(timespec="seconds"))
    created = upload(store, b, data)
    return dataclasses.replace(b, seconds=time.monotonic() - start, created=created)


def upload(store: Store, b: Backup, data: bytes) -> bool:
    """Store the snapshot, its metadata, then its checksum (the backup is complete only
    then); False, and nothing written, when a backup with this id exists."""
    if not store.put_if_absent(layout.backup(b.cluster, b.id), data):
        return False
    store.put(layout.backup_meta(b.cluster, b.id), (json.dumps(b.meta(), indent=1, sort_keys=True) + "\n").encode())
    store.put(layout.backup_checksum(b.cluster, b.id), checksum_line(b.sha256, b.id))
    return True


def checksum_line(hexdigest: str, backup_id: str) -> bytes:
    return f"{hexdigest}  {backup_id}.db\n".encode()


# -- listing, checking, pruning ---------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    id: str
    complete: bool  # checksum object present
    meta: dict[str, object] | None  # None: no readable metadata of ours

    @property
    def ours(self) -> bool:
        return self.meta is not None and self.meta.get("bakery_backup") == VERSION and self.meta.get("id") == self.id


def list_backups(store: Store, cluster: str) -> list[Listed]:
    """Every backup id under the prefix (well-formed ids only), oldest first."""
    prefix = layout.backups_prefix(cluster)
    keys = set(store.list(prefix))
    ids = set()
    for key in keys:
        name = key[len(prefix):]
        for suffix in (".db.sha256", ".db", ".json"):
            if name.endswith(suffix) and parse_id(name[: -len(suffix)]) is not None:
                ids.add(name[: -len(suffix)])
                break
    out = []
    for i in sorted(ids, key=lambda i: parse_id(i) or (dt.datetime.min, 0)):
        meta = None
        if layout.backup_meta(cluster, i) in keys:
            try:
                doc = json.loads(store.get(layout.backup_meta(cluster, i)))
                meta = doc if isinstance(doc, dict) else None
            except (ValueError, UnicodeDecodeError, StoreNotFound):
                meta = None
        out.append(Listed(i, layout.backup_checksum(cluster, i) in keys, meta))
    return out


def fetch(store: Store, cluster: str, backup_id: str, dest: str | Path) -> Path:
    """Download backup `backup_id` into `dest` (0600) after checking its bytes against
    its checksum object; StoreError and nothing written when they do not match."""
    if parse_id(backup_id) is None:
        raise StoreError(f"backup id {backup_id!r:.80} is not of the form YYYYMMDDTHHMMZ-r<revision> (see `bakery backup list`)")
    where = f"{store.url}/{layout.backup(cluster, backup_id)}"
    try:
        line = store.get(layout.backup_checksum(cluster, backup_id)).decode("ascii", "replace")
    except StoreNotFound:
        raise StoreError(f"{where}: no checksum object beside it: the backup is missing or incomplete; nothing restored") from None
    want = line.split()[0] if line.split() else ""
    if not re.fullmatch(r"[0-9a-f]{64}", want):
        raise StoreError(f"{where}.sha256: not a sha256sum line; nothing restored")
    try:
        data = store.get(layout.backup(cluster, backup_id))
    except StoreNotFound:
        raise StoreError(f"{where}: missing (its checksum object is there); nothing restored") from None
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise StoreError(f"{where}: sha256 {got} does not match its checksum object ({want}): corrupted; nothing restored")
    return atomic_write(dest, data, 0o600)


def prune(store: Store, cluster: str, now: dt.datetime | None = None) -> list[str]:
    """Delete the complete backups of ours that `retained` does not keep; return their ids.
    Incomplete backups (an upload in progress, or one that died) and objects this module
    did not write are left alone."""
    now = now or dt.datetime.now(dt.UTC)
    listed = [b for b in list_backups(store, cluster) if b.complete and b.ours]
    keep = retained([b.id for b in listed], now)
    gone = []
    for b in listed:
        if b.id in keep:
            continue
        # the checksum first: a half-deleted backup is incomplete, never wrongly complete
        for key in (layout.backup_checksum(cluster, b.id), layout.backup(cluster, b.id), layout.backup_meta(cluster, b.id)):
            store.delete(key)
        gone.append(b.id)
    return gone
