"""`bakery up` against local stand-ins for the clouds, with a per-call latency injected.

Prints, per provider entry, for 3 and 7 masters: the wall time of a fresh `up`, a second
`up` (no change) and `down`; the number of API calls; and the critical-path floor
(the longest chain of dependent calls x the latency), side by side. The floor is what
perfect parallelism would cost; wall time above it is bakery's own overhead.

Each provider is one entry in ENTRIES: a function (masters, latency) -> rows.

    .venv/bin/python bench/up.py [--latency 0.05] [--only gcp]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

Row = tuple[str, int, str, float, int, int, float]  # provider, masters, run, wall s, calls, chain, floor s


def bench_gcp(masters: int, latency: float) -> list[Row]:
    """google-cloud-compute against tests/fake_gce.py; the fake sleeps `latency` per request."""
    from bakery import spec as specmod
    from bakery import state
    from bakery.providers.base import LBAddress, RenderedNode
    from bakery.providers.gcp import GcpProvider
    from bakery.render.userdata import encode
    from bakery.topology import plan
    from tests.fake_gce import FakeGCE

    rows: list[Row] = []
    with FakeGCE(project="bench", latency=latency).running() as gce, tempfile.TemporaryDirectory() as tmp:
        gce.add_image("bench-image")
        spec = specmod.parse(
            f"name: bench\nprovider: gcp\nmasters: {masters}\n"
            f"gcp:\n  project: bench\n  image: bench-image\n  endpoint_url: {gce.url}\n"
        )

        def render(lb: LBAddress) -> dict[str, RenderedNode]:
            return {n.name: RenderedNode(n.name, n.address, n.zone, encode(f"#cloud-config\nhostname: {n.name}\n".encode(), "gcp"))
                    for n in plan(spec, lb_ips=lb.ips).nodes}

        provider = GcpProvider(spec, state.paths("bench", tmp))
        runs: list[tuple[str, Callable[[], object]]] = [
            ("fresh up", lambda: provider.up(render)),
            ("second up", lambda: provider.up(render)),
            ("down", provider.down),
        ]
        for label, run in runs:
            before = len(gce.calls)
            start = time.perf_counter()
            run()
            wall = time.perf_counter() - start
            chain = sum(calls for _, calls in provider.trace)
            rows.append(("gcp", masters, label, wall, len(gce.calls) - before, chain, chain * latency))
    return rows


ENTRIES: dict[str, Callable[[int, float], list[Row]]] = {
    "gcp": bench_gcp,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds added to every API call (default 0.05)")
    ap.add_argument("--only", choices=sorted(ENTRIES), action="append")
    args = ap.parse_args()
    print(f"bakery up/down against local cloud stand-ins, {args.latency * 1000:.0f} ms injected per API call\n")
    header = ("PROVIDER", "MASTERS", "RUN", "WALL s", "API CALLS", "CHAIN", "FLOOR s", "WALL/FLOOR")
    rows = []
    for name in args.only or sorted(ENTRIES):
        for masters in (3, 7):
            for p, m, run, wall, calls, chain, floor in ENTRIES[name](masters, args.latency):
                rows.append((p, m, run, f"{wall:.2f}", calls, chain, f"{floor:.2f}", f"{wall / floor:.2f}" if floor else "-"))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print("\nCHAIN: the longest chain of dependent API calls (sum over up's waves of the busiest task's calls);"
          "\nFLOOR = CHAIN x latency: the wall time of perfect parallelism.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
