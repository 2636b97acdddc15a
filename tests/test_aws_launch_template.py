"""The launch template: one generic `## template: jinja` user-data, versioned on change,
read back through boto3 from moto and rendered by cloud-init's own Jinja renderer."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bakery import topology, validate
from bakery.providers.aws import launch_template
from bakery.render import NodeFile, generic
from bakery.render.userdata import decode
from tests.conftest import need
from tests.moto_server import Calls, Moto, fixed_render, make_spec, moto, moto_session  # noqa: F401
from tests.test_aws import cluster  # noqa: F401

CLOUD_INIT = Path("/usr/lib/python3/dist-packages/cloudinit/handlers/jinja_template.py")

# What cloud-init's EC2 datasource writes to /run/cloud-init/instance-data.json (trimmed).
INSTANCE_DATA = {
    "v1": {"cloud_name": "aws", "instance_id": "i-0123456789abcdef0", "local_hostname": "ip-10-240-1-20",
           "availability_zone": "us-east-1b", "region": "us-east-1", "platform": "ec2"},
    "ds": {"meta_data": {"local-ipv4": "10.240.1.20", "instance-id": "i-0123456789abcdef0"}},
}

# cloud-init's renderer, run by the system Python that has it (it never runs as a service here).
RENDER = """
import json, sys
from cloudinit.handlers.jinja_template import render_jinja_payload
payload = sys.stdin.read()
out = render_jinja_payload(payload, "user-data", json.loads(sys.argv[1]))
if out is None:
    sys.exit("cloud-init refused to render the template")
sys.stdout.write(out)
"""

SHARED = [
    NodeFile("/etc/kubernetes/pki/ca.crt", b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
    # Content Jinja would choke on: base64 keeps it out of the template's reach.
    NodeFile("/etc/kubernetes/kubelet.conf", b"server: {{ not jinja }} {% neither %} {# nor this\n", 0o600),
]


def test_shared_files_are_those_every_master_has() -> None:
    from bakery.render import NodeRender

    same, own0, own1 = NodeFile("/a", b"x"), NodeFile("/b", b"0"), NodeFile("/b", b"1")
    nodes = {"n0": NodeRender(None, (same, own0), None), "n1": NodeRender(None, (same, own1), None)}  # type: ignore[arg-type]
    assert generic.shared_files(nodes) == [same]


def test_launch_template_round_trips_and_versions(moto: Moto, cluster: Any) -> None:  # noqa: F811
    spec, _, calls, provider, _ = cluster
    result = provider().up(fixed_render(spec))
    lb_name = result.endpoint.split("//")[1].split(":")[0]
    plan = topology.plan(spec, lb_dns_names=(lb_name,))
    document = launch_template.generic_document(plan, SHARED)
    assert document.startswith(b"## template: jinja\n#cloud-config\n")

    tid, version = provider().launch_template(document)
    assert version == 1
    ec2 = moto.client("ec2")
    assert decode(launch_template.user_data_of(ec2, tid), "plain") == document
    data = ec2.describe_launch_template_versions(LaunchTemplateId=tid, Versions=["$Default"])["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1  # pods on a master cannot reach IMDS
    assert all(m["Ebs"]["Encrypted"] for m in data["BlockDeviceMappings"])

    calls.clear()
    assert provider().launch_template(document) == (tid, 1)
    assert calls.mutating == []

    changed = launch_template.generic_document(plan, [*SHARED, NodeFile("/etc/bakery/extra", b"new")])
    assert provider().launch_template(changed) == (tid, 2)
    t = ec2.describe_launch_templates(LaunchTemplateIds=[tid])["LaunchTemplates"][0]
    assert t["DefaultVersionNumber"] == 2 and t["LatestVersionNumber"] == 2
    assert decode(launch_template.user_data_of(ec2, tid), "plain") == changed


def test_cloud_init_renders_the_generic_document_from_instance_data() -> None:
    need("cloud-init's Jinja renderer (Debian cloud-init)", CLOUD_INIT.exists() and Path("/usr/bin/python3").exists(),
         "make setup-system")
    spec = make_spec()
    plan = topology.plan(spec, lb_dns_names=("demo-api-0123456789abcdef.elb.us-east-1.amazonaws.com",))
    document = launch_template.generic_document(plan, SHARED)
    done = subprocess.run(["/usr/bin/python3", "-c", RENDER, json.dumps(INSTANCE_DATA)], input=document,
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    rendered = done.stdout
    assert rendered.startswith(b"#cloud-config\n") and b"{{" not in rendered.split(b"encoding")[0]
    config = yaml.safe_load(rendered)
    assert config["hostname"] == "ip-10-240-1-20"
    files = validate.write_files(rendered)
    env = dict(line.split("=", 1) for line in files[generic.NODE_ENV]["data"].decode().splitlines())
    assert env["BAKERY_NODE_ADDRESS"] == "10.240.1.20"
    assert env["BAKERY_INSTANCE_ID"] == "i-0123456789abcdef0"
    assert env["BAKERY_ZONE"] == "us-east-1b"
    assert env["BAKERY_API_ENDPOINT"] == plan.lb.endpoint
    assert env["BAKERY_ETCD_ENDPOINTS"] == ",".join(plan.client_urls)
    for f in SHARED:
        assert files[f.path]["data"] == f.content
    schema = validate.cloud_init_schema()
    need("cloud-init's schema", schema is not None, "make setup-system")
    assert validate.check_cloud_config(rendered, schema) == []


@pytest.mark.parametrize("masters", [3, 7])
def test_generic_document_is_deterministic(masters: int) -> None:
    plan = topology.plan(make_spec(masters=masters), lb_dns_names=("x.elb.amazonaws.com",))
    assert launch_template.generic_document(plan, SHARED) == launch_template.generic_document(plan, list(reversed(SHARED)))


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
