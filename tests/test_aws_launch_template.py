"""The launch template: the cluster's one small user-data, versioned on change, read back
through boto3 from moto, checked against cloud-init's schema."""

from __future__ import annotations

from typing import Any

import pytest

from bakery import render, validate
from bakery.node.description import NodeConfig
from bakery.providers.aws import launch_template
from tests.conftest import need
from tests.moto_server import Calls, Moto, fixed_render, make_spec, moto, moto_session  # noqa: F401
from tests.test_aws import cluster  # noqa: F401


def small_user_data(digest: str):
    return render.node_user_data(NodeConfig("demo", "s3://demo-state", digest).to_json(), "aws")


def test_launch_template_round_trips_and_versions(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, _, calls, provider, _ = cluster
    provider().up(fixed_render(spec))
    user_data = small_user_data("sha256:" + "1" * 64)
    tid, version = provider().launch_template(user_data)
    assert version == 1
    ec2 = moto.client("ec2")
    assert launch_template.user_data_of(ec2, tid) == user_data.encoded
    data = ec2.describe_launch_template_versions(LaunchTemplateId=tid, Versions=["$Default"])["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1  # pods on a master cannot reach IMDS
    assert all(m["Ebs"]["Encrypted"] for m in data["BlockDeviceMappings"])

    calls.clear()
    assert provider().launch_template(user_data) == (tid, 1)
    assert calls.mutating == []

    changed = small_user_data("sha256:" + "2" * 64)  # the cluster was published again with another spec
    assert provider().launch_template(changed) == (tid, 2)
    t = ec2.describe_launch_templates(LaunchTemplateIds=[tid])["LaunchTemplates"][0]
    assert t["DefaultVersionNumber"] == 2 and t["LatestVersionNumber"] == 2
    assert launch_template.user_data_of(ec2, tid) == changed.encoded


def test_launch_template_user_data_is_small_secret_free_and_valid_cloud_config() -> None:
    user_data = small_user_data("sha256:" + "3" * 64)
    assert len(user_data.encoded) <= 4096
    assert b"PRIVATE KEY" not in user_data.plain and b"-----BEGIN" not in user_data.plain
    schema = validate.cloud_init_schema()
    need("cloud-init's schema", schema is not None, "make setup-system")
    assert validate.check_cloud_config(user_data.plain, schema) == []
    node_json = validate.write_files(user_data.plain)["/etc/bakery/node.json"]["data"].decode()
    assert NodeConfig.load_text(node_json) == NodeConfig("demo", "s3://demo-state", "sha256:" + "3" * 64)


def test_imds_hop_limit_is_1_unless_the_spec_asks_for_2_with_its_reason() -> None:
    from bakery import spec as spec_mod
    from bakery.errors import SpecError
    from bakery.providers.aws.instances import Image
    from bakery.render.userdata import encode

    ud = encode(b"#cloud-config\n", "aws")
    image = Image("ami-0123456789abcdef0", "/dev/xvda")
    assert launch_template.template_data(make_spec(), ud, image, ["sg-1"])["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    two = spec_mod.parse("name: demo\nprovider: aws\naws: {region: us-east-1, metadata_hop_limit: 2}\n")
    assert launch_template.template_data(two, ud, image, ["sg-1"])["MetadataOptions"]["HttpPutResponseHopLimit"] == 2
    described = spec_mod.json_schema()["$defs"]["AwsSpec"]["properties"]["metadata_hop_limit"]["description"]
    assert "pod" in described and "credentials" in described
    with pytest.raises(SpecError):
        spec_mod.parse("name: demo\nprovider: aws\naws: {metadata_hop_limit: 3}\n")
