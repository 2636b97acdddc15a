"""Cloud (and local) providers behind one small interface: see base.py.

Each provider module imports its SDK lazily, so `bakery --help` and rendering work
without the extras installed (STYLE.md #7).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from bakery.errors import ProviderError

if TYPE_CHECKING:
    from bakery.providers.base import Progress, Provider
    from bakery.spec import ClusterSpec
    from bakery.state import ClusterPaths

_MODULES = {"aws": "bakery.providers.aws", "gcp": "bakery.providers.gcp", "local": "bakery.providers.local"}


def get(spec: ClusterSpec, paths: ClusterPaths, progress: Progress) -> Provider:
    """The provider for `spec.provider`, constructed for this cluster."""
    try:
        module = importlib.import_module(_MODULES[spec.provider])
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("bakery"):
            raise ProviderError(f"provider {spec.provider!r} is not available in this build of bakery") from None
        raise
    return module.create(spec, paths, progress)
