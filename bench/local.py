"""Time from `up` to a healthy etcd on the local provider, split into boot, cloud-init
and etcd assembly, for the static and the discovery bootstrap. Prints figures; asserts
nothing.

    python bench/local.py [--image build/local/local/disk.qcow2] [--modes static,discovery]

The image defaults to the local one `make bake` recorded for examples/local.yaml
(build/local/images.json). One 3-VM cluster at a time; each is removed (down --purge)
before the next starts.

Phases, per node from QEMU's start on the guest's own clock: boot = until cloud-init's
first stage (kernel, initrd, systemd; the console's "Up N seconds"); cloud-init = from
there until the etcd unit starts (systemd's timestamp, read over ssh after `up`); etcd
assembly = from the last member starting until etcd answers through HAProxy with every
member (host clock; `up` polls every second).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

from bakery.bake import images
from bakery.pipeline import Cluster
from bakery.providers.local.net import listening_ports
from bakery.providers.local.provider import LocalProvider

ETCD_UNITS = ("etcd.service", "bakery-etcd.service")  # whichever the rendering uses


class Recorder:
    """A Progress that keeps the first time each (step, status) was reported."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.first: dict[tuple[str, str], float] = {}

    def __call__(self, step: str, status: str, detail: str = "") -> None:
        self.first.setdefault((step, status), time.monotonic() - self.t0)


def _free_base() -> int:
    taken = {p for _, p in listening_ports()}
    for base in range(26000, 60000, 100):
        if not taken & set(range(base, base + 60)):
            return base
    raise SystemExit("no free port range on 127.0.0.1")


def _guest_times(provider: LocalProvider, node: str) -> tuple[float, float]:
    """Seconds after the guest kernel started: cloud-init's first stage (from the console's
    "Up N seconds") and etcd's unit leaving the inactive state (systemd, over ssh)."""
    m = re.search(rb"running 'init-local' at .*? Up ([0-9.]+) seconds", provider.console_log(node).read_bytes())
    init_local = float(m[1]) if m else float("nan")
    r = provider.ssh_run(node, ["systemctl", "show", *ETCD_UNITS, "-p", "InactiveExitTimestampMonotonic", "--value"], timeout=300)
    starts = [int(v) for v in r.stdout.split() if v.isdigit() and int(v) > 0]
    return init_local, (min(starts) / 1e6 if starts else float("nan"))


def run(mode: str, image: Path, workdir: Path) -> dict[str, float]:
    spec_file = workdir / f"{mode}.yaml"
    spec_file.write_text(
        f"name: bench-{mode}\nprovider: local\nelection: podmaster\nruntime: systemd\n"
        f"etcd: {{bootstrap: {mode}}}\nlocal: {{port_base: {_free_base()}, image: '{image}'}}\n"
    )
    cluster = Cluster.load(spec_file, workdir / "build")
    rec = Recorder()
    provider = LocalProvider(cluster.spec, cluster.paths, rec)
    nodes = [n.name for n in provider.net.nodes]
    try:
        provider.up(cluster.render_callback(), wait=True)
        guest = {n: _guest_times(provider, n) for n in nodes}
    finally:
        provider.down(purge=True)
    healthy = rec.first[("etcd", "healthy")]
    started = {n: rec.first[(f"master {n}", "booting")] for n in nodes}
    print(f"\n{mode}: etcd healthy through the LB {healthy:.0f} s after `up` started")
    print(f"  {'node':<28} {'boot':>6} {'cloud-init':>11} {'etcd started at':>16} {'healthy seen at':>16}")
    etcd_at = {}
    for n in nodes:
        init_local, etcd_start = guest[n]
        etcd_at[n] = started[n] + etcd_start
        seen = rec.first.get((f"master {n}", "etcd member"), healthy)
        print(f"  {n:<28} {init_local:>5.0f}s {etcd_start - init_local:>10.0f}s {etcd_at[n]:>15.0f}s {seen:>15.0f}s")
    split = {
        "setup": min(started.values()),
        "boot": max(guest[n][0] for n in nodes),
        "cloud-init": max(guest[n][1] - guest[n][0] for n in nodes),
        "etcd assembly": healthy - max(etcd_at.values()),
        "total": healthy,
    }
    print("  slowest node per phase: " + ", ".join(f"{k} {v:.0f}s" for k, v in split.items()))
    return split


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", help="qcow2 with vmlinuz and initrd.img beside it (default: build/local/images.json)")
    ap.add_argument("--modes", default="static,discovery")
    args = ap.parse_args()
    if args.image:
        image = Path(args.image).resolve()
    else:
        rec = images.current(Path("build/local/images.json"), "local", "local")
        if rec is None:
            print("bench/local.py: no local image; run `make bake` or pass --image", file=sys.stderr)
            return 0
        image = Path(rec["disk"])
    results = {}
    with tempfile.TemporaryDirectory(prefix="bakery-bench-local-") as tmp:
        for mode in args.modes.split(","):
            results[mode] = run(mode, image, Path(tmp))
    print("\nlocal provider, up -> healthy etcd (3 VMs):")
    for mode, split in results.items():
        print(f"  {mode:<10} " + "  ".join(f"{k} {v:5.0f}s" for k, v in split.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
