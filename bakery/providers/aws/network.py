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


@dataclass(frozen=True)
class Vpc:
    id: str
    cidr: str
    owned: bool


def zone_subnets(spec: ClusterSpec) -> dict[str, str]:
    """zone name -> subnet CIDR, for the zones the masters use."""
    zones = spec.zones[: spec.masters]
    return {z.name: z.subnet or spec.network.subnet for z in zones}


def check_layout(spec: ClusterSpec) -> None:
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
    # subnet sizes and the addresses AWS reserves in each are the spec's (bakery/spec.py
    # SUBNET_PREFIXES, RESERVED_HOSTS): refused at parse, with the key and line
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
        ensure_dns(ec2, found["VpcId"], ledger)
        return Vpc(found["VpcId"], found["CidrBlock"], owned=True)
    cidr = vpc_cidr(list(zone_subnets(spec).values()))
    vpc = ec2.create_vpc(CidrBlock=cidr, TagSpecifications=tag_spec("vpc", spec.name, "vpc", spec.name))["Vpc"]
    ledger.made("vpc", vpc["VpcId"])
    ensure_dns(ec2, vpc["VpcId"], ledger, made=True)
    return Vpc(vpc["VpcId"], cidr, owned=True)


# The interface endpoints' private DNS names (ec2.<region>.amazonaws.com resolving to the
# endpoint inside the VPC) need both attributes true; CreateVpc leaves enableDnsHostnames false.
DNS_ATTRIBUTES = ("enableDnsSupport", "enableDnsHostnames")


def dns_attributes(ec2: Any, vpc_id: str) -> dict[str, bool]:
    return {a: bool(ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute=a)[a[0].upper() + a[1:]]["Value"])
            for a in DNS_ATTRIBUTES}


def ensure_dns(ec2: Any, vpc_id: str, ledger: Ledger, *, made: bool = False) -> None:
    """Both DNS attributes of bakery's VPC on (read first, one ModifyVpcAttribute per attribute
    that differs, as EC2 takes them); a found VPC with one off is drift, reported."""
    for attribute, on in dns_attributes(ec2, vpc_id).items():
        if on:
            continue
        if not made:
            ledger.drifted(f"vpc {vpc_id}: {attribute} was false (the API endpoints' private DNS needs it): set to true")
        ec2.modify_vpc_attribute(VpcId=vpc_id, **{attribute[0].upper() + attribute[1:]: {"Value": True}})


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
    if role == "endpoints":
        return {(443, 443, vpc.cidr)}
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
    # the endpoints' group is no master's: its role tag does not start with sg- (the masters' groups)
    tag_role = "endpoints-sg" if role == "endpoints" else f"sg-{role}"
    filters = [*cluster_filter(spec.name, tag_role), {"Name": "vpc-id", "Values": [vpc.id]}]
    group = _one(ec2.describe_security_groups(Filters=filters)["SecurityGroups"], "security group", "GroupId")
    if group:
        ledger.found(f"security-group {role}", group["GroupId"])
    else:
        name = f"{spec.name}-{role}"
        gid = settled(lambda: ec2.create_security_group(
            GroupName=name, Description={**SG_ROLES, "endpoints": ENDPOINT_SG}[role].format(spec.name), VpcId=vpc.id,
            TagSpecifications=tag_spec("security-group", spec.name, tag_role, name)))["GroupId"]
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


# -- the masters' path out -------------------------------------------------------------
#
# Masters have no public IPv4 address, and an instance without one cannot use an internet
# gateway (https://docs.aws.amazon.com/vpc/latest/userguide/VPC_Internet_Gateway.html).
# bakery-node reads the store (S3) and calls EC2 and Auto Scaling. In a VPC bakery makes, it
# gets an S3 gateway endpoint on the masters' route table (no charge) and interface endpoints
# with private DNS for ec2, autoscaling and sts in the masters' subnets (per endpoint per zone
# about $0.01/hour, ~$7.30/month, plus $0.01/GB): cheaper than a NAT gateway per zone, and
# nothing the masters send leaves AWS's network. A NAT gateway would also reach the public
# discovery service; bakery makes none, so `etcd.bootstrap: discovery` needs a network of the
# user's with a NAT (checked below).

INTERFACE_SERVICES = ("ec2", "autoscaling", "sts")
# what bakery-node itself calls (sts is for SDK callers that resolve credentials regionally)
NODE_SERVICES = ("ec2", "autoscaling")
ENDPOINT_SG = "bakery {}: HTTPS from the VPC to the AWS API endpoints"


def service_name(region: str, service: str) -> str:
    return f"com.amazonaws.{region}.{service}"


def check_discovery(spec: ClusterSpec) -> None:
    """A VPC bakery makes has no path to the public internet: refuse a public discovery service."""
    if spec.etcd.bootstrap == "discovery" and not spec.provider_spec.vpc_id:
        raise ProviderError(
            "etcd.bootstrap: discovery: masters in the VPC bakery makes reach only S3, EC2, Auto Scaling and "
            "STS (VPC endpoints), not the discovery service; use etcd.bootstrap store, or name aws.vpc_id and "
            "aws.subnet_ids whose route tables have a NAT gateway default route")


def route_tables_of(ec2: Any, vpc_id: str, subnet_ids: list[str]) -> dict[str, dict[str, Any]]:
    """subnet id -> the route table it uses: its explicit association, else the VPC's main one."""
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]
    main = next((t for t in tables for a in t.get("Associations", []) if a.get("Main")), None)
    out: dict[str, dict[str, Any]] = {}
    for sid in subnet_ids:
        explicit = next((t for t in tables for a in t.get("Associations", []) if a.get("SubnetId") == sid), None)
        table = explicit or main
        if table is not None:
            out[sid] = table
    return out


def ensure_endpoint_group(ec2: Any, spec: ClusterSpec, vpc: Vpc, ledger: Ledger) -> str | None:
    """The interface endpoints' security group: 443 from the VPC."""
    if not vpc.owned:
        return None
    return ensure_security_group(ec2, spec, vpc, "endpoints", ledger)


def ensure_endpoints(ec2: Any, spec: ClusterSpec, vpc: Vpc, subnet_ids: list[str], group_id: str | None,
                     ledger: Ledger) -> list[str]:
    """In a bakery-made VPC: the S3 gateway endpoint on the masters' route tables and the
    interface endpoints. Found ones are reused; a found one missing a route table or subnet
    gets it (and the drift is reported)."""
    if not vpc.owned:
        return []
    region = spec.provider_spec.region
    tables = sorted({t["RouteTableId"] for t in route_tables_of(ec2, vpc.id, subnet_ids).values()})
    ids = []
    wanted = [("s3", "Gateway"), *((s, "Interface") for s in INTERFACE_SERVICES)]
    for service, kind in wanted:
        role = f"endpoint-{service}"
        filters = [*cluster_filter(spec.name, role), {"Name": "vpc-id", "Values": [vpc.id]},
                   {"Name": "vpc-endpoint-state", "Values": ["pending", "available"]}]
        found = _one(ec2.describe_vpc_endpoints(Filters=filters)["VpcEndpoints"], "VPC endpoint", "VpcEndpointId")
        if found:
            eid = found["VpcEndpointId"]
            ledger.found(f"vpc-endpoint {service}", eid)
            if kind == "Gateway":
                missing = sorted(set(tables) - set(found.get("RouteTableIds", [])))
                if missing:
                    ledger.drifted(f"vpc-endpoint {service} {eid}: not on route table(s) {', '.join(missing)}: added")
                    ec2.modify_vpc_endpoint(VpcEndpointId=eid, AddRouteTableIds=missing)
            else:
                missing = sorted(set(subnet_ids) - set(found.get("SubnetIds", [])))
                if missing:
                    ledger.drifted(f"vpc-endpoint {service} {eid}: not in subnet(s) {', '.join(missing)}: added")
                    ec2.modify_vpc_endpoint(VpcEndpointId=eid, AddSubnetIds=missing)
        else:
            args: dict[str, Any] = {"VpcId": vpc.id, "ServiceName": service_name(region, service), "VpcEndpointType": kind,
                                    "TagSpecifications": tag_spec("vpc-endpoint", spec.name, role, f"{spec.name}-{service}")}
            if kind == "Gateway":
                args["RouteTableIds"] = tables
            else:
                args.update(SubnetIds=subnet_ids, SecurityGroupIds=[group_id], PrivateDnsEnabled=True)
            eid = settled(lambda args=args: ec2.create_vpc_endpoint(**args))["VpcEndpoint"]["VpcEndpointId"]
            ledger.made(f"vpc-endpoint {service}", eid)
        ids.append(eid)
    return ids


def _nat_route(table: dict[str, Any]) -> bool:
    return any(r.get("DestinationCidrBlock") == "0.0.0.0/0" and r.get("State", "active") == "active"
               and (r.get("NatGatewayId") or r.get("InstanceId") or r.get("NetworkInterfaceId"))
               for r in table.get("Routes", []))


def check_path(ec2: Any, spec: ClusterSpec, vpc: Vpc, subnet_ids: dict[str, str]) -> None:
    """For a VPC the user names: every master subnet needs a way to S3 (a gateway endpoint's
    prefix-list route or a NAT default route) and to EC2 and Auto Scaling (interface
    endpoints with private DNS, or NAT); `discovery` needs NAT. ProviderError naming each
    subnet and what it lacks."""
    if vpc.owned:
        return
    region = spec.provider_spec.region
    endpoints = [e for e in ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc.id]}])["VpcEndpoints"]
                 if e.get("State", "available").lower() in ("available", "pending")]
    s3_gateways = {e["VpcEndpointId"] for e in endpoints
                   if e["ServiceName"] == service_name(region, "s3") and e.get("VpcEndpointType") == "Gateway"}
    tables = route_tables_of(ec2, vpc.id, list(subnet_ids.values()))
    dns = dns_attributes(ec2, vpc.id)
    dns_off = [a for a, on in dns.items() if not on]
    problems = []
    for zone, sid in sorted(subnet_ids.items()):
        table = tables.get(sid, {})
        nat = _nat_route(table)
        missing = []
        s3 = any(r.get("DestinationPrefixListId") and r.get("GatewayId") in s3_gateways for r in table.get("Routes", []))
        if not (s3 or nat):
            missing.append(f"S3 (no route to an S3 gateway endpoint and no NAT default route in {table.get('RouteTableId', 'its route table')})")
        for svc in NODE_SERVICES:
            # private DNS resolves the service's name to the endpoint everywhere in the VPC
            iface = any(e["ServiceName"] == service_name(region, svc) and e.get("VpcEndpointType") == "Interface"
                        and e.get("PrivateDnsEnabled") for e in endpoints)
            if not ((iface and not dns_off) or nat):
                why = (f"its interface endpoint's private DNS does not resolve: {vpc.id} has {' and '.join(dns_off)} false"
                       if iface else f"no interface endpoint with private DNS in {vpc.id}")
                missing.append(f"{svc} ({why}, no NAT default route)")
        if spec.etcd.bootstrap == "discovery" and not nat:
            missing.append("the discovery service (etcd.bootstrap: discovery needs a NAT default route)")
        if missing:
            problems.append(f"aws.subnet_ids.{zone} {sid}: masters have no public address and no path to " + "; ".join(missing))
    if problems:
        raise ProviderError("masters cannot reach their store and the AWS APIs: " + " | ".join(problems))
