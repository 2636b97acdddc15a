"""Prints how long `bakery bake --if-changed` takes when nothing changed, next to a real
build of the same image (the local QEMU image by default: debootstrap + mkfs + qcow2).

    .venv/bin/python bench/bake.py                     # real local image (~2 min here)
    .venv/bin/python bench/bake.py --templates tests/fixtures/packer/mini   # the small stand-in
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bakery import cli


def timed(argv: list[str]) -> float:
    start = time.monotonic()
    rc = cli.main(argv)
    if rc != 0:
        raise SystemExit(f"bakery {' '.join(argv)} exited {rc}")
    return time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--templates", help="Packer templates (default: bakery's packer/)")
    ap.add_argument("--no-ops", type=int, default=5, help="how many --if-changed no-ops to time (default: %(default)s)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bakery-bench-") as tmp:
        spec = Path(tmp) / "cluster.yaml"
        spec.write_text('name: bench\nprovider: local\nkubernetes_version: "1.31.4"\n')
        base = ["bake", "-f", str(spec), "-o", str(Path(tmp) / "build")]
        if args.templates:
            base += ["--templates", args.templates]
        build = timed(base)
        noops = sorted(timed([*base, "--if-changed"]) for _ in range(args.no_ops))
        rec = json.loads((Path(tmp) / "build" / "bench" / "images.json").read_text())["local"]
        disk = Path(rec["disk"]).stat().st_size
    print()
    print(f"templates: {args.templates or 'packer/ (real local image)'}")
    print(f"real build          {build:8.2f} s   image {rec['name']}, qcow2 {disk / 2**20:,.0f} MiB")
    print(f"--if-changed no-op  {noops[len(noops) // 2]:8.2f} s   median of {len(noops)} (min {noops[0]:.2f} s, max {noops[-1]:.2f} s)")
    print(f"speed-up            {build / noops[len(noops) // 2]:8.0f} x")


if __name__ == "__main__":
    main()
