"""The network load balancer in front of the API servers: LB, TCP target group, listener.

ELBv2 names are unique per account and region, but a name alone does not prove the LB
is this cluster's: bakery finds it by name, then checks its `bakery:cluster` tag. The
target group health-checks the API server's /readyz over HTTPS (anonymous by default).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bakery.errors import ProviderError
from bakery.providers.aws import dag
from bakery.providers.aws.clients import error_code
from bakery.providers.aws.common import TAG_CLUSTER, elb_name, poll, settled, tags
from bakery.providers.base import Ledger, Progress
from bakery.spec import ClusterSpec


@dataclass(frozen=True)
class LoadBalancer:
    arn: str
    dns_name: str


def _tags_of(elbv2: Any, arns: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for i in range(0, len(arns), 20):  # DescribeTags takes at most 20 ARNs
        for d in elbv2.describe_tags(ResourceArns=arns[i : i + 20])["TagDescriptions"]:
            out[d["ResourceArn"]] = {t["Key"]: t["Value"] for t in d.get("Tags", [])}
    return out


def by_name(elbv2: Any, kind: str, name: str) -> dict[str, Any] | None:
    """The LB or target group called `name`, or None."""
    from botocore.exceptions import ClientError

    call, key, missing = {
        "lb": (elbv2.describe_load_balancers, "LoadBalancers", "LoadBalancerNotFound"),
        "tg": (elbv2.describe_target_groups, "TargetGroups", "TargetGroupNotFound"),
    }[kind]
    try:
        found = call(Names=[name])[key]
    except ClientError as e:
        if error_code(e) == missing:
            return None
        raise
    return found[0] if found else None


def _check_owner(elbv2: Any, arn: str, name: str, cluster: str) -> None:
    owner = _tags_of(elbv2, [arn]).get(arn, {}).get(TAG_CLUSTER)
    if owner != cluster:
        raise ProviderError(
            f"{name} exists but is not tagged {TAG_CLUSTER}={cluster} (it is {owner or 'untagged'}): "
            "rename the cluster or delete that resource"
        )


def ensure_target_group(elbv2: Any, spec: ClusterSpec, vpc_id: str, ledger: Ledger) -> str:
    name = elb_name(spec.name, "api")
    found = by_name(elbv2, "tg", name)
    if found:
        _check_owner(elbv2, found["TargetGroupArn"], f"target group {name}", spec.name)
        ledger.found("target-group", name)
        return found["TargetGroupArn"]
    tg = settled(lambda: elbv2.create_target_group(
        Name=name, Protocol="TCP", Port=spec.load_balancer.port, VpcId=vpc_id, TargetType="instance",
        HealthCheckProtocol="HTTPS", HealthCheckPath="/readyz", HealthCheckPort="traffic-port",
        HealthCheckIntervalSeconds=10, HealthyThresholdCount=3, UnhealthyThresholdCount=3,
        Tags=tags(spec.name, "target-group", name),
    ))["TargetGroups"][0]
    ledger.made("target-group", name)
    return tg["TargetGroupArn"]


def ensure_load_balancer(elbv2: Any, spec: ClusterSpec, subnet_ids: list[str], ledger: Ledger) -> LoadBalancer:
    name = elb_name(spec.name, "api")
    found = by_name(elbv2, "lb", name)
    if found:
        _check_owner(elbv2, found["LoadBalancerArn"], f"load balancer {name}", spec.name)
        ledger.found("load-balancer", found["DNSName"])
        return LoadBalancer(found["LoadBalancerArn"], found["DNSName"])
    lb = settled(lambda: elbv2.create_load_balancer(
        Name=name, Subnets=subnet_ids, Scheme=spec.load_balancer.scheme, Type="network",
        IpAddressType="ipv4", Tags=tags(spec.name, "load-balancer", name),
    ))["LoadBalancers"][0]
    ledger.made("load-balancer", lb["DNSName"])
    return LoadBalancer(lb["LoadBalancerArn"], lb["DNSName"])


def ensure_listener(elbv2: Any, spec: ClusterSpec, lb: LoadBalancer, tg_arn: str, ledger: Ledger) -> str:
    port = spec.load_balancer.port
    for listener in elbv2.describe_listeners(LoadBalancerArn=lb.arn)["Listeners"]:
        if listener["Port"] == port:
            ledger.found("listener", f"TCP {port}")
            return listener["ListenerArn"]
    listener = settled(lambda: elbv2.create_listener(
        LoadBalancerArn=lb.arn, Protocol="TCP", Port=port,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}],
        Tags=tags(spec.name, "listener", f"{spec.name}-api-{port}"),
    ))["Listeners"][0]
    ledger.made("listener", f"TCP {port}")
    return listener["ListenerArn"]


def registered(elbv2: Any, tg_arn: str) -> set[str]:
    return {d["Target"]["Id"] for d in elbv2.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]}


def ensure_targets(elbv2: Any, tg_arn: str, current: set[str], instance_ids: list[str], ledger: Ledger) -> None:
    """Exactly `instance_ids` registered (`current`, as `registered` found them before the
    masters started): missing ones added, replaced masters' removed."""
    missing = [i for i in instance_ids if i not in current]
    stale = sorted(current - set(instance_ids))
    if missing:
        settled(lambda: elbv2.register_targets(TargetGroupArn=tg_arn, Targets=[{"Id": i} for i in missing]))
        ledger.made("targets", " ".join(missing))
    if stale:
        elbv2.deregister_targets(TargetGroupArn=tg_arn, Targets=[{"Id": i} for i in stale])
        ledger.gone("targets", " ".join(stale))
    if not missing and not stale:
        ledger.found("targets", f"{len(current)} registered")


def target_health(elbv2: Any, tg_arn: str) -> dict[str, str]:
    return {d["Target"]["Id"]: d["TargetHealth"]["State"]
            for d in elbv2.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]}


def wait_healthy(elbv2: Any, tg_arn: str, ids: list[str], progress: Progress, *, timeout: float, interval: float) -> None:
    """Poll target health until every master is healthy; a bounded wait, then a clear error."""
    deadline = time.monotonic() + timeout
    while True:
        health = target_health(elbv2, tg_arn)
        healthy = [i for i in ids if health.get(i) == "healthy"]
        progress("targets", "waiting" if len(healthy) < len(ids) else "healthy", f"{len(healthy)}/{len(ids)} healthy")
        if len(healthy) == len(ids):
            return
        if time.monotonic() + interval > deadline:
            states = ", ".join(f"{i} {health.get(i, 'unregistered')}" for i in ids if i not in healthy)
            raise ProviderError(f"targets not healthy after {timeout:.0f}s ({states}): "
                                "see `bakery status` and the masters' console output")
        dag.sleep(interval)


def wait_deleted(elbv2: Any, arns: list[str], *, timeout: float, interval: float) -> None:
    """Until the LBs are gone (their network interfaces hold the subnets and groups until then)."""
    from botocore.exceptions import ClientError

    def gone() -> bool:
        try:
            return not elbv2.describe_load_balancers(LoadBalancerArns=arns)["LoadBalancers"]
        except ClientError as e:
            if error_code(e) == "LoadBalancerNotFound":
                return True
            raise

    poll(gone, f"load balancers {', '.join(arns)} to be deleted", timeout=timeout, interval=interval)


def find_tagged(elbv2: Any, cluster: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(load balancers, target groups) tagged with `cluster`, whatever their names."""
    lbs = [lb for page in elbv2.get_paginator("describe_load_balancers").paginate() for lb in page["LoadBalancers"]]
    tgs = [tg for page in elbv2.get_paginator("describe_target_groups").paginate() for tg in page["TargetGroups"]]
    owned = _tags_of(elbv2, [x["LoadBalancerArn"] for x in lbs] + [x["TargetGroupArn"] for x in tgs])
    ours = {arn for arn, t in owned.items() if t.get(TAG_CLUSTER) == cluster}
    return [x for x in lbs if x["LoadBalancerArn"] in ours], [x for x in tgs if x["TargetGroupArn"] in ours]
