"""What the Kubernetes releases bakery checks against say, one folder per minor.

    bakery/reference/<minor>/
      kube-apiserver.yaml, kube-scheduler.yaml,       flag names: current, deprecated (with the
      kube-controller-manager.yaml, kubelet.yaml      binary's message), removed (its answer)
      kubelet-config.yaml                             KubeletConfiguration fields (dotted paths)
      kube-scheduler-config.yaml                      KubeSchedulerConfiguration fields
      authentication-config.yaml                      the API server's AuthenticationConfiguration fields
      pod.json                                        Pod/Container field names and types

Every file is generated, from the release's binaries (--help and probes) and its staging
Go modules (bakery/reference/gen), by `python -m bakery.reference.generate --kubernetes
<version>` (bakery/reference/generate.py; README.md beside it), and names its source and
command. Nothing is fetched at run time. `select(version)` picks the data for a spec's
Kubernetes version; the checks that use it are in bakery.reference.checks.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
COMPONENTS = ("kube-apiserver", "kube-scheduler", "kube-controller-manager", "kubelet")


@dataclass(frozen=True)
class Flags:
    current: frozenset[str]
    deprecated: dict[str, str]  # name -> replacement
    removed: dict[str, str]  # name -> when, and what instead
    controllers: frozenset[str] = frozenset()
    controller_aliases: dict[str, str] | None = None
    node_labels: dict[str, list[str]] | None = None  # kubelet: allowed, allowed_namespaces


@dataclass(frozen=True)
class ConfigKind:
    api_version: str
    kind: str
    fields: frozenset[str]  # dotted paths; "a.*" means a's keys are not fields
    deprecated: dict[str, str]


@dataclass(frozen=True)
class Reference:
    minor: str
    flags: dict[str, Flags]  # component -> flags
    configs: dict[str, ConfigKind]  # kind -> fields
    pod_types: dict[str, dict[str, str]]  # model name -> {json field: type}


def minors() -> list[str]:
    """Minor versions with reference data, oldest first."""
    found = [p.name for p in HERE.iterdir() if p.is_dir() and re.fullmatch(r"\d+\.\d+", p.name)]
    return sorted(found, key=lambda m: tuple(int(x) for x in m.split(".")))


def _yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


@functools.cache
def load(minor: str) -> Reference:
    folder = HERE / minor
    flags = {}
    for c in COMPONENTS:
        d = _yaml(folder / f"{c}.yaml")
        flags[c] = Flags(frozenset(d["current"]), dict(d.get("deprecated") or {}), dict(d.get("removed") or {}),
                         frozenset(d.get("controllers") or ()), d.get("controller_aliases"), d.get("node_labels"))
    configs = {}
    for name in ("kubelet-config", "kube-scheduler-config", "authentication-config"):
        d = _yaml(folder / f"{name}.yaml")
        configs[d["kind"]] = ConfigKind(d["apiVersion"], d["kind"], frozenset(d["fields"]), dict(d.get("deprecated") or {}))
    pod = json.loads((folder / "pod.json").read_text())
    return Reference(minor, flags, configs, pod["types"])


def select(kubernetes_version: str) -> tuple[Reference, str | None]:
    """The reference for a version like 1.31.4, and a note when it is not that minor's own.

    A minor without data is checked against the nearest older one (or the oldest there
    is), and the note says so: validate lists it under "not checked".
    """
    m = re.match(r"v?(\d+)\.(\d+)", kubernetes_version)
    if not m:
        raise ValueError(f"not a Kubernetes version: {kubernetes_version!r}")
    want = (int(m[1]), int(m[2]))
    have = minors()
    key = lambda s: tuple(int(x) for x in s.split("."))  # noqa: E731
    exact = f"{want[0]}.{want[1]}"
    if exact in have:
        return load(exact), None
    older = [h for h in have if key(h) < want]
    chosen = older[-1] if older else have[0]
    return load(chosen), f"Kubernetes {exact} has no reference data in bakery/reference; checked against {chosen}'s"
