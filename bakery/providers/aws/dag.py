"""Run named steps in dependency order, independent ones in parallel on a thread pool.

`up` and `down` are small graphs (VPC -> subnets -> load balancer -> render -> masters
-> targets); this runner starts every step whose dependencies are done, so wall time
approaches the longest chain of dependent calls rather than their sum. The first
failure stops new steps from starting; steps already running finish, then it is raised.
An `inline` step runs on the calling thread, like `on_done`: a step that writes files
the callbacks also write (the render callback records the LB in state.json) then never
races them. `trace` keeps each step's dependencies and timing for bench/up.py.

Steps wait (for an instance to run, a target to turn healthy) through `sleep`, which
ends at once with `Cancelled` when another step failed or the run was interrupted
(Ctrl-C), so a failed `up` stops in about one poll interval, not at the end of a wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

_local = threading.local()


def current() -> str | None:
    """Name of the step running on this thread (for per-step call accounting)."""
    return getattr(_local, "step", None)


class Cancelled(Exception):
    """Raised in a waiting step when another step failed or the run was interrupted."""


def sleep(seconds: float) -> None:
    """time.sleep for steps: ends early, with Cancelled, when the run is being stopped."""
    stop: threading.Event | None = getattr(_local, "stop", None)
    if stop is None:
        time.sleep(seconds)
    elif stop.wait(seconds):
        raise Cancelled("stopped: another step failed or the run was interrupted")


@dataclass(frozen=True)
class Step:
    name: str
    deps: tuple[str, ...]
    fn: Callable[[Mapping[str, Any]], Any]
    inline: bool = False


@dataclass
class Span:
    deps: tuple[str, ...]
    start: float
    end: float = 0.0


@dataclass
class Run:
    results: dict[str, Any] = field(default_factory=dict)
    trace: dict[str, Span] = field(default_factory=dict)


def run(steps: list[Step], *, workers: int = 8, on_done: Callable[[str, Any], None] | None = None) -> Run:
    """Run `steps`; each `fn` gets the results of all finished steps. Returns them all."""
    by_name = {s.name: s for s in steps}
    for s in steps:
        missing = [d for d in s.deps if d not in by_name]
        assert not missing, f"step {s.name} depends on unknown {missing}"
    out = Run()
    pending = dict(by_name)
    running: dict[Future[Any], str] = {}
    error: BaseException | None = None
    stop = threading.Event()

    def finish(name: str, result: Any) -> None:
        out.trace[name].end = time.monotonic()
        out.results[name] = result
        if on_done is not None:
            on_done(name, result)

    def call(step: Step) -> Any:
        _local.step, _local.stop = step.name, stop
        try:
            return step.fn(out.results)
        finally:
            _local.step, _local.stop = None, None

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bakery") as pool:
        try:
            while pending or running:
                if error is None:
                    ready = [pending.pop(n) for n, s in list(pending.items()) if all(d in out.results for d in s.deps)]
                    for step in sorted(ready, key=lambda s: s.inline):
                        out.trace[step.name] = Span(step.deps, time.monotonic())
                        if not step.inline:
                            running[pool.submit(call, step)] = step.name
                            continue
                        try:
                            finish(step.name, call(step))
                        except Exception as e:  # like a pool step: stop starting, end the others' waits
                            error = e
                            stop.set()
                            break
                    if ready and error is None and any(s.inline for s in ready):
                        continue  # an inline step may have made others ready
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    name = running.pop(fut)
                    exc = fut.exception()
                    if exc is not None:
                        out.trace[name].end = time.monotonic()
                        error = error or exc
                        stop.set()
                        continue
                    finish(name, fut.result())
        except BaseException:  # Ctrl-C: waiting steps end at their next poll; queued ones never start
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    if error is not None:
        raise error
    assert not pending, f"steps never became ready: {sorted(pending)}"
    return out
