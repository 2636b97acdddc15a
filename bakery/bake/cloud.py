"""Deleting what `bakery images prune` drops: AMIs with their snapshots, GCE images, and
the local image folders.

`Deleter(spec)` is the callable `images.prune` takes. Cloud clients are built lazily
from the spec's endpoints, or injected (`ec2_for(region)`, `compute`), so tests drive
the real boto3 and google-cloud-compute against moto and the fake GCE.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bakery.spec import AwsSpec, ClusterSpec, GcpSpec


class Deleter:
    def __init__(self, spec: ClusterSpec, *, ec2_for: Callable[[str], Any] | None = None, compute: Any = None) -> None:
        self.spec = spec
        self._ec2_for = ec2_for
        self._compute = compute

    def __call__(self, rec: dict[str, Any]) -> list[str]:
        """Delete one image's artifacts; returns what was deleted. Already gone is fine."""
        if rec["target"] == "aws":
            return self._aws(rec)
        if rec["target"] == "gcp":
            return self._gcp(rec)
        folder = Path(rec["disk"]).parent if rec.get("disk") else None
        if folder is None or not folder.exists():
            return []
        shutil.rmtree(folder)
        return [str(folder)]

    def _ec2(self, region: str) -> Any:
        if self._ec2_for is not None:
            return self._ec2_for(region)
        from bakery.providers.aws import clients

        aws = self.spec.aws or AwsSpec()
        return clients.default_factory(region, clients.endpoint_url(aws.endpoint_url))("ec2")

    def _aws(self, rec: dict[str, Any]) -> list[str]:
        from bakery.providers.aws import clients

        gone: list[str] = []
        for region, ami in sorted(rec.get("amis", {}).items()):
            ec2 = self._ec2(region)
            with clients.translated(region):
                found = ec2.describe_images(Filters=[{"Name": "image-id", "Values": [ami]}])["Images"]
                snapshots = [m["Ebs"]["SnapshotId"] for img in found for m in img.get("BlockDeviceMappings", [])
                             if m.get("Ebs", {}).get("SnapshotId")]
                if found:
                    ec2.deregister_image(ImageId=ami)
                    gone.append(f"{region}:{ami}")
                # The AMI's snapshots outlive it (and cost money) unless deleted too.
                for snap in snapshots:
                    ec2.delete_snapshot(SnapshotId=snap)
                    gone.append(f"{region}:{snap}")
        return gone

    def _gcp(self, rec: dict[str, Any]) -> list[str]:
        compute = self._compute
        if compute is None:
            from bakery.providers.gcp import api

            gcp = self.spec.gcp or GcpSpec()
            compute = api.Compute(rec["project"], api.endpoint_url(gcp.endpoint_url))
        name = rec["image"]
        images = compute.client("Images")
        try:
            op = compute.call(f"delete image {name}", images.delete_unary, project=rec["project"], image=name)
        except compute.exceptions.NotFound:
            return []
        compute.wait(op, f"delete image {name}")
        return [f"{rec['project']}/{name}"]
