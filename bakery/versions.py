"""The Kubernetes and etcd releases bakery supports, and how they pair. Pure data.

Kubernetes: the three minors upstream maintains (kubernetes.io/releases: the newest
three minors get patch releases, each for about fourteen months). Each lists the patch
releases bakery has built and run; the newest is the default.

etcd: paired with each Kubernetes minor as upstream pairs them. kubeadm's
`cmd/kubeadm/app/constants/constants.go` (DefaultEtcdVersion) of each release is the
reference: v1.35.4 pins 3.6.6, v1.36.3 pins 3.6.8, v1.37.2 pins 3.7.0 (and kops ships
3.7 for 1.37). bakery takes the newest patch of that etcd minor it has run: those
patches carry the minor's fixes (3.6.8+ and 3.7.x are the ones upstream patches).

A version outside these lists is refused by the spec (bakery/spec.py) unless the spec
sets `allow_unsupported_versions: true`, which is warned about on every run.
"""

from __future__ import annotations

from dataclasses import dataclass

# What the Go module proxy served of k8s.io/kubernetes and go.etcd.io/etcd when this
# table was last written (`go list -m -versions`), within the supported minors.
KUBERNETES: dict[str, tuple[str, ...]] = {
    "1.35": ("1.35.4",),
    "1.36": ("1.36.1", "1.36.3"),
    "1.37": ("1.37.2",),
}
ETCD: dict[str, tuple[str, ...]] = {
    "3.6": ("3.6.0", "3.6.4", "3.6.5", "3.6.8", "3.6.12", "3.6.13", "3.6.14", "3.6.15", "3.6.16", "3.6.17"),
    "3.7": ("3.7.0", "3.7.1", "3.7.2", "3.7.3", "3.7.4"),
}
# Kubernetes minor -> the etcd minor its kubeadm pins (see the module docstring).
ETCD_FOR_KUBERNETES: dict[str, str] = {"1.35": "3.6", "1.36": "3.6", "1.37": "3.7"}
# etcd minors a Kubernetes minor may run besides its own: the one before, so that a
# cluster can move Kubernetes first and etcd after (etcd upgrades one minor at a time).
ETCD_ALSO_ACCEPTED: dict[str, tuple[str, ...]] = {"1.35": (), "1.36": (), "1.37": ("3.6",)}
# The oldest minors whose flags and APIs bakery's render uses at all; below this even
# allow_unsupported_versions cannot help.
OLDEST_RENDERABLE_KUBERNETES = (1, 29)
OLDEST_RENDERABLE_ETCD = (3, 5)


def _key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def minor_of(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    return f"{int(major)}.{int(minor)}"


SUPPORTED_MINORS: tuple[str, ...] = tuple(sorted(KUBERNETES, key=_key))
DEFAULT_KUBERNETES: str = KUBERNETES[SUPPORTED_MINORS[-1]][-1]


def default_etcd(kubernetes_version: str) -> str:
    """The etcd release bakery pairs with `kubernetes_version` (newest patch of the paired minor)."""
    etcd_minor = ETCD_FOR_KUBERNETES.get(minor_of(kubernetes_version), ETCD_FOR_KUBERNETES[SUPPORTED_MINORS[-1]])
    return ETCD[etcd_minor][-1]


DEFAULT_ETCD: str = default_etcd(DEFAULT_KUBERNETES)


@dataclass(frozen=True)
class Verdict:
    """Whether a version is supported; `problem` says why not and what is."""

    supported: bool
    problem: str = ""


def check_kubernetes(version: str) -> Verdict:
    v = version.lstrip("v")
    minor = minor_of(v)
    supported = ", ".join(SUPPORTED_MINORS)
    if minor not in KUBERNETES:
        newer = _key(minor) > _key(SUPPORTED_MINORS[-1])
        why = "is newer than any release bakery knows" if newer else "is past upstream end of life"
        return Verdict(False, f"Kubernetes {minor} {why}; supported minors: {supported} (default {DEFAULT_KUBERNETES})")
    if v not in KUBERNETES[minor]:
        return Verdict(False, f"Kubernetes {v} is not a {minor} release bakery has built and run; "
                              f"known {minor} releases: {', '.join(KUBERNETES[minor])}")
    return Verdict(True)


def check_etcd(version: str, kubernetes_version: str) -> Verdict:
    v = version.lstrip("v")
    k_minor = minor_of(kubernetes_version)
    e_minor = minor_of(v)
    paired = ETCD_FOR_KUBERNETES.get(k_minor)
    if e_minor not in ETCD:
        return Verdict(False, f"etcd {e_minor} is not a release line bakery supports; supported: "
                              f"{', '.join(sorted(ETCD, key=_key))} (default for Kubernetes {k_minor}: {default_etcd(kubernetes_version)})")
    if v not in ETCD[e_minor]:
        return Verdict(False, f"etcd {v} is not a {e_minor} release bakery has built and run; known: {', '.join(ETCD[e_minor])}")
    if paired is not None and e_minor != paired and e_minor not in ETCD_ALSO_ACCEPTED.get(k_minor, ()):
        return Verdict(False, f"etcd {e_minor} is not what Kubernetes {k_minor} runs with: upstream (kubeadm) pairs it "
                              f"with etcd {paired} (default {default_etcd(kubernetes_version)})")
    return Verdict(True)
