"""build/<cluster>/: where bakery keeps what it learnt, and state.json inside it.

state.json holds facts bakery cannot derive from the spec: the discovery token,
whether etcd was bootstrapped, the load balancer's cloud-assigned names, every
cloud resource id. It is rewritten atomically; readers tolerate a missing file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bakery.errors import StateError
from bakery.output import atomic_write_json

STATE_VERSION = 1


@dataclass(frozen=True)
class ClusterPaths:
    """Every path bakery uses for one cluster, under one build root."""

    root: Path
    cluster: str

    @property
    def base(self) -> Path:
        return self.root / self.cluster

    @property
    def pki(self) -> Path:
        return self.base / "pki"

    @property
    def nodes(self) -> Path:
        return self.base / "nodes"

    def node(self, name: str) -> Path:
        return self.nodes / name

    @property
    def state(self) -> Path:
        return self.base / "state.json"

    @property
    def images(self) -> Path:
        return self.base / "images.json"

    @property
    def local(self) -> Path:
        return self.base / "local"


def paths(cluster: str, root: str | Path = "build") -> ClusterPaths:
    return ClusterPaths(Path(root), cluster)


def load(p: ClusterPaths) -> dict[str, Any]:
    """The cluster's state, or a fresh one when none was written yet."""
    try:
        data = json.loads(p.state.read_text())
    except FileNotFoundError:
        return {"version": STATE_VERSION, "cluster": p.cluster}
    except (OSError, json.JSONDecodeError) as e:
        raise StateError(f"{p.state}: unreadable state ({e}); move it aside to start over") from None
    if not isinstance(data, dict) or data.get("cluster") != p.cluster:
        raise StateError(f"{p.state}: belongs to cluster {data.get('cluster')!r}, not {p.cluster!r}")
    return data


def save(p: ClusterPaths, data: dict[str, Any]) -> None:
    data = {**data, "version": STATE_VERSION, "cluster": p.cluster}
    atomic_write_json(p.state, data)


def update(p: ClusterPaths, **sections: Any) -> dict[str, Any]:
    """Read, merge top-level sections, write back. Returns the new state."""
    data = load(p)
    data.update(sections)
    save(p, data)
    return data
