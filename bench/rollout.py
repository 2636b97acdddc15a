"""Replacing masters on the local container runtime, the two ways side by side: masters
as cattle (user_data: store; the supervisor heals with a new master at a new address,
`bakery rollout` surges, bakery/surge.py) and masters in fixed slots (user_data:
embedded; heal and rollout in the same slot, bakery/rollout.py). Prints figures; asserts
nothing.

    python bench/rollout.py [--image build/local/images/<name>/disk.qcow2] [--ways store,embedded]

Per way, one 3-master cluster (removed with down --purge afterwards):
  up        `up` start -> etcd healthy through HAProxy with every member
  heal      SIGKILL of one container's init -> every master of the group running, a
            started voter, healthy (the supervisor's work, polled every 0.5 s)
  rollout   every master replaced onto the current image (followers first, leader
            last): seconds per master as the rollout reports them, and in all
  voters    the fewest started voters etcd listed during the rollout (sampled every 0.2 s)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local import Recorder, _free_base, _free_subnet

from bakery import rollout, surge
from bakery.bake import images
from bakery.errors import EtcdError
from bakery.etcd import TLS, Client
from bakery.pipeline import Cluster
from bakery.providers.local import container
from bakery.providers.local.provider import LocalProvider


def _converged(provider: LocalProvider, want: int) -> bool:
    names = [n.name for n in provider.net.nodes]
    if len(names) != want or not all(provider.master_pid(n) for n in names):
        return False
    try:
        with Client([provider.endpoint], tls=provider.tls(), timeout=3) as etcd:
            members = etcd.member_list()
            return (sorted(m.name for m in members) == sorted(names) and not any(m.is_learner for m in members)
                    and all(etcd.health(provider.node_endpoint(n)) for n in names))
    except EtcdError:
        return False


class VoterSampler:
    def __init__(self, provider: LocalProvider) -> None:
        self.fewest = 99
        self._stop = threading.Event()
        self._p = provider
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        end = time.monotonic() + 1800
        with Client([self._p.endpoint], tls=self._p.tls(), timeout=3) as etcd:
            while not self._stop.is_set() and time.monotonic() < end:
                with contextlib.suppress(EtcdError):
                    self.fewest = min(self.fewest, sum(1 for m in etcd.member_list() if m.name and not m.is_learner))
                time.sleep(0.2)

    def stop(self) -> int:
        self._stop.set()
        self._t.join(10)
        return self.fewest


def run(way: str, image: Path, workdir: Path) -> dict[str, object]:
    spec_file = workdir / f"{way}.yaml"
    spec_file.write_text(
        f"name: bench-ro-{way[:2]}\nprovider: local\nelection: podmaster\nruntime: systemd\nuser_data: {way}\n"
        f"network: {{subnet: {_free_subnet()}}}\netcd: {{bootstrap: static}}\n"
        f"local: {{runtime: container, port_base: {_free_base()}, image: '{image}'}}\n"
    )
    cluster = Cluster.load(spec_file, workdir / "build")
    rec = Recorder()
    provider = LocalProvider(cluster.spec, cluster.paths, rec)
    out: dict[str, object] = {}
    try:
        provider.up(cluster.render_callback(store=provider.store), wait=True)
        out["up"] = rec.first[("etcd", "healthy")]
        victim = provider.net.nodes[-1].name
        pid = provider.master_pid(victim)
        leader = container.leader_pid(pid) if pid else None
        assert leader, f"{victim} has no running container"
        t0 = time.monotonic()
        os.kill(leader, signal.SIGKILL)
        deadline = t0 + 600
        while time.monotonic() < deadline and not (
                (provider.master_pid(victim) != pid or victim not in [n.name for n in provider.net.nodes])
                and _converged(provider, 3)):
            time.sleep(0.5)
        out["heal"] = time.monotonic() - t0
        etcd_pki = cluster.paths.pki / "etcd"
        tls = TLS(etcd_pki / "ca.crt", etcd_pki / "healthcheck-client.crt", etcd_pki / "healthcheck-client.key")

        def client(urls: object) -> Client:
            return Client(list(urls), tls)  # type: ignore[call-overload]

        sampler = VoterSampler(provider)
        t0 = time.monotonic()
        cluster = Cluster.load(spec_file, workdir / "build")
        timing = rollout.Timing(healthy=600)
        if way == "store":
            store = provider.store()
            done = surge.rollout(cluster.spec.name, client, provider, store, surge.user_data(cluster, store),
                                 progress=rec, timing=timing, workdir=cluster.paths.root)
        else:
            done = rollout.rollout(cluster, client, provider, endpoints=provider.etcd_endpoints(), progress=rec, timing=timing)
        out["rollout"] = time.monotonic() - t0
        out["voters"] = sampler.stop()
        out["per_master"] = [r.seconds for r in done]
    finally:
        provider.down(purge=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", help="qcow2 with root/ beside it (default: build/local/images.json)")
    ap.add_argument("--ways", default="store,embedded")
    args = ap.parse_args()
    if args.image:
        image = Path(args.image).resolve()
    else:
        rec = images.current(Path("build/local/images.json"), "local", "local")
        if rec is None:
            print("bench/rollout.py: no local image; run `make bake` or pass --image", file=sys.stderr)
            return 0
        image = Path(rec["disk"])
    results = {}
    with tempfile.TemporaryDirectory(prefix="bakery-bench-rollout-") as tmp:
        for way in args.ways.split(","):
            results[way] = run(way, image, Path(tmp))
    print("\nlocal containers, 3 masters: replacing masters")
    print(f"  {'user_data':<10} {'replaces':<22} {'up':>7} {'heal':>7} {'rollout':>8}  {'per master':<22} {'fewest voters':>13}")
    for way, r in results.items():
        how = "new name and address" if way == "store" else "in the same slot"
        per = ", ".join(f"{s:.1f}" for s in r["per_master"])  # type: ignore[attr-defined]
        print(f"  {way:<10} {how:<22} {r['up']:>6.1f}s {r['heal']:>6.1f}s {r['rollout']:>7.1f}s  {per + ' s':<22} {r['voters']:>13}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
