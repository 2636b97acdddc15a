"""bakery-podmaster processes against a real TLS etcd: acquire, release, deadline, chaos.

The chaos test runs three podmasters on one key, each with its own destination folder
(its "node"), and for at least 100 cycles kills (SIGKILL, then restarts it as the kubelet
would), freezes (SIGSTOP ... SIGCONT) or stops (SIGTERM) whichever holds the lock. At
every sample the destination exists on at most one node that can act, a new holder
appears after every cycle, and it is a full copy of the source.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bakery import podmaster
from tests.etcd_fixtures import Proc, SingleEtcd

pytestmark = pytest.mark.etcd

TTL = 2  # etcd's minimum lease TTL with default heartbeat/election settings
SLEEP = 0.5
CYCLES = 102  # at least 100, a multiple of the three disruptions
# Slack on top of TTL + sleep when waiting for a new holder: process start-up and a
# shared 2-core CI machine. bench/etcd.py prints the measured failover times.
SLACK = 3.0
SOURCE = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-scheduler\n" + b"# padding\n" * 2000



@dataclass
class Node:
    """One contender: its podmaster process and its manifest folder."""

    name: str
    folder: Path
    argv: list[str]
    proc: Proc | None = None
    restarts: int = 0

    @property
    def dest(self) -> Path:
        return self.folder / "manifests" / "kube-scheduler.manifest"

    def start(self) -> None:
        self.proc = Proc(self.argv, self.folder / f"podmaster.{self.restarts}.log")
        self.restarts += 1

    def has_dest(self) -> bool:
        try:
            content = self.dest.read_bytes()
        except FileNotFoundError:
            return False
        assert content == SOURCE, f"{self.dest} is not a full copy of the source"
        return True


@dataclass
class Cluster:
    etcd: SingleEtcd
    key: str
    nodes: list[Node] = field(default_factory=list)

    def holder(self) -> tuple[str, int] | None:
        kv = self.etcd.client.get(self.key)
        return (kv.value.decode(), kv.lease) if kv else None

    def logs(self) -> str:
        return "\n".join(f"--- {n.name}\n{n.proc.tail(15) if n.proc else ''}" for n in self.nodes)


def podmaster_argv(etcd: SingleEtcd, key: str, name: str, folder: Path, ttl: int = TTL, sleep: float = SLEEP) -> list[str]:
    (folder / "srv").mkdir(parents=True, exist_ok=True)
    (folder / "srv" / "kube-scheduler.manifest").write_bytes(SOURCE)
    return [
        sys.executable, "-m", "bakery.podmaster",
        f"--etcd-servers={etcd.url}",
        f"--etcd-cafile={etcd.certs['ca']}",
        f"--etcd-certfile={etcd.certs['client_crt']}",
        f"--etcd-keyfile={etcd.certs['client_key']}",
        f"--key={key}", f"--whoami={name}", f"--ttl-secs={ttl}", f"--sleep={sleep}s",
        f"--source-file={folder / 'srv' / 'kube-scheduler.manifest'}",
        f"--dest-file={folder / 'manifests' / 'kube-scheduler.manifest'}",
    ]  # fmt: skip


@pytest.fixture
def cluster(etcd: SingleEtcd, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    key = f"/bakery/test/podmaster/{request.node.name}"
    c = Cluster(etcd, key)
    for i in range(3):
        name = f"node-{i}"
        c.nodes.append(Node(name, tmp_path / name, podmaster_argv(etcd, key, name, tmp_path / name)))
    yield c
    for n in c.nodes:
        if n.proc:
            n.proc.stop()


def wait_for(what: str, cond, timeout: float, c: Cluster):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}\n{c.logs()}")


def test_single_podmaster_copies_and_releases_on_sigterm(cluster: Cluster) -> None:
    n = cluster.nodes[0]
    n.start()
    wait_for("the manifest copy", n.has_dest, 10, cluster)
    holder = cluster.holder()
    assert holder is not None and holder[0] == n.name
    assert n.proc is not None
    n.proc.signal(signal.SIGTERM)
    assert n.proc.wait(10) == 0
    assert not n.dest.exists()
    assert cluster.holder() is None  # lease revoked: the key went with it


def test_holder_drops_its_copy_when_the_key_is_taken_from_it(cluster: Cluster) -> None:
    n = cluster.nodes[0]
    n.start()
    wait_for("the manifest copy", n.has_dest, 10, cluster)
    held = cluster.holder()
    assert held is not None
    c = cluster.etcd.client
    lease = c.lease_grant(30)
    c.delete(cluster.key)
    assert c.create(cluster.key, "intruder", lease.id)
    wait_for("the holder to drop its copy", lambda: not n.dest.exists(), 5, cluster)
    c.lease_revoke(lease.id)
    wait_for("the holder to take the key back", lambda: (cluster.holder() or ("", 0))[0] == n.name and n.has_dest(), 10, cluster)
    assert n.proc is not None and "the key is no longer ours" in n.proc.log.read_text()


def test_holder_removes_dest_before_its_lease_can_expire(cluster: Cluster) -> None:
    """etcd frozen: no renewal possible. The copy goes within 3/4 TTL of the last renewal."""
    ttl = 4
    n = cluster.nodes[0]
    n.argv = podmaster_argv(cluster.etcd, cluster.key, n.name, n.folder, ttl=ttl, sleep=0.5)
    n.start()
    wait_for("the manifest copy", n.has_dest, 10, cluster)
    etcd_proc = cluster.etcd.proc
    frozen_at = time.monotonic()
    etcd_proc.signal(signal.SIGSTOP)
    try:
        # The lease lives at least `ttl` after the last keepalive, which was sent before
        # the freeze; the copy must be gone before that.
        wait_for("the holder to drop its copy", lambda: not n.dest.exists(), ttl, cluster)
        assert time.monotonic() - frozen_at < ttl
    finally:
        etcd_proc.signal(signal.SIGCONT)
    # etcd back: the same node wins again (it is the only contender).
    wait_for("the copy to return", n.has_dest, 2 * ttl + 5, cluster)


def test_flags_of_the_rendered_manifest_parse() -> None:
    from bakery.render import flags
    from bakery.spec import parse
    from bakery.topology import plan

    p = plan(parse("name: demo\nprovider: local\nelection: podmaster\n"))
    argv = flags.podmaster_command(p, p.nodes[0], "kube-scheduler", source=flags.ELECTED_SOURCE, dest=flags.MANIFESTS)
    args = podmaster._parser().parse_args(argv[1:])
    assert args.key == "/bakery/demo/podmaster/kube-scheduler"
    assert args.ttl_secs == flags.PODMASTER_TTL_SECS and args.sleep == 5.0
    assert args.etcd_keyfile.endswith("healthcheck-client.key")


def test_three_podmasters_survive_100_disruptions_of_the_holder(cluster: Cluster) -> None:
    for n in cluster.nodes:
        n.start()
    by_name = {n.name: n for n in cluster.nodes}
    failovers: list[float] = []
    # nodes that cannot act on their copy right now: frozen, or killed and not yet
    # cleaned up by their restarted process
    unable: set[str] = set()

    def sample() -> list[str]:
        present = [n.name for n in cluster.nodes if n.has_dest()]
        acting = [p for p in present if p not in unable]
        assert len(acting) <= 1, f"copies on {acting} at once\n{cluster.logs()}"
        return present

    def settled_holder() -> str | None:
        h = cluster.holder()
        present = sample()
        if h and present == [h[0]] and not unable:
            return h[0]
        return None

    current = wait_for("a first holder", settled_holder, 15, cluster)
    for cycle in range(CYCLES):
        old = cluster.holder()
        assert old is not None and old[0] == current
        node = by_name[current]
        assert node.proc is not None
        action = ("kill", "freeze", "term")[cycle % 3]
        t0 = time.monotonic()
        if action == "kill":
            node.proc.signal(signal.SIGKILL)
            node.proc.wait(5)
            unable.add(node.name)
            node.start()  # the kubelet restarts a dead container
        elif action == "freeze":
            node.proc.signal(signal.SIGSTOP)
            unable.add(node.name)
        else:
            node.proc.signal(signal.SIGTERM)
            assert node.proc.wait(5) == 0, node.proc.tail()
            assert not node.dest.exists()
            node.start()

        def new_holder(action: str = action, node: Node = node, old: tuple[str, int] = old) -> str | None:
            h = cluster.holder()
            present = sample()
            if action == "kill" and node.name in unable and not node.has_dest():
                unable.discard(node.name)  # the restarted podmaster cleaned up
            if h and h[1] != old[1] and h[0] in present and h[0] not in unable:
                return h[0]
            return None

        current = wait_for(f"a new holder after {action} of {node.name} (cycle {cycle})", new_holder, TTL + SLEEP + SLACK, cluster)
        failovers.append(time.monotonic() - t0)
        if action == "freeze":
            node.proc.signal(signal.SIGCONT)
            # on waking, its deadline has passed: it must drop its copy before anything else
            wait_for(f"{node.name} to drop its copy after SIGCONT", lambda n=node: not n.dest.exists(), 2 + SLACK, cluster)
            unable.discard(node.name)
        if action == "kill" and node.name in unable:
            wait_for(f"restarted {node.name} to clean up", lambda n=node: not n.dest.exists(), 5 + SLACK, cluster)
            unable.discard(node.name)
        current = wait_for("one settled holder", settled_holder, TTL + SLEEP + SLACK, cluster)
    assert len(failovers) == CYCLES


def test_podmaster_imports_only_what_its_image_installs() -> None:
    """The Dockerfile installs bakery without dependencies, plus httpx."""
    import subprocess

    code = "import sys, bakery.podmaster; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    loaded = set(r.stdout.split())
    assert "httpx" in loaded
    assert not loaded & {"pydantic", "yaml", "jinja2", "cryptography", "boto3", "google"}, loaded
    assert (Path(__file__).parent.parent / "Dockerfile").read_text().count('ENTRYPOINT ["bakery-podmaster"]') == 1


def test_flag_checks() -> None:
    assert podmaster.parse_duration("500ms") == 0.5
    assert podmaster.parse_duration("5s") == 5.0
    assert podmaster.parse_duration("1m") == 60.0
    assert podmaster.parse_duration("2.5") == 2.5
    base = ["--key=k", "--source-file=/s", "--dest-file=/d"]
    for bad in (["--ttl-secs=1"], ["--ttl-secs=4", "--sleep=3s"], ["--etcd-certfile=/c"], ["--sleep=soon"]):
        with pytest.raises(SystemExit) as e:
            podmaster.main(base + bad)
        assert e.value.code == 2
