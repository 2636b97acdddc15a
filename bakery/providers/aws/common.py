"""What every AWS step shares: tags, resource names, and the ledger of what `up` did.

Every resource bakery creates carries `bakery:cluster=<name>` from the moment it
exists (TagSpecifications on the create call itself, never a later CreateTags), so a
run interrupted right after a create finds the resource on the next run.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

from bakery.errors import ProviderError
from bakery.providers.aws import dag

TAG_CLUSTER = "bakery:cluster"
TAG_ROLE = "bakery:role"
TAG_NODE = "bakery:node"
TAG_ZONE = "bakery:zone"

# Instance states that still hold (or will hold) the node's private address.
LIVE_STATES = ("pending", "running", "stopping", "stopped")


def tags(cluster: str, role: str, name: str, **extra: str) -> list[dict[str, str]]:
    items = {"Name": name, TAG_CLUSTER: cluster, TAG_ROLE: role}
    items.update({f"bakery:{k}": v for k, v in extra.items()})
    return [{"Key": k, "Value": v} for k, v in items.items()]


def tag_spec(resource_type: str, cluster: str, role: str, name: str, **extra: str) -> list[dict[str, Any]]:
    return [{"ResourceType": resource_type, "Tags": tags(cluster, role, name, **extra)}]


def cluster_filter(cluster: str, role: str | None = None) -> list[dict[str, Any]]:
    out = [{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster]}]
    if role:
        out.append({"Name": f"tag:{TAG_ROLE}", "Values": [role]})
    return out


def tag_value(resource: dict[str, Any], key: str) -> str | None:
    for t in resource.get("Tags", []):
        if t["Key"] == key:
            return t["Value"]
    return None


def elb_name(cluster: str, suffix: str) -> str:
    """An ELBv2 name (load balancer, target group): at most 32 characters, stable per cluster."""
    name = f"{cluster}-{suffix}"
    if len(name) <= 32:
        return name
    digest = hashlib.sha256(cluster.encode()).hexdigest()[:6]
    return f"{cluster[: 32 - len(suffix) - 8].rstrip('-')}-{digest}-{suffix}"


def poll(done: Callable[[], bool], what: str, *, timeout: float, interval: float) -> None:
    """Call `done` every `interval` until it is true; a bounded wait that a failed or
    interrupted run cuts short (dag.sleep)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() + interval > deadline:
            raise ProviderError(f"{what}: still not done after {timeout:.0f}s; rerun the command, it resumes")
        dag.sleep(interval)


# What EC2 and ELBv2 answer for a resource created a moment ago, before the create has
# reached every part of the service (EC2's eventual consistency). Retried for a while.
# https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html
NOT_YET = {
    "InvalidVpcID.NotFound", "InvalidSubnetID.NotFound", "InvalidSubnet", "InvalidGroup.NotFound",
    "InvalidGroupId.Malformed", "InvalidInternetGatewayID.NotFound", "InvalidRouteTableID.NotFound",
    "InvalidInstanceID.NotFound", "InvalidTarget", "TargetGroupNotFound",
}
SETTLE_SECONDS = 60.0


def _not_yet(e: Any) -> bool:
    from bakery.providers.aws.clients import error_code

    if error_code(e) in NOT_YET:
        return True
    # A new instance profile reaches EC2 seconds after IAM made it: RunInstances answers
    # "Value (...) for parameter iamInstanceProfile.name is invalid" meanwhile.
    # https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_iam-ec2.html
    message = str(getattr(e, "response", {}).get("Error", {}).get("Message", ""))
    return error_code(e) == "InvalidParameterValue" and "iamInstanceProfile" in message

T = TypeVar("T")


def settled(call: Callable[[], T], *, timeout: float = SETTLE_SECONDS) -> T:
    """`call()`, retried with backoff while AWS still says a just-created dependency is missing."""
    from botocore.exceptions import ClientError

    deadline, interval = time.monotonic() + timeout, 0.25
    while True:
        try:
            return call()
        except ClientError as e:
            if not _not_yet(e) or time.monotonic() + interval > deadline:
                raise
        dag.sleep(interval)
        interval = min(interval * 2, 5.0)
