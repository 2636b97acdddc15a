"""The masters: one EC2 instance per plan node, found by its `bakery:node` tag.

An existing master is never replaced here: when its user-data (read back and decoded),
address or image differs from what was just rendered, `up` reports drift and points
to a rollout, which replaces masters one at a time without losing etcd quorum.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bakery.bake import images
from bakery.errors import Problem, ProviderError, RenderError
from bakery.providers.aws.common import (
    LIVE_STATES,
    TAG_NODE,
    cluster_filter,
    poll,
    settled,
    tag_spec,
    tag_value,
)
from bakery.providers.base import Ledger, RenderedNode
from bakery.render.userdata import LIMITS, decode
from bakery.spec import ClusterSpec


@dataclass(frozen=True)
class Image:
    id: str
    root_device: str


def image_id(spec: ClusterSpec, images_json: Path) -> str:
    """The AMI: the spec's aws.image, else the one `bakery bake` recorded for the spec's region."""
    if spec.provider_spec.image:
        return spec.provider_spec.image
    rec = images.current(images_json, spec.name, "aws")
    if not rec:
        raise ProviderError(f"no AMI: set aws.image in the spec or run `bakery bake` (it records one in {images_json})")
    region = spec.provider_spec.region  # type: ignore[union-attr]
    ami = rec.get("amis", {}).get(region)
    if not ami:
        baked = ", ".join(sorted(rec.get("amis", {}))) or "none"
        raise ProviderError(f"{images_json}: image {rec.get('name')} has no AMI in {region} (regions: {baked}); "
                            "copy it there or bake in that region")
    return str(ami)


def describe_image(ec2: Any, ami: str) -> Image:
    images = ec2.describe_images(ImageIds=[ami])["Images"]
    if not images:
        raise ProviderError(f"AMI {ami} not found in this region: check aws.image / aws.region or rerun `bakery bake`")
    return Image(ami, images[0].get("RootDeviceName", "/dev/xvda"))


def check_size(nodes: dict[str, RenderedNode]) -> None:
    """AWS refuses user-data over 16 KB at RunInstances; moto does not. Check it ourselves."""
    limit = LIMITS["aws"]
    over = [n for n in nodes.values() if len(n.user_data.encoded) > limit]
    if over:
        raise RenderError("user-data over the AWS limit", [
            Problem(f"user-data is {len(n.user_data.encoded):,} bytes {n.user_data.encoding}-encoded, over the "
                    f"AWS limit of {limit:,}: nothing was created for it; trim the node's files", key=n.name)
            for n in over])


def find_masters(ec2: Any, cluster: str, states: tuple[str, ...] = LIVE_STATES) -> dict[str, dict[str, Any]]:
    """node name -> instance, for this cluster's masters in `states`."""
    filters = [*cluster_filter(cluster, "master"), {"Name": "instance-state-name", "Values": list(states)}]
    found: dict[str, list[dict[str, Any]]] = {}
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for r in page["Reservations"]:
            for inst in r["Instances"]:
                found.setdefault(tag_value(inst, TAG_NODE) or "?", []).append(inst)
    dupes = {n: [i["InstanceId"] for i in v] for n, v in found.items() if len(v) > 1}
    if dupes:
        n, ids = next(iter(dupes.items()))
        raise ProviderError(f"{n} has {len(ids)} live instances ({', '.join(ids)}): terminate the extra ones, then rerun")
    return {n: v[0] for n, v in found.items()}


def user_data_of(ec2: Any, instance_id: str) -> bytes:
    value = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData").get("UserData", {}).get("Value")
    return decode(base64.b64decode(value), "plain") if value else b""


def check_drift(ec2: Any, node: RenderedNode, instance: dict[str, Any], ami: str, ledger: Ledger) -> None:
    iid = instance["InstanceId"]
    reasons = []
    if instance.get("PrivateIpAddress") != node.address:
        reasons.append(f"address {instance.get('PrivateIpAddress')}, plan {node.address}")
    if instance.get("ImageId") != ami:
        reasons.append(f"image {instance.get('ImageId')}, wanted {ami}")
    if user_data_of(ec2, iid) != node.user_data.plain:
        reasons.append("user-data differs from the rendered one")
    state = instance["State"]["Name"]
    if state in ("stopping", "stopped"):
        reasons.append(f"it is {state}")
    if reasons:
        ledger.drifted(f"{node.name} ({iid}): {'; '.join(reasons)}: replace it with a rollout "
                       "(`bakery rollout`), which keeps etcd quorum; `up` does not replace masters")


def run_master(
    ec2: Any, spec: ClusterSpec, node: RenderedNode, subnet_id: str, group_ids: list[str], image: Image, ledger: Ledger,
    *, profile: str | None = None,
) -> str:
    """Start one master; `profile`: the instance profile that may read the store (default aws.instance_profile)."""
    aws = spec.provider_spec
    kwargs: dict[str, Any] = {
        "ImageId": image.id,
        "InstanceType": aws.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "SubnetId": subnet_id,
        "PrivateIpAddress": node.address,
        "SecurityGroupIds": group_ids,
        "UserData": node.user_data.encoded,  # botocore base64s RunInstances' UserData itself
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": aws.metadata_hop_limit},
        "BlockDeviceMappings": [root_volume(image.root_device, aws.root_volume_gb)],
        "TagSpecifications": [
            *tag_spec("instance", spec.name, "master", node.name, node=node.name),
            *tag_spec("volume", spec.name, "master-volume", node.name, node=node.name),
        ],
    }
    if profile or aws.instance_profile:
        kwargs["IamInstanceProfile"] = {"Name": profile or aws.instance_profile}
    if aws.key_name:
        kwargs["KeyName"] = aws.key_name
    iid = settled(lambda: ec2.run_instances(**kwargs))["Instances"][0]["InstanceId"]
    ledger.made(f"master {node.name}", iid)
    return iid


def root_volume(device: str, size_gb: int) -> dict[str, Any]:
    return {"DeviceName": device,
            "Ebs": {"VolumeSize": size_gb, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True}}


def wait_running(ec2: Any, ids: list[str], *, timeout: float, interval: float) -> None:
    """Until the instances run (a target must be running to be registered)."""

    def running() -> bool:
        described = settled(lambda: ec2.describe_instances(InstanceIds=ids))  # NotFound just after RunInstances
        found = [i for r in described["Reservations"] for i in r["Instances"]]
        dead = [i for i in found if i["State"]["Name"] in ("shutting-down", "terminated")]
        if dead:
            i = dead[0]
            raise ProviderError(f"{i['InstanceId']} stopped while starting ({i.get('StateReason', {}).get('Message', 'no reason given')}): "
                                f"see `aws ec2 get-console-output --instance-id {i['InstanceId']}`, then rerun `bakery up`")
        return len(found) == len(ids) and all(i["State"]["Name"] == "running" for i in found)

    poll(running, f"instances {', '.join(ids)} to run", timeout=timeout, interval=interval)


def wait_terminated(ec2: Any, ids: list[str], *, timeout: float, interval: float) -> None:
    def terminated() -> bool:
        found = [i for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]]
        return all(i["State"]["Name"] == "terminated" for i in found)

    poll(terminated, f"instances {', '.join(ids)} to terminate", timeout=timeout, interval=interval)
