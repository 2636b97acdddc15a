"""The AWS provider through the real boto3 client against moto's server on 127.0.0.1.

Clients are injected (`client_factory`) with botocore event hooks that count calls and
inject faults; nothing in bakery is patched. moto ignores ClientToken and accepts a
duplicate LB name, so every "no duplicate" seen here is bakery's find-by-tag at work.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from typing import Any

import pytest

from bakery import spec as spec_mod
from bakery import state, topology
from bakery.errors import ProviderError, RenderError, SpecError
from bakery.providers.aws import create
from bakery.providers.aws.common import TAG_CLUSTER
from bakery.providers.base import LBAddress, RenderedNode
from bakery.render.userdata import UserData, decode
from tests.moto_server import (  # noqa: F401
    SPEC,
    Calls,
    Interrupted,
    Moto,
    fixed_render,
    make_spec,
    moto,
    moto_session,
    record_ami,
)


def fresh(moto: Moto, paths: state.ClusterPaths) -> None:  # noqa: F811
    """A clean moto and build folder, with an AMI recorded as `bakery bake` would."""
    moto.reset()
    paths.state.unlink(missing_ok=True)
    paths.base.mkdir(parents=True, exist_ok=True)
    record_ami(paths, moto.register_ami())


@pytest.fixture
def cluster(moto: Moto, tmp_path: Path):  # noqa: F811
    """(spec, paths, calls, provider factory) for a 3-master cluster on a clean moto."""
    spec = make_spec()
    paths = state.paths(spec.name, tmp_path / "build")
    fresh(moto, paths)
    calls = Calls()
    events: list[tuple[str, str, str]] = []

    def provider(s: spec_mod.ClusterSpec = spec, c: Calls = calls, **options: Any):
        options = {"poll_interval": 0.05, "wait_timeout": 10, **options}
        return create(s, paths, lambda *e: events.append(e), client_factory=moto.factory(c), **options)

    return spec, paths, calls, provider, events


def inventory(moto: Moto, cluster_name: str) -> dict[str, list[str]]:  # noqa: F811
    """Every resource tagged with the cluster, by kind (ids sorted)."""
    ec2, elbv2 = moto.client("ec2"), moto.client("elbv2")
    f = [{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster_name]}]
    live = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    lbs = elbv2.describe_load_balancers()["LoadBalancers"]
    tgs = elbv2.describe_target_groups()["TargetGroups"]
    arns = [x["LoadBalancerArn"] for x in lbs] + [x["TargetGroupArn"] for x in tgs]
    tagged = set()
    if arns:
        for d in elbv2.describe_tags(ResourceArns=arns)["TagDescriptions"]:
            if any(t["Key"] == TAG_CLUSTER and t["Value"] == cluster_name for t in d["Tags"]):
                tagged.add(d["ResourceArn"])
    ours_lb = [x["LoadBalancerArn"] for x in lbs if x["LoadBalancerArn"] in tagged]
    return {
        "instance": sorted(i["InstanceId"] for r in ec2.describe_instances(Filters=f + live)["Reservations"] for i in r["Instances"]),
        "vpc": sorted(v["VpcId"] for v in ec2.describe_vpcs(Filters=f)["Vpcs"]),
        "subnet": sorted(s["SubnetId"] for s in ec2.describe_subnets(Filters=f)["Subnets"]),
        "security-group": sorted(g["GroupId"] for g in ec2.describe_security_groups(Filters=f)["SecurityGroups"]),
        "internet-gateway": sorted(g["InternetGatewayId"] for g in ec2.describe_internet_gateways(Filters=f)["InternetGateways"]),
        "load-balancer": sorted(ours_lb),
        "target-group": sorted(x["TargetGroupArn"] for x in tgs if x["TargetGroupArn"] in tagged),
        "listener": sorted(li["ListenerArn"] for a in ours_lb for li in elbv2.describe_listeners(LoadBalancerArn=a)["Listeners"]),
        "vpc-endpoint": sorted(e["VpcEndpointId"] for e in ec2.describe_vpc_endpoints(Filters=f)["VpcEndpoints"]
                               if e["State"].lower() not in ("deleted", "deleting")),
        "launch-template": sorted(t["LaunchTemplateId"] for t in ec2.describe_launch_templates(Filters=f)["LaunchTemplates"]),
        **iam_inventory(moto, cluster_name),
    }


def iam_inventory(moto: Moto, cluster_name: str) -> dict[str, list[str]]:  # noqa: F811
    """The masters' role and instance profile (the store's bucket outlives `down`: not listed)."""
    iam = moto.client("iam")
    ours = {"Key": TAG_CLUSTER, "Value": cluster_name}
    roles = [r["RoleName"] for r in iam.list_roles(PathPrefix="/bakery/")["Roles"]
             if ours in iam.get_role(RoleName=r["RoleName"])["Role"].get("Tags", [])]
    profiles = [p["InstanceProfileName"] for p in iam.list_instance_profiles(PathPrefix="/bakery/")["InstanceProfiles"]
                if ours in p.get("Tags", [])]
    return {"iam-role": sorted(roles), "instance-profile": sorted(profiles)}


def counts(inv: dict[str, list[str]]) -> dict[str, int]:
    return {k: len(v) for k, v in inv.items()}


# security groups: masters, api, the interface endpoints'; endpoints: s3 (gateway), ec2, autoscaling, sts
EXPECTED_3 = {"instance": 3, "vpc": 1, "subnet": 3, "security-group": 3, "internet-gateway": 1, "vpc-endpoint": 4,
              "load-balancer": 1, "target-group": 1, "listener": 1, "launch-template": 0, "iam-role": 1,
              "instance-profile": 1}


def test_fresh_up_creates_exactly_the_cluster(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, paths, _, provider, _ = cluster
    plain: dict[str, bytes] = {}
    result = provider().up(fixed_render(spec, sink=plain))

    inv = inventory(moto, spec.name)
    assert counts(inv) == EXPECTED_3
    ec2, elbv2 = moto.client("ec2"), moto.client("elbv2")
    lb = elbv2.describe_load_balancers(LoadBalancerArns=inv["load-balancer"])["LoadBalancers"][0]
    assert lb["Type"] == "network" and lb["Scheme"] == "internet-facing"
    assert result.endpoint == f"https://{lb['DNSName']}:6443"
    plan = topology.plan(spec, lb_dns_names=(lb["DNSName"],))
    instances = {i["InstanceId"]: i for r in ec2.describe_instances(InstanceIds=inv["instance"])["Reservations"]
                 for i in r["Instances"]}
    by_node = {next(t["Value"] for t in i["Tags"] if t["Key"] == "bakery:node"): i for i in instances.values()}
    assert sorted(by_node) == [n.name for n in plan.nodes]
    for node in plan.nodes:
        inst = by_node[node.name]
        assert inst["PrivateIpAddress"] == node.address
        assert inst["Placement"]["AvailabilityZone"] == node.zone
        assert inst["MetadataOptions"]["HttpTokens"] == "required"
        assert inst["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
        sent = base64.b64decode(ec2.describe_instance_attribute(InstanceId=inst["InstanceId"], Attribute="userData")["UserData"]["Value"])
        assert decode(sent, "plain") == plain[node.name]
        assert plan.lb.endpoint.encode() in plain[node.name]  # rendered after the LB existed
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert tags["Name"] == node.name and tags[TAG_CLUSTER] == spec.name
        volume_ids = [m["Ebs"]["VolumeId"] for m in inst["BlockDeviceMappings"]]
        assert all(v["Encrypted"] for v in ec2.describe_volumes(VolumeIds=volume_ids)["Volumes"])
    assert base64.b64decode(ec2.describe_instance_attribute(
        InstanceId=by_node["demo-master-1"]["InstanceId"], Attribute="userData")["UserData"]["Value"])[:2] == b"\x1f\x8b"
    targets = elbv2.describe_target_health(TargetGroupArn=inv["target-group"][0])["TargetHealthDescriptions"]
    assert sorted(t["Target"]["Id"] for t in targets) == inv["instance"]

    groups = {g["GroupName"]: g for g in ec2.describe_security_groups(GroupIds=inv["security-group"])["SecurityGroups"]}
    masters_ports = {(p["FromPort"], p["ToPort"]) for p in groups["demo-masters"]["IpPermissions"]}
    assert masters_ports == {(2379, 2380), (10250, 10250)}
    assert all(g["GroupId"] == groups["demo-masters"]["GroupId"]
               for p in groups["demo-masters"]["IpPermissions"] for g in p["UserIdGroupPairs"])
    assert {r["CidrIp"] for p in groups["demo-api"]["IpPermissions"] for r in p["IpRanges"]} == {"0.0.0.0/0", "10.240.0.0/16"}

    recorded = state.load(paths)["aws"]
    assert recorded["vpc"]["id"] == inv["vpc"][0]
    assert sorted(recorded["subnets"].values()) == inv["subnet"]
    assert sorted(recorded["security_groups"].values()) == inv["security-group"]
    assert sorted(recorded["instances"].values()) == inv["instance"]
    assert recorded["load_balancer"]["arn"] == inv["load-balancer"][0]
    assert recorded["target_group"] == inv["target-group"][0]
    assert [recorded["listener"]] == inv["listener"]
    assert recorded["internet_gateway"] == inv["internet-gateway"][0]
    assert state.load(paths)["lb"]["dns_names"] == [lb["DNSName"]]


def test_second_up_makes_no_create_call(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, _, calls, provider, _ = cluster
    provider().up(fixed_render(spec))
    before = inventory(moto, spec.name)
    calls.clear()
    result = provider().up(fixed_render(spec))
    assert calls.mutating == []
    assert calls.ops(), "the second up still looked everything up"
    assert result.created == [] and result.drift == []
    assert inventory(moto, spec.name) == before


def test_up_interrupted_after_each_create_converges(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, paths, calls, provider, _ = cluster
    provider().up(fixed_render(spec))
    reference = counts(inventory(moto, spec.name))
    total = len(calls.mutating)
    assert total >= 15
    for n in range(1, total + 1):
        fresh(moto, paths)
        faulty = Calls(fail_after=n)
        with pytest.raises(Interrupted):
            provider(c=faulty).up(fixed_render(spec))
        assert len(faulty.completed) >= n  # others may have been in flight on other threads
        again = Calls()
        provider(c=again).up(fixed_render(spec))
        assert counts(inventory(moto, spec.name)) == reference, f"after an interruption at mutating call {n}"
        # the rerun created only what the interrupted run had not
        assert len(faulty.completed) + len(again.completed) == total, (n, faulty.completed, again.completed)


def test_down_deletes_exactly_the_cluster(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, paths, calls, provider, _ = cluster
    ec2, elbv2 = moto.client("ec2"), moto.client("elbv2")
    # Someone else's resources, some with names like ours: down must not touch them.
    other_vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    other_subnet = ec2.create_subnet(VpcId=other_vpc, CidrBlock="10.9.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    other_sg = ec2.create_security_group(GroupName="demo-masters", Description="not bakery's", VpcId=other_vpc)["GroupId"]
    other_instance = ec2.run_instances(ImageId=moto.register_ami(), MinCount=1, MaxCount=1, SubnetId=other_subnet,
                                       TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": TAG_CLUSTER, "Value": "other"}]}]
                                       )["Instances"][0]["InstanceId"]
    other_lb = elbv2.create_load_balancer(Name="other-api", Subnets=[other_subnet], Type="network")["LoadBalancers"][0]["LoadBalancerArn"]
    provider().up(fixed_render(spec))
    created = inventory(moto, spec.name)

    deleted = provider().down()
    assert all(v == [] for v in inventory(moto, spec.name).values())
    assert len(deleted) == sum(len(v) for k, v in created.items() if k != "listener")  # listeners go with their LB
    assert ec2.describe_vpcs(VpcIds=[other_vpc])["Vpcs"]
    assert ec2.describe_subnets(SubnetIds=[other_subnet])["Subnets"]
    assert ec2.describe_security_groups(GroupIds=[other_sg])["SecurityGroups"]
    assert ec2.describe_instances(InstanceIds=[other_instance])["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"
    assert elbv2.describe_load_balancers(LoadBalancerArns=[other_lb])["LoadBalancers"]
    assert "aws" not in state.load(paths) and "lb" not in state.load(paths)

    calls.clear()
    assert provider().down() == []
    assert calls.mutating == []


def test_oversize_user_data_is_refused_before_any_api_call(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, _, calls, provider, _ = cluster
    provider().up(fixed_render(spec))
    blob = random.Random(0).randbytes(17_000)  # incompressible; moto would take it

    def oversize(lb: LBAddress) -> dict[str, RenderedNode]:
        plan = topology.plan(spec, lb_dns_names=lb.dns_names)
        return {n.name: RenderedNode(n.name, n.address, n.zone, UserData(blob, blob, "plain", 16_384)) for n in plan.nodes}

    calls.clear()
    with pytest.raises(RenderError) as e:
        provider().up(oversize)
    assert calls.log == []  # the LB's names were in state.json: rendered and checked first
    assert "17,000 bytes" in "\n".join(e.value.lines())

    fresh(moto, cluster[1])
    calls.clear()
    with pytest.raises(RenderError):
        provider().up(oversize)  # a new cluster: the LB must exist before rendering; no master is started
    assert not any(op == "RunInstances" for op in calls.ops())


def test_changed_user_data_is_reported_as_drift_not_replaced(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, _, calls, provider, _ = cluster
    provider().up(fixed_render(spec, "v1"))
    before = inventory(moto, spec.name)
    calls.clear()
    result = provider().up(fixed_render(spec, "v2"))
    assert calls.mutating == []
    assert inventory(moto, spec.name) == before
    assert len(result.drift) == 3
    assert all("user-data differs" in d and "rollout" in d for d in result.drift)


def test_wait_reports_healthy_targets(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, _, _, provider, events = cluster
    provider().up(fixed_render(spec), wait=True)
    assert ("targets", "healthy", "3/3 healthy") in events


def test_status_lists_masters_and_the_endpoint(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, _, _, provider, _ = cluster
    assert [n.state for n in provider().status().nodes] == ["absent"] * 3
    result = provider().up(fixed_render(spec))
    status = provider().status()
    assert status.endpoint == result.endpoint
    plan = topology.plan(spec)
    assert [(n.name, n.address, n.zone, n.state) for n in status.nodes] == [
        (p.name, p.address, p.zone, "running") for p in plan.nodes]
    assert all(n.id and n.id.startswith("i-") and n.image for n in status.nodes)


def test_layout_aws_cannot_hold_is_refused_before_any_call(moto: Moto, cluster: Any, tmp_path: Path) -> None:  # noqa: F811
    _, _, calls, provider, _ = cluster
    shared = spec_mod.parse(SPEC.format(name="demo", masters=3).split("  zones:")[0])  # default zones share one subnet
    with pytest.raises(ProviderError, match="own `subnet:`"):
        provider(shared).up(fixed_render(shared))
    with pytest.raises(SpecError) as e:  # the addresses AWS reserves: refused at parse, naming the key
        make_spec(extra="network: {first_host: 2}\n")
    assert "network.first_host" in str(e.value.problems) and "first_host must be at least 4" in str(e.value.problems)
    assert calls.log == []


def test_missing_credentials_are_one_clear_line(moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("BAKERY_AWS_ENDPOINT_URL", moto.endpoint)
    spec = make_spec()
    with pytest.raises(ProviderError) as e:
        create(spec, state.paths(spec.name, tmp_path), lambda *a: None).status()
    assert e.value.lines() == [e.value.message] and "no credentials" in e.value.message
    assert "AWS_PROFILE" in e.value.message


def test_permission_and_quota_errors_say_what_to_do() -> None:
    from botocore.exceptions import ClientError

    from bakery.providers.aws.clients import describe

    denied = ClientError({"Error": {"Code": "UnauthorizedOperation", "Message": "You are not authorized. "
                                    "Encoded authorization failure message: AAAA" + "B" * 500}}, "RunInstances")
    line = describe(denied, "us-east-1")
    assert "RunInstances" in line and "grant it" in line and "BBBB" not in line and "\n" not in line
    quota = ClientError({"Error": {"Code": "VcpuLimitExceeded", "Message": "You have requested more vCPU"}}, "RunInstances")
    assert "Service Quotas" in describe(quota, "eu-west-1")


def user_vpc(ec2: Any, extra: str = "") -> tuple[str, dict[str, str], spec_mod.ClusterSpec]:
    """A VPC and three subnets of the user's (no path out yet), and a spec naming them."""
    vpc = ec2.create_vpc(CidrBlock="10.240.0.0/16")["Vpc"]["VpcId"]
    subnets = {z: ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.240.{i}.0/24", AvailabilityZone=z)["Subnet"]["SubnetId"]
               for i, z in enumerate(("us-east-1a", "us-east-1b", "us-east-1c"))}
    given = f"aws:\n  vpc_id: {vpc}\n  subnet_ids: {json.dumps(subnets)}\n"
    return vpc, subnets, spec_mod.parse(SPEC.format(name="demo", masters=3).replace("aws:\n", given) + extra)


def main_table(ec2: Any, vpc: str) -> str:
    return ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                              {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]["RouteTableId"]


def give_path(ec2: Any, vpc: str, subnets: dict[str, str], services: tuple[str, ...] = ("ec2", "autoscaling")) -> None:
    """What the user's VPC needs: an S3 gateway endpoint on the subnets' table, interface
    endpoints with private DNS (which EC2 only creates once the VPC resolves DNS hostnames)."""
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    ec2.create_vpc_endpoint(VpcId=vpc, ServiceName="com.amazonaws.us-east-1.s3", VpcEndpointType="Gateway",
                            RouteTableIds=[main_table(ec2, vpc)])
    for svc in services:
        ec2.create_vpc_endpoint(VpcId=vpc, ServiceName=f"com.amazonaws.us-east-1.{svc}", VpcEndpointType="Interface",
                                SubnetIds=list(subnets.values()), PrivateDnsEnabled=True)


def test_user_vpc_without_a_path_is_refused_naming_the_subnet_and_what_is_missing(moto: Moto, cluster: Any) -> None:  # noqa: F811
    _, _, calls, provider, _ = cluster
    ec2 = moto.client("ec2")
    vpc, subnets, spec = user_vpc(ec2)
    with pytest.raises(ProviderError) as e:
        provider(spec).up(fixed_render(spec))
    assert e.value.exit_code == ProviderError.exit_code
    for zone, sid in subnets.items():
        assert f"aws.subnet_ids.{zone} {sid}" in e.value.message
    assert "S3" in e.value.message and "ec2" in e.value.message and "autoscaling" in e.value.message
    assert "RunInstances" not in calls.mutating
    give_path(ec2, vpc, subnets, services=("ec2",))  # Auto Scaling still unreachable
    with pytest.raises(ProviderError) as e:
        provider(spec).up(fixed_render(spec))
    assert "autoscaling" in e.value.message and "S3" not in e.value.message and "(no interface endpoint" in e.value.message
    assert "RunInstances" not in calls.mutating
    give_path(ec2, vpc, subnets, services=("autoscaling",))
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": False})  # the endpoints' names stop resolving
    with pytest.raises(ProviderError) as e:
        provider(spec).up(fixed_render(spec))
    assert f"private DNS does not resolve: {vpc} has enableDnsHostnames false" in e.value.message
    assert "RunInstances" not in calls.mutating


def test_user_vpc_with_a_nat_default_route_is_accepted_and_discovery_needs_it(moto: Moto, cluster: Any) -> None:  # noqa: F811
    _, _, calls, provider, _ = cluster
    ec2 = moto.client("ec2")
    vpc, subnets, spec = user_vpc(ec2, "kubernetes_version: \"1.36.3\"\netcd:\n  bootstrap: discovery\n  discovery_url: https://discovery.etcd.io/abc\n")
    give_path(ec2, vpc, subnets)
    with pytest.raises(ProviderError, match="discovery service"):
        provider(spec).up(fixed_render(spec))
    eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=subnets["us-east-1a"], AllocationId=eip)["NatGateway"]["NatGatewayId"]
    ec2.create_route(RouteTableId=main_table(ec2, vpc), DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    provider(spec).up(fixed_render(spec))
    assert "RunInstances" in calls.mutating


def test_discovery_in_bakerys_vpc_is_refused_before_any_call(moto: Moto, cluster: Any) -> None:  # noqa: F811
    _, _, calls, provider, _ = cluster
    spec = make_spec(extra="kubernetes_version: \"1.36.3\"\netcd:\n  bootstrap: discovery\n  discovery_url: https://discovery.etcd.io/abc\n")
    with pytest.raises(ProviderError, match=r"etcd\.bootstrap: discovery.*store"):
        provider(spec).up(fixed_render(spec))
    assert calls.mutating == []


def test_bakerys_vpc_gives_masters_a_path_and_down_removes_it(moto: Moto, cluster: Any) -> None:  # noqa: F811
    from tests.cloud_harness import Instance, aws_path

    spec, _, _, provider, _ = cluster
    provider().up(fixed_render(spec))
    ec2 = moto.client("ec2")
    why = aws_path(ec2, "us-east-1")
    inv = inventory(moto, spec.name)
    insts = [i for r in ec2.describe_instances(InstanceIds=inv["instance"])["Reservations"] for i in r["Instances"]]
    assert insts and all(why(Instance(i["InstanceId"], "x", i["PrivateIpAddress"], "z", b"")) is None for i in insts)
    gateway = [e for e in ec2.describe_vpc_endpoints(VpcEndpointIds=inv["vpc-endpoint"])["VpcEndpoints"]
               if e["VpcEndpointType"] == "Gateway"]
    assert [e["ServiceName"] for e in gateway] == ["com.amazonaws.us-east-1.s3"]
    (vpc,) = inv["vpc"]
    for attribute in ("EnableDnsSupport", "EnableDnsHostnames"):  # the interface endpoints' private DNS resolves
        assert ec2.describe_vpc_attribute(VpcId=vpc, Attribute=attribute[0].lower() + attribute[1:])[attribute]["Value"] is True
    assert provider().up(fixed_render(spec)).drift == []  # found, reused
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": False})
    drift = provider().up(fixed_render(spec)).drift
    assert drift == [f"vpc {vpc}: enableDnsHostnames was false (the API endpoints' private DNS needs it): set to true"]
    provider().down()
    assert counts(inventory(moto, spec.name)) == dict.fromkeys(EXPECTED_3, 0)


def test_existing_vpc_and_subnets_are_used_and_never_deleted(moto: Moto, cluster: Any) -> None:  # noqa: F811
    _, _, calls, provider, _ = cluster
    ec2 = moto.client("ec2")
    vpc, subnets, spec = user_vpc(ec2)
    give_path(ec2, vpc, subnets)
    provider(spec).up(fixed_render(spec))
    assert not any(op in calls.mutating for op in ("CreateVpc", "CreateSubnet", "CreateInternetGateway"))
    inv = inventory(moto, spec.name)
    assert counts(inv) == {**EXPECTED_3, "vpc": 0, "subnet": 0, "internet-gateway": 0, "vpc-endpoint": 0, "security-group": 2}
    instances = [i for r in ec2.describe_instances(InstanceIds=inv["instance"])["Reservations"] for i in r["Instances"]]
    assert sorted(i["SubnetId"] for i in instances) == sorted(subnets.values())
    provider(spec).down()
    assert all(v == [] for v in inventory(moto, spec.name).values())
    assert ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"]
    assert len(ec2.describe_subnets(SubnetIds=list(subnets.values()))["Subnets"]) == 3


def test_masters_beyond_the_plan_are_reported_not_removed(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, _, calls, provider, _ = cluster
    five = make_spec(masters=5)
    provider(five).up(fixed_render(five))
    calls.clear()
    result = provider(spec).up(fixed_render(spec))
    assert not any(op.startswith(("Terminate", "Run")) for op in calls.mutating)
    assert len(inventory(moto, spec.name)["instance"]) == 5
    beyond = [d for d in result.drift if "not in the plan" in d]
    assert [d.split()[0] for d in beyond] == ["demo-master-3", "demo-master-4"]


def test_wait_gives_up_after_its_timeout_with_the_unhealthy_targets(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, paths, _, provider, events = cluster
    provider().up(fixed_render(spec))
    stopped = state.load(paths)["aws"]["instances"]["demo-master-2"]
    moto.client("ec2").stop_instances(InstanceIds=[stopped])
    with pytest.raises(ProviderError, match=rf"not healthy after .*{stopped}"):
        provider(wait_timeout=0.5).up(fixed_render(spec), wait=True)
    assert any(e[:2] == ("targets", "waiting") for e in events)


def test_down_interrupted_then_rerun_leaves_nothing(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, paths, _, provider, _ = cluster
    provider().up(fixed_render(spec))
    probe = Calls()
    provider(c=probe).down()
    total = len(probe.completed)
    for n in sorted({1, total // 2, total - 1}):
        fresh(moto, paths)
        provider().up(fixed_render(spec))
        with pytest.raises(Interrupted):
            provider(c=Calls(fail_after=n)).down()
        # What the interruption left for the rerun. A down's number of deletes varies by one
        # or two between runs (its branches run in parallel), so only an interruption early
        # enough is sure to leave work; at the last point the interrupted run may have
        # finished. Either way the rerun must converge on nothing.
        left = any(inventory(moto, spec.name).values())
        rerun = Calls()
        provider(c=rerun).down()
        if n <= total // 2:
            assert left or rerun.completed, f"the down interrupted at delete {n} of {total} left nothing to do"
        assert all(v == [] for v in inventory(moto, spec.name).values()), f"after an interruption at delete {n}"


def test_not_yet_visible_dependencies_are_waited_for(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, _, _, provider, _ = cluster
    # What EC2/ELBv2 answer right after the VPC, subnet, group or instance was created.
    lagging = Calls(not_yet={"CreateSubnet": ("InvalidVpcID.NotFound", 1),
                             "RunInstances": ("InvalidGroup.NotFound", 2),
                             "CreateLoadBalancer": ("InvalidSubnet", 1),
                             "RegisterTargets": ("InvalidTarget", 1)})
    provider(c=lagging).up(fixed_render(spec))
    assert all(times == 0 for _, times in lagging.not_yet.values())
    assert counts(inventory(moto, spec.name)) == EXPECTED_3


def test_second_up_with_the_real_render_makes_zero_create_run_register_calls(moto: Moto, cluster: Any) -> None:  # noqa: F811
    """Counted through botocore's before-call hook: a second `up` (real PKI and render, the
    load balancer's DNS name in the certificate) creates, runs and registers nothing. It
    does not lean on moto: EC2's ClientToken and ELBv2's tolerance of a duplicate
    registration are never needed, because `up` finds by tag and registers only what is missing."""
    from bakery.pipeline import Cluster

    spec, paths, calls, provider, _ = cluster
    provider().up(Cluster(spec, paths, state.load(paths)).render_callback(store=provider().store))
    assert any(op.startswith("RunInstances") for op in calls.ops()) and "RegisterTargets" in calls.ops()
    calls.clear()
    result = provider().up(Cluster(spec, paths, state.load(paths)).render_callback(store=provider().store))
    assert [op for op in calls.ops() if op.startswith(("Create", "Run", "Register"))] == []
    assert calls.mutating == [] and result.created == [] and result.drift == []


def test_tags_are_held_to_ec2s_limits_which_moto_does_not_enforce(moto: Moto) -> None:  # noqa: F811
    """The hook answers as EC2 does; bakery's own tags stay well inside the limits (the
    other tests in this module would fail otherwise)."""
    from botocore.exceptions import ClientError

    calls = Calls()
    ec2 = moto.client("ec2", calls)
    too_many = [{"Key": f"k{i}", "Value": "v"} for i in range(51)]
    for tags, code in ((too_many, "TagLimitExceeded"), ([{"Key": "aws:cluster", "Value": "x"}], "InvalidParameterValue"),
                       ([{"Key": "k", "Value": "v" * 257}], "InvalidParameterValue")):
        with pytest.raises(ClientError) as e:
            ec2.create_vpc(CidrBlock="10.9.0.0/16", TagSpecifications=[{"ResourceType": "vpc", "Tags": tags}])
        assert e.value.response["Error"]["Code"] == code
    assert ec2.describe_vpcs(Filters=[{"Name": "cidr", "Values": ["10.9.0.0/16"]}])["Vpcs"] == []
