"""build/<cluster>/: where bakery keeps what it learnt, and state.json inside it.

state.json holds facts bakery cannot derive from the spec: the discovery token,
whether etcd was bootstrapped, the load balancer's cloud-assigned names, every
cloud resource id. It is rewritten atomically (0600, under a lock for updates); readers
tolerate a missing file. `prepare` makes build/<cluster>/ with explicit modes and turns
an unusable -o (a file, read-only, not ours) into one StateError line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bakery.errors import OutputError, StateError
from bakery.output import atomic_write_json, locked, make_dirs

STATE_VERSION = 1
BASE_MODE = 0o700  # build/<cluster>/ holds the PKI, admin.kubeconfig and state
ROOT_MODE = 0o755  # the build folder itself, when bakery creates it


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


def check_root(p: ClusterPaths) -> None:
    """The build folder (-o) must be a folder, or not exist yet."""
    for folder in (p.root, p.base):
        if folder.exists() and not folder.is_dir():
            raise StateError(f"{folder}: is a file, not a folder; -o/--build-dir names the folder bakery keeps its outputs in "
                             "(created if missing): move the file aside or choose another folder")


def prepare(p: ClusterPaths) -> Path:
    """Create build/<cluster>/ (0700; the build folder 0755 if bakery creates it), whatever the umask."""
    check_root(p)
    try:
        make_dirs(p.root, ROOT_MODE)
        make_dirs(p.base, BASE_MODE)
    except OutputError as e:
        raise StateError(e.message) from None
    if not os.access(p.base, os.W_OK | os.X_OK):  # also false on a read-only file system
        raise StateError(f"-o {p.root}: cannot write in {p.base} (read-only file system or permissions); "
                         "choose another folder (-o) or fix its permissions")
    return p.base


def load(p: ClusterPaths) -> dict[str, Any]:
    """The cluster's state, or a fresh one when none was written yet."""
    check_root(p)
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
    prepare(p)
    atomic_write_json(p.state, data, 0o600)


def update(p: ClusterPaths, **sections: Any) -> dict[str, Any]:
    """Read, merge top-level sections, write back, under a lock (two commands at once
    do not lose each other's sections). Returns the new state."""
    prepare(p)
    with locked(p.state):
        data = load(p)
        data.update(sections)
        save(p, data)
    return data
