"""Backups: ids, kops' retention (pure), the store objects a backup is made of, prune's
limits (never an object this code did not write), a real snapshot from etcd 3.5, and the
scheduled backup's systemd units (rendered, and checked by systemd-analyze)."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from bakery import backup, discovery, pki, render, spec, topology
from bakery.errors import EtcdError, StoreError
from bakery.render.builders import BACKUP_UNITS, NodeContext, backup_timer
from bakery.store import layout
from bakery.store.folder import FolderStore
from tests.conftest import REPO, need

UTC = dt.UTC
NOW = dt.datetime(2026, 12, 1, 23, 30, tzinfo=UTC)


def at(**ago: float) -> dt.datetime:
    return NOW - dt.timedelta(**ago)


def bid(when: dt.datetime, rev: int = 1) -> str:
    return backup.make_id(when, rev)


# -- ids -----------------------------------------------------------------------------------


def test_ids_are_utc_minute_and_revision() -> None:
    local = dt.datetime(2026, 12, 2, 0, 0, 59, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert backup.make_id(local, 12345) == "20261201T2300Z-r12345"
    assert backup.parse_id("20261201T2300Z-r12345") == (dt.datetime(2026, 12, 1, 23, 0, tzinfo=UTC), 12345)
    for bad in ("20261301T2300Z-r1", "20261201T2300Z", "20261201T2300Z-r", "x20261201T2300Z-r1", "20261201T2300Z-r1.db", ""):
        assert backup.parse_id(bad) is None, bad


# -- retention (pure) ------------------------------------------------------------------------


def test_retention_keeps_the_newest_per_hour_for_a_week() -> None:
    # every 15 minutes for the last 3 hours: one per hour survives, the newest of each
    ids = [bid(at(minutes=m), m) for m in range(0, 180, 15)]
    keep = backup.retained(ids, NOW)
    assert keep == {bid(at(minutes=0), 0), bid(at(minutes=45), 45), bid(at(minutes=105), 105), bid(at(minutes=165), 165)}


def test_retention_keeps_the_newest_per_day_for_a_year_and_nothing_older() -> None:
    hourly = [bid(at(days=d, hours=h), d * 100 + h) for d in range(8, 12) for h in range(0, 24, 6)]
    old = [bid(at(days=366)), bid(at(days=500))]
    keep = backup.retained([*hourly, *old, bid(NOW, 9999)], NOW)
    days = {}
    for i in hourly:
        when, _ = backup.parse_id(i)
        if when.date() not in days or backup.parse_id(days[when.date()])[0] < when:
            days[when.date()] = i
    assert keep == set(days.values()) | {bid(NOW, 9999)}
    assert not keep & set(old)


def test_retention_at_the_edges() -> None:
    week = bid(at(days=7, minutes=1), 1)  # older than a week: only its day counts
    same_day = bid(at(days=7, minutes=2), 2)
    assert backup.retained([week, same_day], NOW) == {week}  # newest of that day
    future = bid(NOW + dt.timedelta(hours=2), 3)  # a skewed clock: kept, never guessed away
    assert future in backup.retained([future, bid(at(minutes=1))], NOW)
    # a cluster that was off for years keeps its newest backup
    ancient = [bid(at(days=900), 1), bid(at(days=800), 2)]
    assert backup.retained(ancient, NOW) == {ancient[1]}
    assert backup.retained(["not-a-backup", "20261201T2300Z"], NOW) == set()
    assert backup.retained([], NOW) == set()


def test_retention_keeps_at_most_168_hourly_plus_365_daily() -> None:
    ids = [bid(at(hours=h), h) for h in range(0, 24 * 400)]
    keep = backup.retained(ids, NOW)
    assert len(keep) <= 168 + 365
    assert all(now_age < dt.timedelta(days=365) for now_age in (NOW - backup.parse_id(i)[0] for i in keep))


# -- store objects, fetch, prune ----------------------------------------------------------------


def fake_backup(store: FolderStore, when: dt.datetime, rev: int, data: bytes = b"snapshot") -> backup.Backup:
    b = backup.Backup(backup.make_id(when, rev), "lo", rev, "abc", "https://127.0.0.1:2379", len(data),
                      hashlib.sha256(data).hexdigest(), "3.5.1", when.isoformat())
    assert backup.upload(store, b, data)
    return b


def test_a_backup_is_three_objects_and_a_second_upload_of_its_id_writes_nothing(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "s")
    b = fake_backup(store, NOW, 7, b"one")
    assert store.list("lo/backups/") == sorted([layout.backup("lo", b.id), layout.backup_checksum("lo", b.id), layout.backup_meta("lo", b.id)])
    assert store.get(layout.backup_checksum("lo", b.id)) == f"{hashlib.sha256(b'one').hexdigest()}  {b.id}.db\n".encode()
    assert not backup.upload(store, b, b"two")
    assert store.get(layout.backup("lo", b.id)) == b"one"
    (listed,) = backup.list_backups(store, "lo")
    assert listed.complete and listed.ours and listed.meta["revision"] == 7


def test_fetch_checks_the_checksum_before_writing(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "s")
    b = fake_backup(store, NOW, 7, b"good bytes")
    assert backup.fetch(store, "lo", b.id, tmp_path / "out.db").read_bytes() == b"good bytes"
    assert (tmp_path / "out.db").stat().st_mode & 0o777 == 0o600
    store.put(layout.backup("lo", b.id), b"evil bytes")
    with pytest.raises(StoreError, match="does not match its checksum object"):
        backup.fetch(store, "lo", b.id, tmp_path / "bad.db")
    assert not (tmp_path / "bad.db").exists()
    store.delete(layout.backup_checksum("lo", b.id))
    with pytest.raises(StoreError, match="missing or incomplete"):
        backup.fetch(store, "lo", b.id, tmp_path / "bad.db")
    with pytest.raises(StoreError, match="is not of the form"):
        backup.fetch(store, "lo", "../../etc/passwd", tmp_path / "bad.db")


def test_prune_deletes_only_complete_backups_of_ours_that_retention_drops(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "s")
    kept = fake_backup(store, at(minutes=5), 100)
    dropped = fake_backup(store, at(minutes=20), 90)  # same hour, older: retention drops it
    foreign = backup.make_id(at(minutes=25), 80)  # a well-formed id that someone else wrote
    store.put(layout.backup("lo", foreign), b"theirs")
    store.put(layout.backup_checksum("lo", foreign), backup.checksum_line(hashlib.sha256(b"theirs").hexdigest(), foreign))
    uploading = backup.make_id(at(minutes=30), 70)  # no checksum yet: an upload in progress
    store.put(layout.backup("lo", uploading), b"half")
    store.put("lo/backups/notes.txt", b"operator's notes")
    store.put("lo/backups/20261201T2300Z-r1.db.old", b"a copy someone made")
    assert backup.prune(store, "lo", now=NOW) == [dropped.id]
    left = set(store.list("lo/"))
    assert not {k for k in left if dropped.id in k}
    assert {layout.backup("lo", kept.id), layout.backup("lo", foreign), layout.backup("lo", uploading),
            "lo/backups/notes.txt", "lo/backups/20261201T2300Z-r1.db.old"} <= left
    assert backup.prune(store, "lo", now=NOW) == []


def test_store_url_defaults_to_the_clusters_folder_store(tmp_path: Path) -> None:
    lo = spec.parse("name: lo\nprovider: local\n")
    assert backup.store_url(lo, tmp_path / "build") == f"file://{tmp_path}/build/lo/store"
    assert backup.store_url(lo, tmp_path / "build", "s3://elsewhere/p") == "s3://elsewhere/p"


# -- a real snapshot ------------------------------------------------------------------------------


def test_take_snapshots_a_real_member_and_names_it_by_revision(etcd, tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "s")
    for i in range(20):
        etcd.client.put(f"/snap/{i}", "x" * 100)
    status = backup.healthy_member(etcd.client, ["https://127.0.0.1:1", etcd.url])
    b = backup.take(etcd.client, status, store, "lo", now=NOW)
    assert b.created and b.id == f"20261201T2330Z-r{status.revision}" and status.revision >= 20
    data = store.get(layout.backup("lo", b.id))
    assert len(data) == b.size > 20 * 100 and hashlib.sha256(data).hexdigest() == b.sha256
    assert b.etcd_version.startswith("3.5") and b.member == f"{status.member_id:x}"
    with pytest.raises(EtcdError, match="no healthy etcd member"):
        backup.healthy_member(etcd.client, ["https://127.0.0.1:1"])


# -- the scheduled backup's units ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> NodeContext:
    s = spec.load(REPO / "examples" / "aws.yaml")
    plan = topology.plan(s)
    keys = pki.ensure(plan, tmp_path_factory.mktemp("pki"))
    return NodeContext(plan, plan.nodes[0], keys, discovery.bootstrap_for(s))


def test_backup_timer_is_hourly_with_a_random_delay_and_runs_bakery_node_backup(ctx: NodeContext) -> None:
    files = {f.path: f for f in backup_timer(ctx)}
    assert set(files) == set(BACKUP_UNITS)
    service = files["/etc/systemd/system/bakery-backup.service"].content.decode()
    timer = files["/etc/systemd/system/bakery-backup.timer"].content.decode()
    assert "ExecStart=/usr/local/bin/bakery-node backup\n" in service and "Type=oneshot" in service
    assert "ConditionPathExists=/etc/bakery/node.json" in service
    assert "OnCalendar=hourly\n" in timer and "RandomizedDelaySec=15min\n" in timer and "WantedBy=timers.target" in timer
    assert all(f.mode == 0o644 for f in files.values())
    # every master gets them, and its start commands enable the timer
    names = [f.path for f in render.node_files(ctx.plan, ctx.node, ctx.pki, ctx.bootstrap)]
    assert set(BACKUP_UNITS) <= set(names)
    assert any("bakery-backup.timer" in argv for argv in render.start_commands(ctx.plan))


def test_backup_units_pass_systemd_analyze_verify(ctx: NodeContext, tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    need("systemd-analyze (Debian systemd)", tool is not None, "apt-get install systemd")
    assert tool is not None
    root = tmp_path / "root"
    for f in backup_timer(ctx):
        dest = root / f.path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f.content)
    # the ExecStart binary must exist under the root for verify to accept it
    exe = root / "usr/local/bin/bakery-node"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    units = [str(root / p.lstrip("/")) for p in BACKUP_UNITS]
    r = subprocess.run([tool, "verify", "--man=no", "--generators=no", "--recursive-errors=no", f"--root={root}", *units],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    # the check can fail: a misspelt directive is reported
    bad = root / "etc/systemd/system/bakery-backup.timer"
    bad.write_text(bad.read_text().replace("OnCalendar=", "OnCalender="))
    r = subprocess.run([tool, "verify", "--man=no", "--generators=no", "--recursive-errors=no", f"--root={root}", str(bad)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert "OnCalender" in r.stdout + r.stderr
