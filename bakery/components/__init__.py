"""The real Kubernetes and etcd programs of a spec's versions, obtained once per machine.

    obtain(["kube-apiserver", "etcd"], "1.37.2", "3.7.4") -> {"kube-apiserver": Path, ...}

Two sources behind one call (README "Where the binaries come from"):

- `release`: the official release downloads (dl.k8s.io, etcd's GitHub releases), each
  verified against the checksum its project publishes (bakery/components/release.py);
- `build`: a build from the Go modules the Kubernetes and etcd projects publish, with the Go
  toolchain (bakery/components/gobuild.py); the module system checks every download
  against the Go checksum database's go.sum lines.

`auto` (the default) builds when a Go toolchain is on PATH and downloads otherwise: it
never probes the network to decide. `BAKERY_BINARIES=release|build|auto` or `--source`
choose. Either way the binaries land in one cache per machine (bakery/components/cache.py),
written atomically, and `bake`, `up` and the tests reuse them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bakery.components import cache, gobuild, release
from bakery.errors import ComponentError

KUBERNETES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl")
ETCD = ("etcd", "etcdctl", "etcdutl")
ALL = KUBERNETES + ETCD
SOURCES = ("auto", "build", "release")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Project:
    """Which project a component comes from, and the version it is wanted at."""

    name: str  # "kubernetes" or "etcd"
    version: str  # without a leading v
    components: tuple[str, ...]


def projects(components: Iterable[str], kubernetes_version: str, etcd_version: str) -> list[Project]:
    wanted = list(dict.fromkeys(components))
    unknown = [c for c in wanted if c not in ALL]
    if unknown:
        raise ComponentError(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(ALL)}")
    out = []
    for name, version, members in (("kubernetes", kubernetes_version, KUBERNETES), ("etcd", etcd_version, ETCD)):
        chosen = tuple(c for c in wanted if c in members)
        if chosen:
            out.append(Project(name, version.lstrip("v"), chosen))
    return out


def choose_source(source: str | None = None, env: Mapping[str, str] = os.environ) -> str:
    """`build` or `release`: the one asked for, else `BAKERY_BINARIES`, else by what the
    machine has (a Go toolchain on PATH builds). Never decided by probing the network."""
    chosen = source or env.get("BAKERY_BINARIES") or "auto"
    if chosen not in SOURCES:
        raise ComponentError(f"binary source {chosen!r} is not one of {', '.join(SOURCES)} (--source, BAKERY_BINARIES)")
    if chosen == "auto":
        return "build" if shutil.which("go", path=env.get("PATH")) else "release"
    return chosen


def obtain(components: Iterable[str], kubernetes_version: str, etcd_version: str, *, source: str | None = None,
           root: Path | None = None, progress: Progress | None = None) -> dict[str, Path]:
    """Path of each component's binary in the machine's cache; what is missing is
    downloaded or built first, once, under a lock (a second caller waits and reuses)."""
    say = progress or (lambda _line: None)
    root = root or cache.root()
    out: dict[str, Path] = {}
    for project in projects(components, kubernetes_version, etcd_version):
        slot = cache.Slot(root, project.name, project.version)
        with slot.locked():
            missing = [c for c in project.components if not slot.has(c)]
            if missing:
                how = choose_source(source)
                say(f"{project.name} v{project.version}: {', '.join(missing)} not in {slot.folder}; "
                    f"{'building from the Go modules' if how == 'build' else 'downloading the official release'}")
                fetch = gobuild.build if how == "build" else release.download
                with slot.staging() as work:
                    made = fetch(project.name, project.version, missing, work, root=root, progress=say)
                    for component in missing:
                        slot.install(component, made[component])
            for c in project.components:
                out[c] = slot.path(c)
    return out


def cached(components: Iterable[str], kubernetes_version: str, etcd_version: str, root: Path | None = None) -> dict[str, Path | None]:
    """What the cache already holds, without building or downloading anything."""
    root = root or cache.root()
    out: dict[str, Path | None] = {}
    for project in projects(components, kubernetes_version, etcd_version):
        slot = cache.Slot(root, project.name, project.version)
        for c in project.components:
            out[c] = slot.path(c) if slot.has(c) else None
    return out
