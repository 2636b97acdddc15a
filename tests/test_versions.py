"""The supported Kubernetes and etcd releases (bakery/versions.py) as the spec enforces them."""

from __future__ import annotations

import pytest

from bakery import spec, versions
from bakery.errors import SpecError

BASE = "name: v\nprovider: local\n"


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as e:
        spec.parse(BASE + text)
    return e.value.lines()


def test_the_default_is_the_newest_supported_release_with_its_paired_etcd():
    s = spec.parse(BASE)
    assert versions.SUPPORTED_MINORS == ("1.35", "1.36", "1.37")
    assert s.kubernetes_version == versions.DEFAULT_KUBERNETES == "1.37.2"
    assert s.etcd_version == versions.DEFAULT_ETCD == "3.7.4"  # kubeadm v1.37.2 pins etcd 3.7


@pytest.mark.parametrize(("k8s", "etcd"), [("1.35.4", "3.6.17"), ("1.36.3", "3.6.17"), ("1.37.2", "3.7.4")])
def test_each_supported_minor_pairs_etcd_as_kubeadm_does(k8s: str, etcd: str):
    assert spec.parse(BASE + f'kubernetes_version: "{k8s}"\n').etcd_version == etcd


@pytest.mark.parametrize("old", ["1.31.4", "1.34.4"])
def test_a_minor_past_end_of_life_is_refused_naming_what_is_supported(old: str):
    (line,) = problems(f'kubernetes_version: "{old}"\n')
    assert "kubernetes_version" in line and "past upstream end of life" in line
    assert "1.35, 1.36, 1.37" in line and "allow_unsupported_versions: true" in line


@pytest.mark.parametrize("v", ["1.99.0", "2.0.0", "99.0.0"])
def test_a_release_no_one_ships_is_refused(v: str):
    (line,) = problems(f'kubernetes_version: "{v}"\n')
    assert "newer than any release bakery knows" in line and "1.37" in line


def test_an_unknown_patch_of_a_supported_minor_names_the_known_ones():
    (line,) = problems('kubernetes_version: "1.36.9"\n')
    assert "1.36.1, 1.36.3" in line


def test_etcd_outside_the_pairing_is_refused():
    (line,) = problems('kubernetes_version: "1.35.4"\netcd_version: "3.7.4"\n')
    assert "etcd_version" in line and "pairs it with etcd 3.6" in line
    (line,) = problems('etcd_version: "3.5.17"\n')
    assert "etcd 3.5 is not a release line bakery supports" in line and "3.6, 3.7" in line
    (line,) = problems('etcd_version: "3.7.99"\n')
    assert "known: 3.7.0, 3.7.1, 3.7.2, 3.7.3, 3.7.4" in line


def test_kubernetes_1_37_may_keep_etcd_3_6_for_a_later_etcd_upgrade():
    assert spec.parse(BASE + 'etcd_version: "3.6.17"\n').etcd_version == "3.6.17"


def test_allow_unsupported_versions_accepts_with_a_warning_on_every_parse():
    s = spec.parse(BASE + 'allow_unsupported_versions: true\nkubernetes_version: "1.31.4"\netcd_version: "3.5.17"\n')
    lines = [str(w) for w in s.warnings]
    assert any("kubernetes_version" in w and "past upstream end of life" in w and "accepted" in w for w in lines)
    assert any("etcd_version" in w for w in lines)


def test_below_what_the_render_can_use_even_the_override_refuses():
    (line,) = problems('allow_unsupported_versions: true\nkubernetes_version: "1.20.0"\n')
    assert "older than the supported minimum 1.29" in line


def test_the_examples_use_the_default_versions(repo):
    for name in ("local", "aws", "gcp"):
        s = spec.load(repo / "examples" / f"{name}.yaml")
        assert (s.kubernetes_version, s.etcd_version) == (versions.DEFAULT_KUBERNETES, versions.DEFAULT_ETCD)
