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

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bakery import backup, surge
from bakery.errors import EtcdError
from bakery.node import members as records
from bakery.rollout import Timing
from bakery.store import layout
from bakery.surge import heal, load_journal, rollout
from tests.cloud_harness import (
    GCP_IMAGE2,
    Env,
    Machines,
    VoterSampler,
    Writer,
    aws_group,
    gcp_group,
    wait_for,
)
from tests.moto_server import Moto, moto, moto_session, record_ami  # noqa: F401

pytestmark = pytest.mark.etcd

T = Timing(healthy=180, settle=30, poll=0.3)


@pytest.fixture(params=[3])
def aws(request: pytest.FixtureRequest, moto: Moto, tmp_path: Path, etcd_bin: Path) -> Iterator[tuple[Any, Machines, Moto, Env]]:  # noqa: F811
    with aws_group(tmp_path, moto, etcd_bin, request.param) as (provider, m, env):
        yield provider, m, moto, env


@pytest.fixture(params=[3])
def gcp(request: pytest.FixtureRequest, tmp_path: Path, etcd_bin: Path) -> Iterator[tuple[Any, Machines, Any, Any]]:
    with gcp_group(tmp_path, etcd_bin, request.param) as group:
        yield group


def _healthy_voters(m: Machines, group: Any) -> dict[str, Any] | None:
    """The group's members by name, read in one pass, when each is a voter the group has and
    answers /health; None while any is not (yet). A probe: a passing moment is the answer,
    never re-read afterwards (a member may be briefly unhealthy under load a moment later)."""
    try:
        with m.client(list(group.etcd_endpoints().values())) as e:
            members = e.member_list()
            if sorted(x.name for x in members) != sorted(group.members()) or any(x.is_learner for x in members):
                return None
            if not all(x.client_urls and e.health(x.client_urls[0]) for x in members):
                return None
            return {x.name: x for x in members}
    except EtcdError:
        return None


def _wait_voters(what: str, m: Machines, group: Any, timeout: float,
                 holds: Callable[[dict[str, Any]], bool] = lambda _: True) -> dict[str, Any]:
    """Polls until the group's members are healthy voters of which `holds` is true; returns them."""
    seen: list[dict[str, Any]] = []

    def probe() -> bool:
        voters = _healthy_voters(m, group)
        if voters is not None and holds(voters):
            seen.append(voters)
            return True
        return False

    wait_for(what, probe, timeout, m)
    return seen[-1]


# -- AWS: an autoscaling group in moto --------------------------------------------------------


def _formed(provider: Any, m: Machines) -> dict[str, Any]:
    """Three healthy voters, each recorded in the store, and the store's bootstrapped marker:
    a learner's agent records its member after its promotion, a moment after etcd shows it
    as a voter (a `down` in that moment finds one record fewer)."""
    voters = _wait_voters("3 instances, each a healthy voter", m, provider.group(), 180, lambda v: len(v) == 3)
    store = provider.store()
    wait_for("every voter recorded in the store, and the bootstrapped marker",
             lambda: ({r.name for r in records.records(store, "demo")} >= set(voters)
                      and records.bootstrapped(store, "demo") is not None), 60, m)
    assert not m.errors, m.errors
    return voters


@pytest.mark.parametrize("aws", [5], indirect=True)
def test_aws_group_of_five_assembles_etcd_with_every_member_registered(aws: tuple[Any, Machines, Moto, Any]) -> None:
    provider, m, _, _ = aws
    group = provider.group()
    _wait_voters("5 instances, each a healthy voter", m, group, 240, lambda v: len(v) == 5)
    assert not m.errors, m.errors
    # every member's record in the store (a learner records itself just after its promotion)
    store = provider.store()
    wait_for("every member recorded", lambda: {r.name for r in records.records(store, "demo")} == set(group.members()), 60, m)


def test_aws_master_without_a_path_to_its_store_never_joins(aws: tuple[Any, Machines, Moto, Any]) -> None:
    """The harness asks moto's state (subnet, route table, endpoints, NAT, public address) whether
    an instance reaches S3 and EC2, by AWS's rules: bakery's VPC endpoints give every master a
    path; once the S3 gateway endpoint is gone, a replacement cannot fetch anything."""
    provider, m, moto, _ = aws  # noqa: F811
    before = _formed(provider, m)
    assert not m.unreachable, m.unreachable
    ec2 = moto.plain("ec2")
    (s3,) = [e["VpcEndpointId"] for e in ec2.describe_vpc_endpoints(
        Filters=[{"Name": "service-name", "Values": ["com.amazonaws.us-east-1.s3"]}])["VpcEndpoints"]]
    ec2.delete_vpc_endpoints(VpcEndpointIds=[s3])
    victim_id = next(i.id for i in m.live() if i.hostname == sorted(before)[0])
    ec2.terminate_instances(InstanceIds=[victim_id])
    wait_for("the replacement's machine fails to reach the store", lambda: any(
        iid in m.errors for iid in m.unreachable), 60, m)
    (new_id,) = list(m.unreachable)
    assert "S3 gateway endpoint" in m.unreachable[new_id] and new_id not in m.joined


def test_aws_group_assembles_etcd_and_heals_a_terminated_master(aws: tuple[Any, Machines, Moto, Any]) -> None:
    provider, m, moto, _ = aws  # noqa: F811
    before = _formed(provider, m)
    assert sorted(j.how for j in m.joined.values()).count("bootstrap") == 1  # store mode: one claim won
    group = provider.group()
    victim = sorted(before)[1]
    victim_id = next(i.id for i in m.live() if i.hostname == victim)
    moto.plain("ec2").terminate_instances(InstanceIds=[victim_id])  # behind bakery's back
    after = _wait_voters("the group's replacement a healthy voter", m, group, 180,
                         lambda v: victim not in v and len(v) == 3)
    (new,) = set(after) - set(before)
    assert victim not in after and all(after[n].id == before[n].id for n in before if n != victim)
    new_id = next(i.id for i in m.live() if i.hostname == new)
    assert m.joined[new_id].how == "learner" and victim in m.joined[new_id].removed  # EC2 said its machine is gone


def test_aws_down_then_up_bootstraps_a_new_cluster(aws: tuple[Any, Machines, Moto, Env]) -> None:
    """`down` deletes the masters with their disks and keeps the bucket: the store's marker
    and member records go with the masters, or every master of the next `up` waits to join
    the cluster that no longer exists."""
    provider, m, _, env = aws
    names = sorted(_formed(provider, m))
    with m.client(list(provider.group().etcd_endpoints().values())) as e:
        e.put("/t/before-down", "old")
    deleted = provider.down()
    assert [d for d in deleted if d.startswith("etcd records ")] == [
        "etcd records etcd/bootstrapped, etcd/bootstrap, members/" + ", members/".join(
            f"{n}.json" for n in names) + f" in {provider.store().url}"], deleted
    store = provider.store()
    assert records.bootstrapped(store, "demo") is None and records.records(store, "demo") == []
    assert store.list(layout.pki_prefix("demo")), "the CA material stays with the bucket"
    wait_for("every machine of the deleted group ended", lambda: not m.live(), 60, m)
    first = set(m.joined)
    provider.up(env.render_callback(store=provider.store))
    _formed(provider, m)
    # an agent's join returns (and the harness notes how it joined) just after it recorded its member
    wait_for("the three new machines' agents done joining", lambda: len(set(m.joined) - first) == 3, 60, m)
    again = [j.how for iid, j in m.joined.items() if iid not in first]
    assert sorted(again) == ["bootstrap", "learner", "learner"], again  # a new cluster, by itself
    with m.client(list(provider.group().etcd_endpoints().values())) as e:
        assert e.get("/t/before-down") is None


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
    assert fewest >= 3 and sampler.samples > 10, f"at one moment: {sampler.worst}"
    after = _wait_voters("3 healthy voters after the rollout", m, group, 60)
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


# Each step of a replacement, as the rollout reports it: interrupted there (Ctrl-C), then rerun.
STEPS = {"snapshot": 0, "surging": 0, "waiting": 1, "removing member": 1, "retiring": 1}  # -> surges before the rerun


@pytest.mark.parametrize("step", list(STEPS))
def test_aws_rollout_interrupted_at_each_step_converges_when_rerun_and_never_surges_twice(
        aws: tuple[Any, Machines, Moto, Any], step: str) -> None:
    provider, m, moto, cluster = aws  # noqa: F811
    before = _formed(provider, m)
    group = provider.group()
    data = surge.user_data(cluster.reload(), provider.store())

    class Interrupt(Exception):
        pass

    def progress(s: str, status: str, detail: str = "") -> None:
        if status == step:
            raise Interrupt(f"{s}: {status}")

    booted = len(m.started)
    with pytest.raises(Interrupt):
        rollout("demo", m.client, group, provider.store(), data, timing=T, progress=progress, workdir=cluster.paths.root)
    g = moto.plain("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=["demo-masters"])["AutoScalingGroups"][0]
    assert g["DesiredCapacity"] == 3 + STEPS[step]
    # the machines follow the cloud (polled): the surged instance's machine boots soon after
    wait_for("a machine for every instance", lambda: len(m.started) == booted + STEPS[step], 30, m)
    if STEPS[step]:  # surged, then interrupted: `up` leaves a surged group alone
        assert any("a rollout in progress surged it" in d
                   for d in provider.up(cluster.render_callback(store=provider.store)).drift)
    j = load_journal(provider.store(), "demo")
    assert j is not None and j.current is not None
    done = rollout("demo", m.client, group, provider.store(), data, timing=T, workdir=cluster.paths.root)
    assert sorted(r.node for r in done) == sorted(before)
    assert len(m.started) == booted + 3, f"{len(m.started) - booted} machines started for 3 replacements"
    _wait_voters("3 healthy voters, all new", m, group, 120, lambda v: not set(v) & set(before))
    g = moto.plain("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=["demo-masters"])["AutoScalingGroups"][0]
    assert (g["MinSize"], g["MaxSize"], g["DesiredCapacity"]) == (3, 3, 3) and load_journal(provider.store(), "demo") is None


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
    _wait_voters("3 healthy voters", m, group, 120)
    assert layout.member("demo", dead) not in provider.store().list(layout.members_prefix("demo"))


# -- GCP: zonal managed instance groups in the fake GCE ---------------------------------------

@pytest.mark.parametrize("gcp", [5], indirect=True)
def test_gcp_migs_of_five_assemble_etcd_with_every_member_registered(gcp: tuple[Any, Machines, Any, Any]) -> None:
    provider, m, gce, _ = gcp
    group = provider.group()
    _wait_voters("5 instances, each a healthy voter", m, group, 240, lambda v: len(v) == 5)
    assert not m.errors, m.errors
    assert {r.name for r in records.records(provider.store(), "demo")} == set(group.members())
    assert sorted(g["targetSize"] for g in gce.resources("instanceGroupManagers")) == [1, 2, 2]


def test_gcp_master_without_a_path_to_its_store_never_joins(gcp: tuple[Any, Machines, Any, Any]) -> None:
    """The harness asks the fake GCE's state (accessConfigs, the subnetwork's Private Google
    Access, routers' NATs) whether an instance reaches Cloud Storage: bakery's `up` turned
    Private Google Access on; once it is off, a repaired master cannot fetch anything."""
    from tests.test_gcp_group import client

    provider, m, gce, _ = gcp
    before = _formed(provider, m)
    assert not m.unreachable, m.unreachable
    (subnet,) = [s for s in gce.resources("subnetworks") if s["region"].endswith("/us-central1")]
    op = client(gce, "Subnetworks").set_private_ip_google_access_unary(
        project="test-project", region="us-central1", subnetwork=subnet["name"],
        subnetworks_set_private_ip_google_access_request_resource={"private_ip_google_access": False})
    assert op.error is None or not op.error.errors
    victim = sorted(before)[0]
    zone = next(i.zone for i in m.live() if i.hostname == victim)
    client(gce, "Instances").delete_unary(project="test-project", zone=zone, instance=victim)
    wait_for("the repaired master's machine fails to reach the store", lambda: any(
        iid in m.errors for iid in m.unreachable), 60, m)
    (new_id,) = list(m.unreachable)
    assert "no Private Google Access and no Cloud NAT" in m.unreachable[new_id] and new_id not in m.joined


def test_gcp_migs_assemble_etcd_and_a_deleted_master_rejoins_under_its_name(gcp: tuple[Any, Machines, Any, Any]) -> None:
    from tests.test_gcp_group import client

    provider, m, gce, _ = gcp
    group = provider.group()
    before = _formed(provider, m)
    assert sorted(j.how for j in m.joined.values()).count("bootstrap") == 1
    victim = sorted(before)[2]
    zone = next(i.zone for i in m.live() if i.hostname == victim)
    client(gce, "Instances").delete_unary(project="test-project", zone=zone, instance=victim)  # behind bakery's back
    after = _wait_voters("the repaired master a healthy voter again", m, group, 180,
                         lambda v: victim in v and v[victim].id != before[victim].id)
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
    assert fewest >= 3 and sampler.samples > 10, f"at one moment: {sampler.worst}"
    assert sorted(_wait_voters("3 healthy voters after the rollout", m, group, 60)) == sorted(r.replacement for r in done)
    migs = {g["name"]: g for g in gce.resources("instanceGroupManagers")}
    assert sorted(g["targetSize"] for g in migs.values()) == [1, 1, 1]
    images = {i["disks"][0]["initializeParams"]["sourceImage"].rsplit("/", 1)[-1] for i in gce.resources("instances")}
    assert images == {GCP_IMAGE2}
    store = provider.store()
    assert load_journal(store, "demo") is None and backup.list_backups(store, "demo")
    with m.client(list(group.etcd_endpoints().values())) as e:
        stored = {kv.key.decode() for kv in e.range("/w/", prefix=True)}
    assert len(writer.acked) > 20 and not set(writer.acked) - stored


def test_aws_bakery_rollout_command_plans_then_surges(aws: tuple[Any, Machines, Moto, Env], monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`bakery rollout --dry-run`, then `bakery rollout`, as a user runs them (inside the VPC:
    here, beside the loopback machines). The command's AWS clients are the harness's (moto
    has no lifecycle actions; tests/moto_server.py plays Auto Scaling's side of them)."""
    from bakery import cli
    from bakery.providers.aws import provider as aws_provider
    from tests.moto_server import Calls

    provider, m, moto, env = aws  # noqa: F811
    before = _formed(provider, m)
    monkeypatch.setattr(aws_provider, "default_factory", lambda *a, **k: moto.factory(Calls()))
    args = ["-f", str(env.spec_file), "-o", str(env.build)]
    capsys.readouterr()
    assert cli.main(["rollout", *args, "--dry-run"]) == 0
    plan_lines = capsys.readouterr().out.splitlines()
    assert len(plan_lines) == 3 and all(f"replace {n}" in " ".join(plan_lines) for n in before)
    assert "(leader, last)" in plan_lines[-1]
    assert set(provider.group().members()) == set(before)  # a dry run changes nothing
    assert cli.main(["rollout", *args, "--timeout", "180"]) == 0
    out = capsys.readouterr().out
    assert all(f"{n}: replaced in" in out for n in before), out
    _wait_voters("3 new healthy voters", m, provider.group(), 120, lambda v: not set(v) & set(before))
