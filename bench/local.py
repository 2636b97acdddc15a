"""Time from `up` to a usable Kubernetes API on the local provider, for the container runtime
(systemd-nspawn, the default) and the vm runtime (QEMU) side by side, split into phases,
with their ratio. Prints figures; asserts nothing.

    python bench/local.py [--image build/local/images/<name>/disk.qcow2] [--runtimes container,vm] [--modes static]

The image defaults to the local one `make bake` recorded for examples/local.yaml
(build/local/images.json): its qcow2 for the VMs, its root/ for the containers. One
3-master cluster at a time; each is removed (down --purge) before the next starts.

Phases per node, on the host's clock as `up` reports them (it polls every 0.5 s for
containers, 1 s for VMs: that is the resolution):
  setup       `up` start -> the first master started (PKI, render, LB, network)
  boot        master started -> cloud-init's first stage seen on its console
  cloud-init  -> its etcd member answers healthy (files written, etcd started)
  assembly    the last member healthy -> etcd healthy through HAProxy with every member
  api         etcd healthy -> every master's kube-apiserver answers /readyz
  rbac        -> the admin kubeconfig is authorized through the LB (a master's
              bakery-node-register applied bakery's RBAC addon, on its timer)
  total       `up` start -> the API usable through the LB (what `up` waits for)
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import tempfile
import time
from pathlib import Path

from bakery.bake import images
from bakery.pipeline import Cluster
from bakery.providers.local import bridge
from bakery.providers.local.net import free_port_base
from bakery.providers.local.provider import LocalProvider

PHASES = ("setup", "boot", "cloud-init", "assembly", "api", "rbac", "total")


class Recorder:
    """A Progress that keeps the first time each (step, status) was reported."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.first: dict[tuple[str, str], float] = {}

    def __call__(self, step: str, status: str, detail: str = "") -> None:
        self.first.setdefault((step, status), time.monotonic() - self.t0)

    def first_of(self, step: str, prefix: str) -> float | None:
        times = [t for (s, st), t in self.first.items() if s == step and st.startswith(prefix)]
        return min(times) if times else None


def _free_base() -> int:
    base = free_port_base(27000)
    if base is None:
        raise SystemExit("no free port range on 127.0.0.1")
    return base


def _free_subnet() -> str:
    """A /24 no route of this host overlaps (the containers' bridge gets it)."""
    used = [ipaddress.IPv4Network(str(r["dst"]), strict=False) for r in bridge.routes() if r.get("dst") not in (None, "default")]
    for third in range(0, 256, 11):
        net = ipaddress.IPv4Network(f"10.253.{third}.0/24")
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise SystemExit("no free subnet in 10.253.0.0/16")


def run(runtime: str, mode: str, image: Path, workdir: Path) -> dict[str, float]:
    spec_file = workdir / f"{runtime}-{mode}.yaml"
    spec_file.write_text(
        f"name: bench-{runtime[:2]}-{mode}\nprovider: local\nelection: podmaster\nruntime: systemd\n"
        # QEMU guests cannot reach the folder store: they boot embedded user-data (the spec refuses otherwise)
        + ("user_data: embedded\n" if runtime == "vm" else "")
        + f"network: {{subnet: {_free_subnet()}}}\netcd: {{bootstrap: {mode}}}\n"
        f"local: {{runtime: {runtime}, port_base: {_free_base()}, image: '{image}'}}\n"
    )
    cluster = Cluster.load(spec_file, workdir / "build")
    rec = Recorder()
    provider = LocalProvider(cluster.spec, cluster.paths, rec)
    nodes = [n.name for n in provider.net.nodes]
    try:
        provider.up(cluster.render_callback(), wait=True)
    finally:
        provider.down(purge=True)
    healthy = rec.first[("etcd", "healthy")]
    api_ready = max(rec.first[(f"master {n}", "API server")] for n in nodes)
    usable = rec.first[("API", "ready")]
    started = {n: rec.first[(f"master {n}", "booting")] for n in nodes}
    first_stage = {n: rec.first_of(f"master {n}", "cloud-init") or started[n] for n in nodes}
    member = {n: rec.first.get((f"master {n}", "etcd member"), healthy) for n in nodes}
    print(f"\n{runtime} / {mode}: etcd healthy through the LB {healthy:.1f} s after `up` started, "
          f"the API usable as the admin {usable:.1f} s")
    print(f"  {'node':<26} {'started':>8} {'boot':>7} {'cloud-init':>11} {'member healthy':>15}")
    for n in nodes:
        print(f"  {n:<26} {started[n]:>7.1f}s {first_stage[n] - started[n]:>6.1f}s "
              f"{member[n] - first_stage[n]:>10.1f}s {member[n]:>14.1f}s")
    return {
        "setup": min(started.values()),
        "boot": max(first_stage[n] - started[n] for n in nodes),
        "cloud-init": max(member[n] - first_stage[n] for n in nodes),
        "assembly": max(0.0, healthy - max(member.values())),
        "api": max(0.0, api_ready - healthy),
        "rbac": max(0.0, usable - api_ready),
        "total": usable,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", help="qcow2 with vmlinuz, initrd.img and root/ beside it (default: build/local/images.json)")
    ap.add_argument("--runtimes", default="container,vm")
    ap.add_argument("--modes", default="static")
    args = ap.parse_args()
    if args.image:
        image = Path(args.image).resolve()
    else:
        rec = images.current(Path("build/local/images.json"), "local", "local")
        if rec is None:
            print("bench/local.py: no local image; run `make bake` or pass --image", file=sys.stderr)
            return 0
        image = Path(rec["disk"])
    results: dict[tuple[str, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bakery-bench-local-") as tmp:
        for mode in args.modes.split(","):
            for runtime in args.runtimes.split(","):
                results[(runtime, mode)] = run(runtime, mode, image, Path(tmp))
    print("\nlocal provider, up -> the API usable through the LB (3 masters), slowest node per phase:")
    print(f"  {'runtime':<10} {'mode':<10} " + " ".join(f"{p:>11}" for p in PHASES))
    for (runtime, mode), split in results.items():
        print(f"  {runtime:<10} {mode:<10} " + " ".join(f"{split[p]:>10.1f}s" for p in PHASES))
    for mode in args.modes.split(","):
        c, v = results.get(("container", mode)), results.get(("vm", mode))
        if c and v:
            print(f"  {mode}: vm / container = {v['total'] / c['total']:.1f}x "
                  f"({v['total']:.1f} s vs {c['total']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
