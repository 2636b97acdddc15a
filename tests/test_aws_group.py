"""aws.masters: asg through the real boto3 client against moto's server (tests/moto_server.py).

The group is read back as Auto Scaling reports it: sizes, subnets, target group, health
check type and grace, suspended processes, lifecycle hook, launch template version.
moto is kinder than AWS in places (a second CreateAutoScalingGroup silently replaces the
first; a delete without ForceDelete takes a group that has instances; no lifecycle
actions at all): the harness's AsgRules / Lifecycle answer as AWS documents, and the
first tests here show they do, so the rest cannot pass on moto's kindness.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bakery import spec as spec_mod
from bakery import state
from bakery.errors import ProviderError, SpecError
from bakery.providers.aws import create, group, launch_template
from bakery.providers.aws.common import TAG_CLUSTER
from tests.moto_server import (  # noqa: F401
    SPEC,
    Calls,
    Interrupted,
    Moto,
    group_render,
    make_spec,
    moto,
    moto_session,
    record_ami,
)
from tests.test_aws import counts, fresh, inventory
from tests.test_aws_cli import aws_env  # noqa: F401

EXPECTED = {"instance": 3, "vpc": 1, "subnet": 3, "security-group": 3, "internet-gateway": 1, "vpc-endpoint": 4, "load-balancer": 1,
            "target-group": 1, "listener": 1, "launch-template": 1, "iam-role": 1, "instance-profile": 1}


@pytest.fixture
def cluster(moto: Moto, tmp_path: Path):  # noqa: F811
    spec = make_spec(group=True)
    paths = state.paths(spec.name, tmp_path / "build")
    fresh(moto, paths)
    calls = Calls()
    events: list[tuple[str, ...]] = []

    def provider(s: spec_mod.ClusterSpec = spec, c: Calls = calls, **options: Any):
        options = {"poll_interval": 0.05, "wait_timeout": 10, **options}
        return create(s, paths, lambda *e: events.append(e), client_factory=moto.factory(c), **options)

    return spec, paths, calls, provider, events


def the_group(moto: Moto, cluster_name: str = "demo") -> dict[str, Any]:  # noqa: F811
    (g,) = moto.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[f"{cluster_name}-masters"])["AutoScalingGroups"]
    return g


def group_inventory(moto: Moto, cluster_name: str = "demo") -> dict[str, list[str]]:  # noqa: F811
    groups = moto.client("autoscaling").describe_auto_scaling_groups(
        Filters=[{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster_name]}])["AutoScalingGroups"]
    return {**inventory(moto, cluster_name), "autoscaling-group": sorted(g["AutoScalingGroupName"] for g in groups)}


# -- the harness is as strict as Auto Scaling -------------------------------------------------


def test_the_harness_answers_auto_scalings_documented_errors(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, _, _, provider, _ = cluster
    provider().up(group_render(spec))
    asg = moto.client("autoscaling")
    g = the_group(moto)

    def code(call: Any) -> str:
        with pytest.raises(ClientError) as e:
            call()
        return str(e.value.response["Error"]["Code"])

    again = {"AutoScalingGroupName": "demo-masters", "MinSize": 1, "MaxSize": 1,
             "LaunchTemplate": {"LaunchTemplateId": g["LaunchTemplate"]["LaunchTemplateId"]},
             "VPCZoneIdentifier": g["VPCZoneIdentifier"]}
    assert code(lambda: asg.create_auto_scaling_group(**again)) == "AlreadyExists"  # moto would replace the group
    assert code(lambda: asg.delete_auto_scaling_group(AutoScalingGroupName="demo-masters")) == "ResourceInUse"
    assert code(lambda: asg.put_lifecycle_hook(AutoScalingGroupName="nope", LifecycleHookName="h",
                                               LifecycleTransition=group.TERMINATING)) == "ValidationError"
    assert code(lambda: asg.put_lifecycle_hook(AutoScalingGroupName="demo-masters", LifecycleHookName="h",
                                               LifecycleTransition=group.TERMINATING, HeartbeatTimeout=10)) == "ValidationError"
    assert code(lambda: asg.suspend_processes(AutoScalingGroupName="nope", ScalingProcesses=["AZRebalance"])) == "ValidationError"
    iid = g["Instances"][0]["InstanceId"]
    assert code(lambda: asg.complete_lifecycle_action(AutoScalingGroupName="demo-masters", LifecycleHookName=group.LEAVE_HOOK,
                                                      InstanceId=iid, LifecycleActionResult="CONTINUE")) == "ValidationError"
    assert len(the_group(moto)["Instances"]) == 3  # nothing above changed the group


# -- up ---------------------------------------------------------------------------------------


def test_up_creates_the_group_with_exactly_those_settings(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, paths, _, provider, events = cluster
    sent: list[bytes] = []
    result = provider().up(group_render(spec, sink=sent), wait=True)

    assert counts(group_inventory(moto)) == {**EXPECTED, "autoscaling-group": 1}
    ec2, elbv2 = moto.client("ec2"), moto.client("elbv2")
    inv = inventory(moto, spec.name)
    g = the_group(moto)
    assert (g["MinSize"], g["MaxSize"], g["DesiredCapacity"]) == (3, 3, 3)
    assert g["HealthCheckType"] == "EC2" and g["HealthCheckGracePeriod"] == 900
    assert sorted(g["VPCZoneIdentifier"].split(",")) == inv["subnet"]
    zones = {s["SubnetId"]: s["AvailabilityZone"] for s in ec2.describe_subnets(SubnetIds=inv["subnet"])["Subnets"]}
    assert sorted(zones.values()) == ["us-east-1a", "us-east-1b", "us-east-1c"]
    assert g["TargetGroupARNs"] == inv["target-group"]
    assert [p["ProcessName"] for p in g["SuspendedProcesses"]] == ["AZRebalance"]
    (tid,) = inv["launch-template"]
    assert g["LaunchTemplate"]["LaunchTemplateId"] == tid and g["LaunchTemplate"]["Version"] == "1"
    tags = {t["Key"]: t for t in g["Tags"]}
    assert tags[TAG_CLUSTER]["Value"] == "demo" and tags[TAG_CLUSTER]["PropagateAtLaunch"] is True
    (hook,) = moto.client("autoscaling").describe_lifecycle_hooks(AutoScalingGroupName="demo-masters")["LifecycleHooks"]
    assert (hook["LifecycleHookName"], hook["LifecycleTransition"], hook["HeartbeatTimeout"], hook["DefaultResult"]) == (
        "bakery-leave", "autoscaling:EC2_INSTANCE_TERMINATING", group.LEAVE_HEARTBEAT, "CONTINUE")

    # every instance boots the template's one small user-data, in the cluster's subnets, tagged
    assert launch_template.user_data_of(ec2, tid, "1") == sent[-1]
    members = [i["InstanceId"] for i in g["Instances"]]
    assert sorted(members) == inv["instance"]
    for r in ec2.describe_instances(InstanceIds=members)["Reservations"]:
        for i in r["Instances"]:
            assert i["SubnetId"] in zones
            ud = ec2.describe_instance_attribute(InstanceId=i["InstanceId"], Attribute="userData")["UserData"]["Value"]
            assert base64.b64decode(ud) == sent[-1]
            assert {"Key": TAG_CLUSTER, "Value": "demo"} in i["Tags"]
    targets = elbv2.describe_target_health(TargetGroupArn=inv["target-group"][0])["TargetHealthDescriptions"]
    assert sorted(t["Target"]["Id"] for t in targets) == sorted(members)
    assert ("targets", "healthy", "3/3 healthy") in events
    assert ("autoscaling-group demo-masters", "in service", "3/3 in service") in events
    assert result.drift == []
    recorded = state.load(paths)["aws"]
    assert recorded["autoscaling_group"] == "demo-masters" and recorded["launch_template"] == {"id": tid, "version": 1}
    assert "instances" not in recorded  # no plain master was started


def test_second_up_changes_nothing_and_a_new_image_makes_a_new_version(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, paths, calls, provider, _ = cluster
    provider().up(group_render(spec))
    before = group_inventory(moto)
    calls.clear()
    result = provider().up(group_render(spec))
    assert calls.mutating == [] and result.created == []
    assert "CreateAutoScalingGroup" not in calls.ops() and "DescribeAutoScalingGroups" in calls.ops()
    assert group_inventory(moto) == before

    # a new bake: the template gets version 2 and the group is pointed at it, nothing else
    record_ami(paths, moto.register_ami())
    calls.clear()
    result = provider().up(group_render(spec))
    assert [op for op in calls.mutating] == ["CreateLaunchTemplateVersion", "ModifyLaunchTemplate", "UpdateAutoScalingGroup"]
    assert the_group(moto)["LaunchTemplate"]["Version"] == "2"
    assert group_inventory(moto)["autoscaling-group"] == ["demo-masters"]
    # the running masters came from version 1: drift, for a rollout to replace them
    # (AWS also reports each instance's template version; moto reports the group's current one)
    assert len(result.drift) == 3 and all("wanted ami-" in d and "rollout" in d for d in result.drift)

    # a changed spec (grace) updates only that field
    slower = make_spec(group=True, extra="")
    slower = spec_mod.parse(SPEC.format(name="demo", masters=3).replace(
        "  masters: instances\n", "  masters: asg\n  health_check_grace_seconds: 1200\n"))
    calls.clear()
    provider(slower).up(group_render(slower))
    assert [op for op in calls.mutating] == ["UpdateAutoScalingGroup"]
    assert the_group(moto)["HealthCheckGracePeriod"] == 1200


def test_up_interrupted_after_each_create_converges_with_one_group(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, paths, calls, provider, _ = cluster
    provider().up(group_render(spec))
    reference = counts(group_inventory(moto))
    total = len(calls.mutating)
    tail = calls.mutating[-5:]
    assert {"CreateLaunchTemplate", "CreateAutoScalingGroup", "SuspendProcesses", "PutLifecycleHook"} <= set(tail)
    for n in range(total - 5, total):  # the group's calls come last; the others are test_aws.py's
        fresh(moto, paths)
        faulty, again = Calls(fail_after=n), Calls()
        with pytest.raises(Interrupted):
            provider(c=faulty).up(group_render(spec))
        provider(c=again).up(group_render(spec))
        assert counts(group_inventory(moto)) == reference, f"after an interruption at mutating call {n}"
        # the rerun made only what the interrupted run had not: never a second group
        assert len(faulty.completed) + len(again.completed) == total, (n, faulty.completed, again.completed)
        g = the_group(moto)
        assert [p["ProcessName"] for p in g["SuspendedProcesses"]] == ["AZRebalance"]
        assert len(moto.client("autoscaling").describe_lifecycle_hooks(AutoScalingGroupName="demo-masters")["LifecycleHooks"]) == 1


def test_a_group_of_that_name_that_is_not_the_clusters_is_refused(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, _, _, provider, _ = cluster
    ec2 = moto.client("ec2")
    tid = ec2.create_launch_template(LaunchTemplateName="someone", LaunchTemplateData={"ImageId": moto.register_ami()}
                                     )["LaunchTemplate"]["LaunchTemplateId"]
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    moto.client("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName="demo-masters", MinSize=0, MaxSize=0, LaunchTemplate={"LaunchTemplateId": tid},
        VPCZoneIdentifier=subnet)
    with pytest.raises(ProviderError, match="demo-masters exists but is not tagged bakery:cluster=demo"):
        provider().up(group_render(spec))


# -- the spec ---------------------------------------------------------------------------------


def test_asg_means_store_bootstrap_and_refuses_fixed_address_modes_and_embedded() -> None:
    base = SPEC.format(name="demo", masters=3).replace("  masters: instances\n", "  masters: asg\n")
    assert spec_mod.parse(base).etcd.bootstrap == "store"
    assert spec_mod.parse(base + "etcd: {bootstrap: discovery-v3, discovery_endpoints: ['https://d:2379']}\n"
                          "etcd_version: 3.6.0\n").etcd.bootstrap == "discovery-v3"
    assert spec_mod.parse(base.replace("  masters: asg\n", "")).aws.masters == "asg"  # the default  # type: ignore[union-attr]
    assert make_spec().etcd.bootstrap == "static"  # instances keep today's default
    for extra, key in (("etcd: {bootstrap: static}\n", "etcd.bootstrap"), ("etcd: {bootstrap: dns-srv, srv_domain: x.io}\n", "etcd.bootstrap"),
                       ("user_data: embedded\n", "user_data")):
        with pytest.raises(SpecError) as e:
            spec_mod.parse(base + extra)
        (line,) = e.value.lines()
        assert f" {key}: " in line and "aws.masters: asg" in line and "aws.masters: instances" in line, line
    described = spec_mod.json_schema()["$defs"]["AwsSpec"]["properties"]
    assert "replaced by the group" in described["masters"]["description"]
    assert "ELB health check" in described["health_check_grace_seconds"]["description"]
    with pytest.raises(SpecError):
        spec_mod.parse(base.replace("  masters: asg\n", "  masters: asg\n  health_check_grace_seconds: 10\n"))


# -- self-healing -----------------------------------------------------------------------------


def test_a_master_terminated_behind_bakerys_back_is_replaced_from_the_template(moto: Moto, cluster: Any) -> None:  # noqa: F811
    """EC2 TerminateInstances on a group member (not through Auto Scaling): moto's group
    notices and starts a replacement at once from the launch template (AWS does the same
    after its next health check)."""
    spec, _, _, provider, _ = cluster
    sent: list[bytes] = []
    provider().up(group_render(spec, sink=sent))
    ec2 = moto.client("ec2")
    before = [i["InstanceId"] for i in the_group(moto)["Instances"]]
    victim = before[1]
    ec2.terminate_instances(InstanceIds=[victim])
    after = [i["InstanceId"] for i in the_group(moto)["Instances"]]
    assert len(after) == 3 and victim not in after
    (new,) = set(after) - set(before)
    ud = ec2.describe_instance_attribute(InstanceId=new, Attribute="userData")["UserData"]["Value"]
    assert base64.b64decode(ud) == sent[-1]  # the same small user-data: it joins by itself
    tid = the_group(moto)["LaunchTemplate"]["LaunchTemplateId"]
    assert launch_template.user_data_of(ec2, tid, "1") == sent[-1]
    status = provider().status()
    assert sorted(n.id for n in status.nodes) == sorted(after)  # type: ignore[type-var]
    assert all(n.state == "InService" and n.zone and n.address for n in status.nodes)
    # and a rerun of `up` sees a complete group: nothing to do
    assert provider(c=Calls()).up(group_render(spec)).created == []


def test_status_lists_the_groups_instances(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, _, _, provider, _ = cluster
    assert provider().status().nodes == []
    provider().up(group_render(spec), wait=True)
    status = provider().status()
    members = {i["InstanceId"]: i for i in the_group(moto)["Instances"]}
    ec2 = {i["InstanceId"]: i for r in moto.client("ec2").describe_instances(InstanceIds=list(members))["Reservations"]
           for i in r["Instances"]}
    assert len(status.nodes) == 3
    for n in status.nodes:
        assert n.id in members and n.zone == members[n.id]["AvailabilityZone"]
        assert n.address == ec2[n.id]["PrivateIpAddress"] and n.name == ec2[n.id]["PrivateDnsName"].split(".")[0]
        assert n.state == "InService" and n.health == "healthy (healthy)"
        assert n.extra["launch_template_version"] == "1"


# -- down -------------------------------------------------------------------------------------


def test_down_deletes_the_group_first_and_everything_else(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, paths, calls, provider, _ = cluster
    provider().up(group_render(spec))
    deleted = provider(c=calls).down()
    assert all(v == [] for v in group_inventory(moto).values())
    assert "autoscaling-group demo-masters (3 instances)" in deleted
    # The group goes first of what it uses (launch template, target group, security
    # groups, subnets): its deletion is waited for before any of them is asked to go. The
    # load balancer does not depend on the group and is deleted alongside it, in any order.
    ops = calls.mutating
    group_deleted = ops.index("DeleteAutoScalingGroup")
    used = [i for i, op in enumerate(ops)
            if op in ("DeleteLaunchTemplate", "DeleteTargetGroup", "DeleteSecurityGroup", "DeleteSubnet")]
    assert used and min(used) > group_deleted, ops
    assert ops.index("DeleteLoadBalancer") < ops.index("DeleteTargetGroup")  # a target group in use cannot go
    assert "aws" not in state.load(paths)
    calls.clear()
    assert provider(c=calls).down() == [] and calls.mutating == []


def test_down_interrupted_then_rerun_leaves_nothing(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, paths, _, provider, _ = cluster
    provider().up(group_render(spec))
    probe = Calls()
    provider(c=probe).down()
    total = len(probe.completed)
    for n in sorted({1, 2, total // 2, total - 1}):
        fresh(moto, paths)
        provider().up(group_render(spec))
        with pytest.raises(Interrupted):
            provider(c=Calls(fail_after=n)).down()
        if n == 1:  # stopped right after DeleteAutoScalingGroup: the rest is left to the rerun
            assert group_inventory(moto)["autoscaling-group"] == [] and group_inventory(moto)["vpc"]
        provider(c=Calls()).down()
        assert all(v == [] for v in group_inventory(moto).values()), f"after an interruption at delete {n}"


# -- the CLI, with the real render ------------------------------------------------------------


def test_bakery_up_status_down_with_examples_aws_asg(aws_env: Moto, repo: Path, tmp_path: Path,  # noqa: F811
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`bakery up` of examples/aws-asg.yaml (real PKI, render and publish): the launch
    template holds the cluster's one small user-data, secret-free, and the group's
    instances boot it; a second `up` creates nothing; `down` leaves nothing."""
    from bakery import cli

    spec_file, build = str(repo / "examples" / "aws-asg.yaml"), tmp_path / "build"
    paths = state.paths("prod-asg", build)
    paths.base.mkdir(parents=True)
    record_ami(paths, aws_env.register_ami())
    args = ["-f", spec_file, "-o", str(build)]
    assert cli.main(["up", *args, "--wait"]) == 0
    assert "healthy" in capsys.readouterr().err
    ec2 = aws_env.client("ec2")
    g = the_group(aws_env, "prod-asg")
    sent = launch_template.user_data_of(ec2, g["LaunchTemplate"]["LaunchTemplateId"], g["LaunchTemplate"]["Version"])
    small = (paths.node("prod-asg-master-0") / "user-data").read_bytes()
    assert len(sent) <= 4096 and b"PRIVATE KEY" not in sent and b"bakery-node.service" in sent
    for i in g["Instances"]:
        ud = ec2.describe_instance_attribute(InstanceId=i["InstanceId"], Attribute="userData")["UserData"]["Value"]
        assert base64.b64decode(ud) == sent
    from bakery.render.userdata import decode

    assert decode(sent, "plain") == small
    assert cli.main(["up", *args]) == 0
    assert "0 created" in capsys.readouterr().out
    assert cli.main(["status", *args]) == 0
    out = capsys.readouterr().out
    assert out.count("InService") == 3 and "prod-asg-master-0" not in out
    # `bakery launch-template` writes the same document `up` put in the group's template
    assert cli.main(["launch-template", *args]) == 0
    assert f"version {g['LaunchTemplate']['Version']} (default)" in capsys.readouterr().out
    assert cli.main(["down", *args]) == 0
    assert "deleted autoscaling-group prod-asg-masters" in capsys.readouterr().out
    assert all(v == [] for v in group_inventory(aws_env, "prod-asg").values())
