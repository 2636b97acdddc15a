"""`images prune` on cloud images: real boto3 against moto (AMIs and their snapshots), real
google-cloud-compute against the fake GCE. Records of three bakes are written as `bake`
writes them; prune deletes the oldest and forgets it only after the deletion succeeded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bakery import spec as specmod
from bakery import state
from bakery.bake import cloud, images
from bakery.errors import ProviderError
from tests.fake_gce import FakeGCE
from tests.moto_server import Moto, moto, moto_session  # noqa: F401

PROJECT = "bake-project"


def _record(target: str, n: int, **artifact: Any) -> dict[str, Any]:
    return {"target": target, "name": f"bakery-k8s-1-31-{n}-{n:012x}", "hash": f"{n:064x}",
            "kubernetes_version": f"1.31.{n}", "built_at": f"2026-01-0{n}T00:00:00Z", **artifact}


def _ami(ec2: Any, n: int) -> tuple[str, str]:
    volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"]
    snap = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    ami = ec2.register_image(Name=f"bakery-k8s-1-31-{n}", RootDeviceName="/dev/xvda", VirtualizationType="hvm",
                             BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap}}])["ImageId"]
    # The snapshot the AMI really references, as EC2 describes it.
    mapping = ec2.describe_images(ImageIds=[ami])["Images"][0]["BlockDeviceMappings"][0]
    return ami, mapping["Ebs"]["SnapshotId"]


def test_prune_deregisters_old_amis_and_deletes_their_snapshots(moto: Moto, tmp_path: Path) -> None:  # noqa: F811
    ec2 = moto.client("ec2")
    spec = specmod.parse("name: demo\nprovider: aws\naws: {}\n")
    path = state.paths("demo", tmp_path).images
    made = [_ami(ec2, n) for n in (1, 2, 3)]
    for n, (ami, _) in enumerate(made, start=1):
        images.record(path, "demo", _record("aws", n, amis={"us-east-1": ami}, image=ami, region="us-east-1"))

    pruned = images.prune(path, "demo", 2, cloud.Deleter(spec, ec2_for=lambda region: ec2))

    old_ami, old_snap = made[0]
    assert [(rec["name"], deleted) for rec, deleted in pruned] == [
        ("bakery-k8s-1-31-1-000000000001", [f"us-east-1:{old_ami}", f"us-east-1:{old_snap}"])]
    left = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    assert old_ami not in left and {made[1][0], made[2][0]} <= left
    assert old_snap not in {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    data = json.loads(path.read_text())
    assert [r["kubernetes_version"] for r in data["images"]] == ["1.31.2", "1.31.3"]
    assert data["aws"]["image"] == made[2][0]
    # Pruning again finds nothing more to delete.
    assert images.prune(path, "demo", 2, cloud.Deleter(spec, ec2_for=lambda region: ec2)) == []


@pytest.fixture
def gce() -> Iterator[FakeGCE]:
    with FakeGCE(project=PROJECT).running() as fake:
        yield fake


def test_prune_deletes_old_gce_images_and_keeps_the_current_one(gce: FakeGCE, tmp_path: Path) -> None:
    from bakery.providers.gcp.api import Compute

    spec = specmod.parse(f"name: demo\nprovider: gcp\ngcp:\n  project: {PROJECT}\n  endpoint_url: {gce.url}\n")
    path = state.paths("demo", tmp_path).images
    for n in (1, 2, 3):
        name = _record("gcp", n)["name"]
        gce.add_image(name)
        images.record(path, "demo", _record("gcp", n, image=name, project=PROJECT))

    pruned = images.prune(path, "demo", 1, cloud.Deleter(spec))  # clients from the spec's endpoint

    assert [deleted for _, deleted in pruned] == [[f"{PROJECT}/bakery-k8s-1-31-1-000000000001"],
                                                  [f"{PROJECT}/bakery-k8s-1-31-2-000000000002"]]
    assert [r["name"] for r in gce.resources("images")] == ["bakery-k8s-1-31-3-000000000003"]
    assert [r["name"] for r in json.loads(path.read_text())["images"]] == ["bakery-k8s-1-31-3-000000000003"]
    # An image someone already deleted by hand is simply forgotten.
    compute = Compute(PROJECT, gce.url)
    compute.wait(compute.client("Images").delete_unary(project=PROJECT, image="bakery-k8s-1-31-3-000000000003"), "by hand")
    gce.add_image(_record("gcp", 4)["name"])
    images.record(path, "demo", _record("gcp", 4, image=_record("gcp", 4)["name"], project=PROJECT))
    assert [deleted for _, deleted in images.prune(path, "demo", 1, cloud.Deleter(spec, compute=compute))] == [[]]
    assert [r["name"] for r in json.loads(path.read_text())["images"]] == ["bakery-k8s-1-31-4-000000000004"]


def test_a_failed_deletion_keeps_the_record(tmp_path: Path) -> None:
    path = state.paths("demo", tmp_path).images
    for n in (1, 2):
        images.record(path, "demo", _record("aws", n, amis={"us-east-1": f"ami-{n:017x}"}))
    spec = specmod.parse("name: demo\nprovider: aws\naws:\n  endpoint_url: http://127.0.0.1:9\n")

    def unreachable(region: str) -> Any:
        import boto3
        from botocore.config import Config

        # Nothing listens on 127.0.0.1:9 (discard): the real client fails to connect.
        return boto3.client("ec2", region_name=region, endpoint_url="http://127.0.0.1:9", aws_access_key_id="x",
                            aws_secret_access_key="x", config=Config(retries={"max_attempts": 1}, connect_timeout=1))

    with pytest.raises(ProviderError, match="cannot reach"):
        images.prune(path, "demo", 1, cloud.Deleter(spec, ec2_for=unreachable))
    assert len(json.loads(path.read_text())["images"]) == 2
