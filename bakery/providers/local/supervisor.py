"""The local master group: replaces a master whose machine died (the local twin of an
autoscaling group or a managed instance group).

`bakery up` starts it once etcd is healthy (PID file build/<cluster>/local/supervisor/pid,
like HAProxy's); `bakery down` stops it first. Every POLL seconds it looks at each
master's recorded PID; a master that is not running, and that bakery is not replacing
or retiring itself (a `hold` file), is healed:

  - masters as cattle (container runtime, user_data: store; bakery/surge.py heal): its
    etcd member is removed through the others, its membership record forgotten, its
    machine retired, and a new master started from the current image with the cluster's
    one small user-data, at a new name and address of the subnet (group.py); its
    bakery-node joins as a learner and is promoted; HAProxy follows the group;
  - fixed slots (QEMU guests, or embedded per-node user-data, which fixes name, address
    and certificates): rollout.rejoin in the same slot (member removed, re-added as a
    learner, the node re-rendered to join, relaunched, promoted).

    python -m bakery.providers.local.supervisor BUILD_ROOT SPEC_JSON
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path

from bakery import rollout, state, surge
from bakery.errors import BakeryError
from bakery.etcd import Client
from bakery.pipeline import Cluster
from bakery.providers.base import RenderedNode
from bakery.spec import ClusterSpec

POLL = 2.0  # seconds between looks
BACKOFF = (5.0, 60.0)  # after a failed heal: first wait, longest wait

log = logging.getLogger("bakery.supervisor")


def argv(build_root: Path, spec_json: Path) -> list[str]:
    return [sys.executable, "-m", "bakery.providers.local.supervisor", str(build_root), str(spec_json)]


def _progress(step: str, status: str, detail: str = "") -> None:
    log.info("%s: %s%s", step, status, f" ({detail})" if detail else "")


def heal(cluster: Cluster, provider: object, name: str, timing: rollout.Timing) -> str:
    """Replace dead master `name`; returns the name of the master in its place."""
    from bakery.providers.local.provider import LocalProvider

    assert isinstance(provider, LocalProvider)
    if provider.cattle:
        store = provider.store()
        return surge.heal(cluster.spec.name, lambda urls: Client(list(urls), tls=provider.tls(), timeout=5), provider,
                          store, surge.user_data(cluster, store), name, progress=_progress, timing=timing)
    plan = cluster.render().plan
    node = plan.node(name)
    others = [provider.node_endpoint(n.name) for n in plan.nodes if n.name != name]
    with Client(others, tls=provider.tls(), timeout=5) as etcd:
        members = etcd.member_list()
        old = next((m for m in members if m.name == name or node.peer_url in m.peer_urls), None)

        def launch(rn: RenderedNode) -> None:
            provider.launch_master(rn.name, rn.user_data.plain)

        rollout.rejoin(cluster, node, etcd, launch, old=old, progress=_progress, timing=timing)
    return name


def run(build_root: Path, spec_json: Path, *, once: bool = False) -> None:
    from bakery.providers.local.provider import LocalProvider

    spec = ClusterSpec.model_validate_json(spec_json.read_text())
    paths = state.paths(spec.name, build_root)
    provider = LocalProvider(spec, paths, _progress)
    timing = rollout.Timing(healthy=300.0, settle=60.0, poll=1.0)
    wait: dict[str, float] = {}  # node -> monotonic time of its next attempt
    backoff: dict[str, float] = {}
    log.info("watching %s (%s runtime)", ", ".join(n.name for n in provider.net.nodes), provider.runtime.kind)
    while spec_json.exists():  # `down --purge` removes it: nothing left to watch
        for n in provider.net.nodes:
            if provider.runtime.pid(n.name) or provider.layout.hold(n.name).exists():
                continue
            if time.monotonic() < wait.get(n.name, 0.0):
                continue
            log.info("%s: its %s is not running; replacing it", n.name, provider.runtime.kind)
            try:
                new = heal(Cluster(spec, paths, state.load(paths)), provider, n.name, timing)
                log.info("%s: replaced and promoted%s", n.name, f" ({new} in its place)" if new != n.name else "")
                backoff.pop(n.name, None)
            except (BakeryError, OSError) as e:
                delay = min(backoff.get(n.name, BACKOFF[0] / 2) * 2, BACKOFF[1])
                backoff[n.name] = delay
                wait[n.name] = time.monotonic() + delay
                log.warning("%s: heal failed (%s); next attempt in %.0fs", n.name, e, delay)
        if once:
            return
        time.sleep(POLL)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run(Path(sys.argv[1]), Path(sys.argv[2]))


if __name__ == "__main__":
    main()
