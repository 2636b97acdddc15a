"""`up` against local cloud fakes with an injected per-call latency: wall time, number of
API calls, and the critical-path floor (the longest chain of dependent calls x latency).

One entry per provider in PROVIDERS; each runs a fresh `up` for 3 and 7 masters and
returns Figures. Prints a table; asserts nothing (TESTING.md: no timing assertions).

    .venv/bin/python bench/up.py [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Figures:
    wall: float  # seconds, the whole `up` (parallel steps), best of REPEAT
    calls: int  # API calls made
    floor: float  # seconds: longest chain of dependent calls x latency
    wall0: float  # seconds, the same `up` with no injected latency: the fake's and the client's own time
    sequential: float  # seconds, the same `up` with one worker (no parallelism)


REPEAT = 3


def critical_path(trace: dict, calls_per_step: dict[str, int]) -> int:
    """Calls on the longest dependency chain of a step graph (dag.Run.trace)."""
    memo: dict[str, int] = {}

    def chain(step: str) -> int:
        if step not in memo:
            memo[step] = calls_per_step.get(step, 0) + max((chain(d) for d in trace[step].deps), default=0)
        return memo[step]

    return max((chain(s) for s in trace), default=0) + calls_per_step.get(None, 0)  # type: ignore[arg-type]


# -- AWS: moto's server on 127.0.0.1, latency through a botocore before-send hook ------


def aws(masters: int, latency: float) -> Figures:
    from bakery import state
    from bakery.providers.aws import create
    from tests.moto_server import Calls, fixed_render, make_spec, record_ami, server_process

    with server_process() as moto:
        spec = make_spec("bench", masters)

        def once(workers: int, delay: float) -> tuple[float, Calls, dict]:
            moto.reset()
            with tempfile.TemporaryDirectory() as tmp:
                paths = state.paths(spec.name, tmp)
                paths.base.mkdir(parents=True)
                record_ami(paths, moto.register_ami())
                calls = Calls(latency=delay)
                provider = create(spec, paths, lambda *a: None, client_factory=moto.factory(calls),
                                  poll_interval=max(delay, 0.01), workers=workers)
                provider.clients("ec2"), provider.clients("elbv2")  # client creation is not an API call
                start_t = time.monotonic()
                provider.up(fixed_render(spec))
                return time.monotonic() - start_t, calls, provider.trace

        wall, calls, trace = min((once(16, latency) for _ in range(REPEAT)), key=lambda r: r[0])
        wall0 = min(once(16, 0.0)[0] for _ in range(REPEAT))
        per_step: dict[str | None, int] = {}
        for _, _, step in calls.log:
            per_step[step] = per_step.get(step, 0) + 1
        floor = critical_path(trace, per_step) * latency  # type: ignore[arg-type]
        return Figures(wall, len(calls.log), floor, wall0, once(1, latency)[0])


PROVIDERS: list[tuple[str, Callable[[int, float], Figures]]] = [
    ("aws (moto)", aws),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--masters", type=int, nargs="+", default=[3, 7])
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    print(f"bakery up, fresh cluster, {args.latency_ms:.0f} ms injected per API call")
    header = (f"{'provider':<12} {'masters':>7} {'calls':>6} {'floor s':>8} {'wall s':>7} {'wall@0ms s':>10} "
              f"{'wall-wall@0':>11} {'1 worker s':>10}")
    print(header)
    print("-" * len(header))
    for name, run in PROVIDERS:
        for masters in args.masters:
            f = run(masters, latency)
            print(f"{name:<12} {masters:>7} {f.calls:>6} {f.floor:>8.2f} {f.wall:>7.2f} {f.wall0:>10.2f} "
                  f"{f.wall - f.wall0:>11.2f} {f.sequential:>10.2f}")
    print("floor: longest chain of dependent calls x latency. wall@0ms: the same up with no injected latency\n"
          "(the fake server's and botocore's own time); wall-wall@0 is what the latency cost, to compare with\n"
          f"the floor. 1 worker: the same up with no parallel steps. Best of {REPEAT} runs each.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
