"""bakery-node's two questions to EC2, with the instance's own credentials (the masters'
role allows exactly these: bakery/providers/aws/iam.py):

- `instance_alive`: does the cloud still run the machine of a member etcd lists? A
  group's replacement removes a dead member only when EC2 says its instance is gone (the
  member's name is a hostname nobody reuses, so no other rule removes it);
- `clients`: boto3 clients for the instance's region (`region_of` its zone), at the
  endpoint BAKERY_AWS_ENDPOINT_URL names when set (tests: moto).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from bakery.errors import NodeError
from bakery.node import members as records
from bakery.providers.aws.common import LIVE_STATES, cluster_filter


def region_of(zone: str) -> str:
    """us-east-1a -> us-east-1 (EC2 zone names are the region and one letter)."""
    return zone[:-1] if zone[-1:].isalpha() else zone


def clients(region: str) -> Callable[[str], Any]:
    from bakery.providers.aws.clients import default_factory, endpoint_url

    return default_factory(region, endpoint_url(None))


def instance_alive(ec2: Any, store: Any, cluster: str) -> Callable[[str], bool | None]:
    """member name -> whether an instance of the cluster still holds that member's address
    (from its membership record); None when the store has no record of it."""

    def alive(name: str) -> bool | None:
        from botocore.exceptions import BotoCoreError, ClientError

        record = next((r for r in records.records(store, cluster) if r.name == name), None)
        if record is None:
            return None
        address = urlsplit(record.peer_url).hostname
        filters = [*cluster_filter(cluster), {"Name": "private-ip-address", "Values": [address]},
                   {"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
        try:
            found = ec2.describe_instances(Filters=filters)["Reservations"]
        except (ClientError, BotoCoreError) as e:
            raise NodeError(f"EC2 DescribeInstances for {name} ({address}): {e}") from None
        return any(r["Instances"] for r in found)

    return alive
