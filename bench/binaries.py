"""Obtaining the real etcd and Kubernetes programs: cached, and built cold, side by side.
Prints figures; asserts nothing.

    python bench/binaries.py [--cold etcd|kubernetes|all] [--releases 1.37.2,...]

cached  `components.obtain` of all eight programs of each supported minor's pinned release
        from this machine's cache (~/.cache/bakery): a lock and one checksum per program
cold    (with --cold) the same obtain into an empty cache folder with an empty Go build
        cache (GOCACHE) but the machine's module cache (GOMODCACHE): what a CI machine with
        the modules downloaded pays, compile and link only. Minutes per Kubernetes release on
        2 cores; nothing of the machine's own cache is touched.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bakery import components, versions  # noqa: E402


def timed(what: list[str], k8s: str, etcd: str, root: Path | None = None) -> float:
    t0 = time.monotonic()
    components.obtain(what, k8s, etcd, root=root, progress=lambda line: print(f"    {line}", file=sys.stderr))
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cold", choices=("etcd", "kubernetes", "all"), help="also build cold, in a scratch cache")
    ap.add_argument("--releases", default=",".join(versions.KUBERNETES[m][-1] for m in versions.SUPPORTED_MINORS))
    args = ap.parse_args()
    rows = []
    for k8s in args.releases.split(","):
        etcd = versions.default_etcd(k8s)
        missing = [c for c, p in components.cached(components.ALL, k8s, etcd).items() if p is None]
        if missing:
            print(f"bench/binaries.py: {k8s} not cached ({', '.join(missing)}): run `bakery binaries --supported` first",
                  file=sys.stderr)
            continue
        row = {"release": f"{k8s} / etcd {etcd}", "cached": timed(list(components.ALL), k8s, etcd)}
        if args.cold:
            with tempfile.TemporaryDirectory(prefix="bakery-bench-binaries-") as tmp:
                os.environ["GOCACHE"] = str(Path(tmp) / "gocache")
                try:
                    for project, what in (("etcd", components.ETCD), ("kubernetes", components.KUBERNETES)):
                        if args.cold in (project, "all"):
                            row[f"cold {project}"] = timed(list(what), k8s, etcd, root=Path(tmp) / "cache")
                finally:
                    os.environ.pop("GOCACHE")
        rows.append(row)
    print("\nobtaining the binaries (seconds)")
    cols = ["cached", "cold etcd", "cold kubernetes"]
    print(f"  {'release':<24} " + " ".join(f"{c:>16}" for c in cols))
    for r in rows:
        print(f"  {r['release']:<24} " + " ".join(f"{r[c]:>16.2f}" if c in r else f"{'-':>16}" for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
