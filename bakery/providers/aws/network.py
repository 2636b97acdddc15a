"""The network: VPC, one subnet per zone, internet gateway, and the two security groups.

Either the spec names an existing VPC and subnets (bakery then never creates or deletes
them), or bakery makes a VPC tagged with the cluster. Security groups are always
bakery's: `masters` lets masters reach each other's etcd (2379-2380) and kubelet
(10250) and nothing else; `api` opens the API port to the spec's allowed CIDRs and to
the VPC (the network load balancer's health checks come from inside it).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bakery.errors import ProviderError
from bakery.providers.aws import dag
from bakery.providers.aws.clients import error_code
from bakery.providers.aws.common import TAG_ZONE, cluster_filter, settled, tag_spec
from bakery.providers.base import Ledger
from bakery.spec import ClusterSpec
from bakery.topology import ClusterPlan

# AWS keeps the first four addresses and the last one of every subnet.
AWS_RESERVED_LOW = 4


@dataclass(frozen=True)
class Vpc:
    id: str
    cidr: str
    owned: bool


def zone_subnets(spec: ClusterSpec) -> dict[str, str]:
    """zone name -> subnet CIDR, for the zones the masters use."""
    zones = spec.zones[: spec.masters]
    return {z.name: z.subnet or spec.network.subnet for z in zones}


def check_layout(spec: ClusterSpec, plan: ClusterPlan) -> None:
    """Refuse, before any call, a layout AWS cannot hold."""
    aws = spec.provider_spec
    subnets = zone_subnets(spec)
    made = {z: c for z, c in subnets.items() if z not in aws.subnet_ids}
    nets = [(z, ipaddress.IPv4Network(c)) for z, c in made.items()]
    for i, (za, a) in enumerate(nets):
        for zb, b in nets[i + 1 :]:
            if a.overlaps(b):
                raise ProviderError(
                    f"aws.zones: zones {za} and {zb} both use {a if a == b else f'{a} and {b}'}: an AWS subnet "
                    "lives in one zone, so give each zone its own `subnet:` (e.g. 10.240.0.0/24, 10.240.1.0/24)"
                )
    for net in (n for _, n in nets):
        if net.prefixlen > 28 or net.prefixlen < 16:
            raise ProviderError(f"subnet {net}: AWS subnets are /16 to /28")
    for node in plan.nodes:
        net = ipaddress.IPv4Network(node.subnet)
        host = int(ipaddress.IPv4Address(node.address)) - int(net.network_address)
        if host < AWS_RESERVED_LOW or ipaddress.IPv4Address(node.address) == net.broadcast_address:
            raise ProviderError(
                f"{node.name}: {node.address} is reserved by AWS in {net} (the first four and the last "
                "address): raise network.first_host"
            )
    if not aws.vpc_id and aws.subnet_ids:
        raise ProviderError("aws.subnet_ids needs aws.vpc_id: name the VPC those subnets belong to")


def vpc_cidr(cidrs: list[str]) -> str:
    """The /16 holding every subnet, or the smallest network that does."""
    nets = [ipaddress.IPv4Network(c) for c in cidrs]
    candidate = nets[0].supernet(new_prefix=16) if nets[0].prefixlen >= 16 else nets[0]
    while not all(n.subnet_of(candidate) for n in nets):
        candidate = candidate.supernet()
    if candidate.prefixlen < 16:
        raise ProviderError(f"subnets {', '.join(cidrs)} do not fit in one /16, the largest AWS VPC")
    return str(candidate)


def _one(items: list[dict[str, Any]], what: str, key: str) -> dict[str, Any] | None:
    if len(items) > 1:
        ids = ", ".join(i[key] for i in items)
        raise ProviderError(f"{len(items)} {what}s carry this cluster's tags ({ids}): delete the extra ones, then rerun")
    return items[0] if items else None


def ensure_vpc(ec2: Any, spec: ClusterSpec, ledger: Ledger) -> Vpc:
    aws = spec.provider_spec
    if aws.vpc_id:
        found = ec2.describe_vpcs(VpcIds=[aws.vpc_id])["Vpcs"][0]
        ledger.found("vpc", found["VpcId"])
        return Vpc(found["VpcId"], found["CidrBlock"], owned=False)
    found = _one(ec2.describe_vpcs(Filters=cluster_filter(spec.name, "vpc"))["Vpcs"], "VPC", "VpcId")
    if found:
        ledger.found("vpc", found["VpcId"])
        return Vpc(found["VpcId"], found["CidrBlock"], owned=True)
    cidr = vpc_cidr(list(zone_subnets(spec).values()))
    vpc = ec2.create_vpc(CidrBlock=cidr, TagSpecifications=tag_spec("vpc", spec.name, "vpc", spec.name))["Vpc"]
    ledger.made("vpc", vpc["VpcId"])
    return Vpc(vpc["VpcId"], cidr, owned=True)


def ensure_subnet(ec2: Any, spec: ClusterSpec, vpc: Vpc, zone: str, ledger: Ledger) -> str:
    given = spec.provider_spec.subnet_ids.get(zone)
    if given:
        ledger.found(f"subnet {zone}", given)
        return given
    filters = [*cluster_filter(spec.name, "subnet"), {"Name": f"tag:{TAG_ZONE}", "Values": [zone]},
               {"Name": "vpc-id", "Values": [vpc.id]}]
    found = _one(ec2.describe_subnets(Filters=filters)["Subnets"], "subnet", "SubnetId")
    if found:
        ledger.found(f"subnet {zone}", found["SubnetId"])
        return found["SubnetId"]
    subnet = settled(lambda: ec2.create_subnet(
        VpcId=vpc.id, CidrBlock=zone_subnets(spec)[zone], AvailabilityZone=zone,
        TagSpecifications=tag_spec("subnet", spec.name, "subnet", f"{spec.name}-{zone}", zone=zone),
    ))["Subnet"]
    ledger.made(f"subnet {zone}", subnet["SubnetId"])
    return subnet["SubnetId"]


def ensure_gateway(ec2: Any, spec: ClusterSpec, vpc: Vpc, ledger: Ledger) -> str | None:
    """An internet gateway, attached, for a bakery-made VPC with an internet-facing LB."""
    if not vpc.owned or spec.load_balancer.scheme != "internet-facing":
        return None
    found = _one(ec2.describe_internet_gateways(Filters=cluster_filter(spec.name, "gateway"))["InternetGateways"],
                 "internet gateway", "InternetGatewayId")
    if found:
        igw = found
        ledger.found("internet-gateway", igw["InternetGatewayId"])
    else:
        igw = ec2.create_internet_gateway(
            TagSpecifications=tag_spec("internet-gateway", spec.name, "gateway", spec.name))["InternetGateway"]
        ledger.made("internet-gateway", igw["InternetGatewayId"])
    gid = igw["InternetGatewayId"]
    if not any(a.get("VpcId") == vpc.id for a in igw.get("Attachments", [])):
        settled(lambda: ec2.attach_internet_gateway(InternetGatewayId=gid, VpcId=vpc.id))
        ledger.made("gateway-attachment", f"{gid}->{vpc.id}")
    return gid


def ensure_default_route(ec2: Any, vpc: Vpc, gateway_id: str | None, ledger: Ledger) -> None:
    """0.0.0.0/0 through the gateway in the VPC's main route table (not needed by the LB's
    creation, so it runs beside it rather than before it)."""
    if gateway_id is None:
        return
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc.id]},
                                                {"Name": "association.main", "Values": ["true"]}])["RouteTables"]
    for table in tables:
        if any(r.get("DestinationCidrBlock") == "0.0.0.0/0" for r in table.get("Routes", [])):
            ledger.found("route", f"{table['RouteTableId']} 0.0.0.0/0")
        else:
            settled(lambda table=table: ec2.create_route(RouteTableId=table["RouteTableId"], DestinationCidrBlock="0.0.0.0/0", GatewayId=gateway_id))
            ledger.made("route", f"{table['RouteTableId']} 0.0.0.0/0")


def _rules(role: str, spec: ClusterSpec, vpc: Vpc, group_id: str) -> set[tuple[int, int, str]]:
    """(from port, to port, source) for TCP; a source starting with sg- is a group."""
    if role == "masters":
        lo, hi = sorted((spec.etcd.client_port, spec.etcd.peer_port))
        etcd = {(lo, hi, group_id)} if hi - lo == 1 else {(lo, lo, group_id), (hi, hi, group_id)}
        return etcd | {(10250, 10250, group_id)}
    port = spec.load_balancer.port
    return {(port, port, cidr) for cidr in [*spec.load_balancer.allowed_cidrs, vpc.cidr]}


def _current(group: dict[str, Any]) -> set[tuple[int, int, str]]:
    out = set()
    for p in group.get("IpPermissions", []):
        if p.get("IpProtocol") != "tcp":
            continue
        for r in p.get("IpRanges", []):
            out.add((p["FromPort"], p["ToPort"], r["CidrIp"]))
        for g in p.get("UserIdGroupPairs", []):
            out.add((p["FromPort"], p["ToPort"], g["GroupId"]))
    return out


def _permission(rule: tuple[int, int, str]) -> dict[str, Any]:
    lo, hi, src = rule
    perm: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": lo, "ToPort": hi}
    if src.startswith("sg-"):
        perm["UserIdGroupPairs"] = [{"GroupId": src}]
    else:
        perm["IpRanges"] = [{"CidrIp": src}]
    return perm


SG_ROLES = {
    "masters": "bakery {}: etcd and kubelet between masters",
    "api": "bakery {}: Kubernetes API from allowed CIDRs and the load balancer",
}


def ensure_security_group(ec2: Any, spec: ClusterSpec, vpc: Vpc, role: str, ledger: Ledger) -> str:
    filters = [*cluster_filter(spec.name, f"sg-{role}"), {"Name": "vpc-id", "Values": [vpc.id]}]
    group = _one(ec2.describe_security_groups(Filters=filters)["SecurityGroups"], "security group", "GroupId")
    if group:
        ledger.found(f"security-group {role}", group["GroupId"])
    else:
        name = f"{spec.name}-{role}"
        gid = settled(lambda: ec2.create_security_group(
            GroupName=name, Description=SG_ROLES[role].format(spec.name), VpcId=vpc.id,
            TagSpecifications=tag_spec("security-group", spec.name, f"sg-{role}", name)))["GroupId"]
        ledger.made(f"security-group {role}", gid)
        group = {"GroupId": gid}
    gid = group["GroupId"]
    missing = sorted(_rules(role, spec, vpc, gid) - _current(group))
    if missing:
        settled(lambda: ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[_permission(r) for r in missing]))
        ledger.made(f"rules {role}", f"{gid} +{len(missing)}")
    return gid


# -- down -----------------------------------------------------------------------------


def retry_dependency(call: Callable[[], Any], what: str, *, timeout: float, interval: float) -> None:
    """Deleting a network piece fails with DependencyViolation while ENIs of a deleted LB
    or terminated instance linger (minutes on AWS); retry, bounded by `timeout`."""
    from botocore.exceptions import ClientError

    deadline = time.monotonic() + timeout
    while True:
        try:
            call()
            return
        except ClientError as e:
            if error_code(e) != "DependencyViolation" or time.monotonic() > deadline:
                if error_code(e) == "DependencyViolation":
                    raise ProviderError(f"{what} is still in use after {timeout:.0f}s: rerun `bakery down`") from None
                raise
            dag.sleep(interval)
