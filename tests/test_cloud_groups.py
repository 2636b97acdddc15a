"""Master groups for real: the real boto3 against moto's autoscaling group and the real
google-cloud-compute against the fake GCE's managed instance groups, with one bakery-node
per instance on the instance's own loopback address (tests/cloud_harness.py: the agent
reads the node config out of the instance's own user-data, the description and CA
material from the provider's store, issues its leaves from the cluster's etcd CA), so the
etcd cluster the cloud's instances form is a real one. The cluster is rendered and
published by bakery's own pipeline (Cluster.render_callback), as `bakery up` does.

On each cloud: `up` makes the group and its instances assemble etcd by themselves
(store bootstrap through the provider's own store: moto S3, fake GCS); an instance
terminated behind bakery's back is replaced by the group and its replacement joins by
itself (the dead member removed); `bakery rollout`'s surge (bakery/surge.py) replaces
every master onto a new image without etcd ever listing fewer than 3 voters, under a
writer that loses nothing, and leaves the group at its size with no journal.
"""

from __future__ import annotations

import base64
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bakery import backup, surge
from bakery.errors import EtcdError
from bakery.etcd import TLS
from bakery.node import ec2 as node_ec2
from bakery.pipeline import Cluster
from bakery.providers.aws.provider import create
from bakery.rollout import Timing
from bakery.store import layout
from bakery.surge import heal, load_journal, rollout
from tests.cloud_harness import Instance, Machines, VoterSampler, ports_free_on, wait_for
from tests.moto_server import Calls, Moto, moto, moto_session, record_ami  # noqa: F401

pytestmark = pytest.mark.etcd

T = Timing(healthy=180, settle=30, poll=0.3)


class Writer:
    """Puts /w/<i> through whatever members the group has now, until stopped (bounded)."""

    def __init__(self, m: Machines, endpoints: Any) -> None:
        self.acked: list[str] = []
        self._m, self._endpoints = m, endpoints
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        end = time.monotonic() + 600
        for i in range(20_000):
            if self._stop.is_set() or time.monotonic() > end:
                return
            try:
                with self._m.client(self._endpoints()) as e:
                    e.put(f"/w/{i:05d}", str(i))
                self.acked.append(f"/w/{i:05d}")
            except Exception:  # a member going away: the next put goes elsewhere
                pass
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(30)


def _voters(m: Machines, endpoints: list[str]) -> dict[str, Any]:
    with m.client(endpoints) as e:
        members = e.member_list()
        assert all(x.name and not x.is_learner for x in members), members
        assert all(e.health(x.client_urls[0]) for x in members), members
        return {x.name: x for x in members}


# -- AWS: an autoscaling group in moto --------------------------------------------------------


class Env:
    """The test's cluster as `bakery` sees it: its spec file and build folder."""

    def __init__(self, spec_file: Path, build: Path) -> None:
        self.spec_file, self.build = spec_file, build
        self.cluster = Cluster.load(spec_file, build)
        self.paths = self.cluster.paths
        self.spec = self.cluster.spec

    def reload(self) -> Cluster:
        return Cluster.load(self.spec_file, self.build)

    def render_callback(self, **kw: Any) -> Any:
        return self.reload().render_callback(**kw)


def _tls(cluster: Any) -> TLS:
    pki = cluster.paths.pki / "etcd"
    return TLS(pki / "ca.crt", pki / "healthcheck-client.crt", pki / "healthcheck-client.key")


def _aws_spec_text(masters: int) -> tuple[str, list[str]]:
    for _ in range(20):
        a = random.randint(64, 250)
        subnets = [f"127.{a}.{z}.0/24" for z in (1, 2, 3)]
        ports = ports_free_on(subnets)
        if ports:
            break
    else:
        raise AssertionError("no loopback subnets with free etcd ports")
    zones = "\n".join(f"    - {{name: us-east-1{z}, subnet: {s}}}" for z, s in zip("abc", subnets, strict=True))
    return (f"name: demo\nprovider: aws\nmasters: {masters}\nnetwork: {{subnet: 127.{a}.0.0/16}}\n"
            f"etcd: {{client_port: {ports[0]}, peer_port: {ports[1]}}}\n"
            f"aws:\n  region: us-east-1\n  masters: asg\n  zones:\n{zones}\n"), subnets


@pytest.fixture(params=[3])
def aws(request: pytest.FixtureRequest, moto: Moto, tmp_path: Path, etcd_bin: Path) -> Iterator[tuple[Any, Machines, Moto, Any]]:  # noqa: F811
    text, _ = _aws_spec_text(request.param)
    (tmp_path / "cluster.yaml").write_text(text)
    cluster = Env(tmp_path / "cluster.yaml", tmp_path / "build")
    cluster.paths.base.mkdir(parents=True, exist_ok=True)
    record_ami(cluster.paths, moto.register_ami())
    provider = create(cluster.spec, cluster.paths, lambda *e: None, client_factory=moto.factory(Calls()),
                      poll_interval=0.1, wait_timeout=120)
    ec2 = moto.plain("ec2")
    seen: dict[str, Instance] = {}

    def instances() -> list[Instance]:
        g = moto.plain("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=["demo-masters"])["AutoScalingGroups"]
        ids = [i["InstanceId"] for i in g[0]["Instances"]] if g else []
        if not ids:
            return []
        out = []
        for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]:
            for i in r["Instances"]:
                if i["State"]["Name"] not in ("pending", "running"):
                    continue
                iid = i["InstanceId"]
                if iid not in seen:
                    ud = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]
                    seen[iid] = Instance(iid, i["PrivateDnsName"].split(".")[0], i["PrivateIpAddress"],
                                         i["Placement"]["AvailabilityZone"], base64.b64decode(ud), "aws")
                out.append(seen[iid])
        return out

    provider.up(cluster.render_callback(store=provider.store))  # renders, publishes, then the group starts
    store = provider.store()
    with Machines(tmp_path / "machines", etcd_bin, _tls(cluster), store, instances,
                  is_alive=node_ec2.instance_alive(ec2, store, cluster.spec.name)) as m:
        yield provider, m, moto, cluster


def _formed(provider: Any, m: Machines) -> dict[str, Any]:
    group = provider.group()
    wait_for("3 instances, each a healthy voter", lambda: len(group.members()) == 3 and _all_voters(m, group), 180, m)
    assert not m.errors, m.errors
    return _voters(m, list(group.etcd_endpoints().values()))


def _all_voters(m: Machines, group: Any) -> bool:
    try:
        with m.client(list(group.etcd_endpoints().values())) as e:
            members = e.member_list()
            return (sorted(x.name for x in members) == sorted(group.members()) and not any(x.is_learner for x in members)
                    and all(e.health(u) for u in group.etcd_endpoints().values()))
    except EtcdError:
        return False


def test_aws_group_assembles_etcd_and_heals_a_terminated_master(aws: tuple[Any, Machines, Moto, Any]) -> None:
    provider, m, moto, _ = aws  # noqa: F811
    before = _formed(provider, m)
    assert sorted(j.how for j in m.joined.values()).count("bootstrap") == 1  # store mode: one claim won
    group = provider.group()
    victim = sorted(before)[1]
    victim_id = next(i.id for i in m.live() if i.hostname == victim)
    moto.plain("ec2").terminate_instances(InstanceIds=[victim_id])  # behind bakery's back
    wait_for("the group's replacement a healthy voter", lambda: victim not in group.members() and len(group.members()) == 3
             and _all_voters(m, group), 180, m)
    after = _voters(m, list(group.etcd_endpoints().values()))
    (new,) = set(after) - set(before)
    assert victim not in after and all(after[n].id == before[n].id for n in before if n != victim)
    new_id = next(i.id for i in m.live() if i.hostname == new)
    assert m.joined[new_id].how == "learner" and victim in m.joined[new_id].removed  # EC2 said its machine is gone


def test_aws_surge_rollout_onto_a_new_image_keeps_three_voters_and_every_write(
        aws: tuple[Any, Machines, Moto, Any]) -> None:
    provider, m, moto, cluster = aws  # noqa: F811
    before = _formed(provider, m)
    new_ami = moto.register_ami()
    record_ami(cluster.paths, new_ami)  # `bakery bake` made a new image
    group = provider.group()
    writer = Writer(m, lambda: list(group.etcd_endpoints().values()))
    sampler = VoterSampler(m, lambda: list(group.etcd_endpoints().values()))
    data = surge.user_data(cluster.reload(), provider.store())
    done = rollout("demo", m.client, group, provider.store(), data, timing=T, workdir=cluster.paths.root)
    fewest = sampler.stop()
    writer.stop()
    assert not m.errors, m.errors
    assert sorted(r.node for r in done) == sorted(before) and all(r.replacement not in before for r in done)
    assert fewest >= 3 and sampler.samples > 10, f"etcd listed only {fewest} started voters at one moment"
    after = _voters(m, list(group.etcd_endpoints().values()))
    assert sorted(after) == sorted(r.replacement for r in done)
    g = moto.plain("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=["demo-masters"])["AutoScalingGroups"][0]
    assert (g["MinSize"], g["MaxSize"], g["DesiredCapacity"]) == (3, 3, 3)
    ids = [i["InstanceId"] for i in g["Instances"]]
    images = {i["ImageId"] for r in moto.plain("ec2").describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]}
    assert images == {new_ami}
    store = provider.store()
    assert load_journal(store, "demo") is None and backup.list_backups(store, "demo")
    with m.client(list(group.etcd_endpoints().values())) as e:
        stored = {kv.key.decode() for kv in e.range("/w/", prefix=True)}
    assert len(writer.acked) > 20 and not set(writer.acked) - stored
    assert not provider.up(cluster.render_callback(store=provider.store)).drift  # what `up` makes: nothing to report


def test_aws_rollout_interrupted_after_the_surge_adopts_it_on_the_rerun(aws: tuple[Any, Machines, Moto, Any]) -> None:
    provider, m, moto, cluster = aws  # noqa: F811
    _formed(provider, m)
    group = provider.group()
    data = surge.user_data(cluster.reload(), provider.store())

    class Interrupt(Exception):
        pass

    def progress(step: str, status: str, detail: str = "") -> None:
        if status == "waiting":
            raise Interrupt(step)

    with pytest.raises(Interrupt):
        rollout("demo", m.client, group, provider.store(), data, timing=T, progress=progress, workdir=cluster.paths.root)
    g = moto.plain("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=["demo-masters"])["AutoScalingGroups"][0]
    assert g["DesiredCapacity"] == 4  # surged, then interrupted
    assert any("a rollout in progress surged it" in d
               for d in provider.up(cluster.render_callback(store=provider.store)).drift)  # up leaves it
    booted = len(m.started)
    done = rollout("demo", m.client, group, provider.store(), data, timing=T, workdir=cluster.paths.root)
    assert len(done) == 3 and len(m.started) == booted + 2, "the rerun adopted the surged master: 2 more, not 3"
    assert _all_voters(m, group) and len(group.members()) == 3


def test_aws_heal_through_the_group_when_bakery_is_told_first(aws: tuple[Any, Machines, Moto, Any]) -> None:
    """surge.heal on a group: the dead master's member goes first, then the group replaces it."""
    provider, m, _, cluster = aws
    before = _formed(provider, m)
    group = provider.group()
    dead = sorted(before)[0]
    dead_id = next(i.id for i in m.live() if i.hostname == dead)
    m.end(dead_id)  # the machine hangs; the instance still runs
    data = surge.user_data(cluster.reload(), provider.store())
    new = heal("demo", m.client, group, provider.store(), data, dead, timing=T)
    assert dead not in group.members() and new in group.members()
    wait_for("3 healthy voters", lambda: _all_voters(m, group), 120, m)
    assert layout.member("demo", dead) not in provider.store().list(layout.members_prefix("demo"))


# -- GCP: zonal managed instance groups in the fake GCE ---------------------------------------

GCP_IMAGE, GCP_IMAGE2 = "bakery-k8s-1-31-4-abc123", "bakery-k8s-1-31-4-def456"


@pytest.fixture(params=[3])
def gcp(request: pytest.FixtureRequest, tmp_path: Path, etcd_bin: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Machines, Any, Any]]:
    from bakery.providers.gcp import GcpProvider
    from bakery.render.userdata import decode
    from tests.fake_gce import FakeGCE
    from tests.fake_gcs import FakeGCS

    for _ in range(20):
        subnet = f"127.{random.randint(64, 250)}.{random.randint(1, 250)}.0/24"
        ports = ports_free_on([subnet])
        if ports:
            break
    else:
        raise AssertionError("no loopback subnet with free etcd ports")
    with FakeGCE(project="test-project", ephemeral_range=subnet).running() as gce, \
            FakeGCS(project="test-project").running() as gcs:
        monkeypatch.setenv("BAKERY_GCS_ENDPOINT_URL", gcs.url)
        monkeypatch.setenv("BAKERY_GCP_IAM_ENDPOINT_URL", gcs.url)
        gce.add_image(GCP_IMAGE)
        gce.add_image(GCP_IMAGE2)

        def write_spec(image: str) -> Env:
            (tmp_path / "cluster.yaml").write_text(
                f"name: demo\nprovider: gcp\nmasters: {request.param}\nnetwork: {{subnet: {subnet}}}\n"
                f"etcd: {{client_port: {ports[0]}, peer_port: {ports[1]}}}\n"
                f"gcp:\n  project: test-project\n  image: {image}\n  endpoint_url: {gce.url}\n")
            return Env(tmp_path / "cluster.yaml", tmp_path / "build")

        def make(image: str) -> tuple[Any, Env]:
            env = write_spec(image)
            return GcpProvider(env.spec, env.paths, poll_seconds=0.05), env

        provider, env = make(GCP_IMAGE)
        provider.up(env.render_callback(store=provider.store))
        store = provider.store()
        seen: dict[str, Instance] = {}

        def instances() -> list[Instance]:
            out = []
            for i in gce.resources("instances"):
                if i["status"] not in ("STAGING", "RUNNING"):
                    continue
                iid = str(i["id"])
                if iid not in seen:
                    meta = {x["key"]: x["value"] for x in i["metadata"]["items"]}
                    ud = decode(meta["user-data"].encode(), meta.get("user-data-encoding", "plain"))  # type: ignore[arg-type]
                    seen[iid] = Instance(iid, i["name"], i["networkInterfaces"][0]["networkIP"], i["zone"].rsplit("/", 1)[-1],
                                         ud, "gce")
                out.append(seen[iid])
            return out

        with Machines(tmp_path / "machines", etcd_bin, _tls(env), store, instances) as m:
            yield provider, m, gce, make


def test_gcp_migs_assemble_etcd_and_a_deleted_master_rejoins_under_its_name(gcp: tuple[Any, Machines, Any, Any]) -> None:
    from tests.test_gcp_group import client

    provider, m, gce, _ = gcp
    group = provider.group()
    before = _formed(provider, m)
    assert sorted(j.how for j in m.joined.values()).count("bootstrap") == 1
    victim = sorted(before)[2]
    zone = next(i.zone for i in m.live() if i.hostname == victim)
    client(gce, "Instances").delete_unary(project="test-project", zone=zone, instance=victim)  # behind bakery's back
    wait_for("the repaired master a healthy voter again", lambda: _all_voters(m, group)
             and _voters(m, list(group.etcd_endpoints().values()))[victim].id != before[victim].id, 180, m)
    after = _voters(m, list(group.etcd_endpoints().values()))
    assert sorted(after) == sorted(before) and all(after[n].id == before[n].id for n in before if n != victim)
    repaired = next(i.id for i in m.live() if i.hostname == victim)
    assert m.joined[repaired].how == "learner" and victim in m.joined[repaired].removed  # its own old member, by name


def test_gcp_surge_rollout_onto_a_new_image_keeps_three_voters_and_every_write(gcp: tuple[Any, Machines, Any, Any]) -> None:
    provider, m, gce, make = gcp
    before = _formed(provider, m)
    provider, env = make(GCP_IMAGE2)  # `bakery bake` made a new image
    group = provider.group()
    writer = Writer(m, lambda: list(group.etcd_endpoints().values()))
    sampler = VoterSampler(m, lambda: list(group.etcd_endpoints().values()))
    data = surge.user_data(env.reload(), provider.store())  # the new description, published
    done = rollout("demo", m.client, group, provider.store(), data, timing=T, workdir=provider.paths.root)
    fewest = sampler.stop()
    writer.stop()
    assert not m.errors, m.errors
    assert sorted(r.node for r in done) == sorted(before) and all(r.replacement not in before for r in done)
    assert fewest >= 3 and sampler.samples > 10, f"etcd listed only {fewest} started voters at one moment"
    assert sorted(_voters(m, list(group.etcd_endpoints().values()))) == sorted(r.replacement for r in done)
    migs = {g["name"]: g for g in gce.resources("instanceGroupManagers")}
    assert sorted(g["targetSize"] for g in migs.values()) == [1, 1, 1]
    images = {i["disks"][0]["initializeParams"]["sourceImage"].rsplit("/", 1)[-1] for i in gce.resources("instances")}
    assert images == {GCP_IMAGE2}
    store = provider.store()
    assert load_journal(store, "demo") is None and backup.list_backups(store, "demo")
    with m.client(list(group.etcd_endpoints().values())) as e:
        stored = {kv.key.decode() for kv in e.range("/w/", prefix=True)}
    assert len(writer.acked) > 20 and not set(writer.acked) - stored
