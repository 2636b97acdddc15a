"""The nightly rebuild, as one job: bake the image only when its inputs changed, roll the
masters onto it only when it did, and leave a JSON report of what happened and how long
each part took in build/<cluster>/nightly-<UTC time>.json (also when a step failed: the
report says which, and the error is raised after it is written).

    report = nightly.run(paths, bake=lambda: bake.bake(...), rollout=lambda: rollout.rollout(...))

`bake` returns the bake's TargetResults (status "built" or "unchanged"); `rollout`
returns the masters it replaced (rollout.Replaced); `drift` what the provider noted.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bakery.errors import BakeryError
from bakery.output import atomic_write_json
from bakery.state import ClusterPaths

REPORT_VERSION = 1


def report_path(paths: ClusterPaths, started: dt.datetime) -> Path:
    return paths.base / f"nightly-{started.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}.json"


def run(paths: ClusterPaths, *, bake: Callable[[], Sequence[Any]], rollout: Callable[[], Sequence[Any]],
        drift: Callable[[], Sequence[str]] = list, now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> dict[str, Any]:
    """Bake, then roll out if an image was built; returns the report (written to report_path)."""
    started = now()
    t0 = time.monotonic()
    report: dict[str, Any] = {"nightly_report": REPORT_VERSION, "cluster": paths.cluster,
                              "started_at": started.isoformat(timespec="seconds"), "ok": False}
    failure: BaseException | None = None
    try:
        t = time.monotonic()
        results = bake()
        report["bake"] = {"seconds": round(time.monotonic() - t, 3),
                          "images": [{"target": r.target, "name": r.name, "status": r.status} for r in results]}
        changed = [r.name for r in results if r.status == "built"]
        report["image_changed"] = bool(changed)
        if changed:
            t = time.monotonic()
            replaced = rollout()
            report["rollout"] = {"ran": True, "seconds": round(time.monotonic() - t, 3), "replaced": [
                {"node": r.node, "old_member": f"{r.old_member:x}", "new_member": f"{r.new_member:x}",
                 "seconds": round(r.seconds, 3), "replacement": r.replacement or r.node} for r in replaced]}
        else:
            report["rollout"] = {"ran": False, "reason": "the image's inputs did not change", "replaced": []}
        report["ok"] = True
    except (BakeryError, KeyboardInterrupt) as e:
        failure = e
        step = "rollout" if "bake" in report else "bake"
        report["failed"] = {"step": step, "error": e.lines()[0] if isinstance(e, BakeryError) else "interrupted"}
    report["drift"] = list(drift())
    report["seconds"] = round(time.monotonic() - t0, 3)
    report["finished_at"] = now().isoformat(timespec="seconds")
    report["report"] = str(report_path(paths, started))
    atomic_write_json(report_path(paths, started), report)
    if failure is not None:
        raise failure
    return report
