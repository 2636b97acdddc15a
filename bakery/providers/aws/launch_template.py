"""An EC2 launch template for autoscaling groups: the cluster's one small user-data.

Every instance an autoscaling group starts gets the same document, and that is all a
master needs: bakery-node reads who it is from the instance's own instance-data and the
rest from the state store (bakery/node/). Nothing secret is in the template.

A change makes a new template version (and the default); no change, no call: each
version's description carries the digest of its data.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from bakery.providers.aws.common import cluster_filter, tag_spec, tags
from bakery.providers.aws.group import INSTANCE_ROLE
from bakery.providers.aws.instances import Image, root_volume
from bakery.providers.base import Ledger
from bakery.render.userdata import UserData
from bakery.spec import ClusterSpec


def template_data(spec: ClusterSpec, user_data: UserData, image: Image, group_ids: list[str],
                  profile: str | None = None) -> dict[str, Any]:
    """`profile`: the masters' instance profile (bakery's role, or aws.instance_profile)."""
    aws = spec.provider_spec
    data: dict[str, Any] = {
        "ImageId": image.id,
        "InstanceType": aws.instance_type,
        # Launch templates take user-data already base64'd (RunInstances does it for us).
        "UserData": base64.b64encode(user_data.encoded).decode(),
        "SecurityGroupIds": sorted(group_ids),
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": aws.metadata_hop_limit},
        "BlockDeviceMappings": [root_volume(image.root_device, aws.root_volume_gb)],
        "TagSpecifications": tag_spec("instance", spec.name, INSTANCE_ROLE, f"{spec.name}-master"),
    }
    if profile or aws.instance_profile:
        data["IamInstanceProfile"] = {"Name": profile or aws.instance_profile}
    if aws.key_name:
        data["KeyName"] = aws.key_name
    return data


def digest(data: dict[str, Any]) -> str:
    return "bakery sha256:" + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def ensure(ec2: Any, spec: ClusterSpec, data: dict[str, Any], ledger: Ledger) -> tuple[str, int]:
    """(template id, default version): created, or a new version when `data` changed."""
    name = f"{spec.name}-master"
    want = digest(data)
    found = ec2.describe_launch_templates(Filters=cluster_filter(spec.name, "launch-template"))["LaunchTemplates"]
    if not found:
        t = ec2.create_launch_template(
            LaunchTemplateName=name, VersionDescription=want, LaunchTemplateData=data,
            TagSpecifications=[{"ResourceType": "launch-template", "Tags": tags(spec.name, "launch-template", name)}],
        )["LaunchTemplate"]
        ledger.made("launch-template", f"{t['LaunchTemplateId']} v1")
        return t["LaunchTemplateId"], 1
    tid = found[0]["LaunchTemplateId"]
    latest = ec2.describe_launch_template_versions(LaunchTemplateId=tid, Versions=["$Latest"])["LaunchTemplateVersions"][0]
    if latest.get("VersionDescription") == want:
        ledger.found("launch-template", f"{tid} v{latest['VersionNumber']}")
        return tid, int(latest["VersionNumber"])
    v = ec2.create_launch_template_version(LaunchTemplateId=tid, VersionDescription=want, LaunchTemplateData=data)
    number = int(v["LaunchTemplateVersion"]["VersionNumber"])
    ec2.modify_launch_template(LaunchTemplateId=tid, DefaultVersion=str(number))
    ledger.made("launch-template", f"{tid} v{number}")
    return tid, number


def user_data_of(ec2: Any, template_id: str, version: str = "$Default") -> bytes:
    """The template version's user-data as sent (base64 removed, gzip kept)."""
    v = ec2.describe_launch_template_versions(LaunchTemplateId=template_id, Versions=[version])["LaunchTemplateVersions"][0]
    return base64.b64decode(v["LaunchTemplateData"]["UserData"])
