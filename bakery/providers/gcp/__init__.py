"""The GCP provider: google-cloud-compute (extra `gcp`), a regional passthrough NLB.

api.py talks to Compute Engine (clients, operation waits, errors); resources.py says
what to create (names and request bodies, pure); provider.py runs up/status/down.
"""

from __future__ import annotations

from bakery.providers.base import Progress
from bakery.providers.gcp.provider import GcpProvider
from bakery.spec import ClusterSpec
from bakery.state import ClusterPaths

__all__ = ["GcpProvider", "create"]


def create(spec: ClusterSpec, paths: ClusterPaths, progress: Progress) -> GcpProvider:
    return GcpProvider(spec, paths, progress)
