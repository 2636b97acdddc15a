"""cluster.yaml parsing: every shipped example is valid; each kind of bad input gets one
clear line naming the file, the line and the key."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from bakery import spec, versions
from bakery.errors import SpecError

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))

MINIMAL = "name: demo\nprovider: aws\naws: {region: us-east-1}\n"
FIXED = "name: demo\nprovider: aws\naws: {region: us-east-1, masters: instances}\n"  # plain instances at fixed addresses


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as e:
        spec.parse(text, "cluster.yaml")
    return e.value.lines()


def test_examples_cover_every_provider():
    assert {p.stem for p in EXAMPLES} >= {"local", "aws", "gcp"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_parse_and_match_the_exported_schema(path: Path):
    parsed = spec.load(path)
    assert parsed.provider == path.stem or parsed.provider in ("aws", "gcp", "local")
    import yaml

    jsonschema.Draft202012Validator(spec.json_schema()).validate(yaml.safe_load(path.read_text()))


def test_schema_is_json_and_lists_top_level_keys():
    schema = json.loads(json.dumps(spec.json_schema()))
    assert {"name", "provider", "masters", "etcd", "election", "load_balancer"} <= set(schema["properties"])
    assert schema["required"] == ["name", "provider"]


def test_defaults_are_filled_in():
    s = spec.parse(MINIMAL)
    # aws.masters defaults to an autoscaling group, whose masters bootstrap etcd through the store
    assert (s.masters, s.election, s.etcd.bootstrap, s.key_algorithm) == (3, "builtin", "store", "ecdsa-p256")
    assert s.aws is not None and s.aws.masters == "asg" and s.aws.health_check_grace_seconds == 900
    assert spec.parse(FIXED).etcd.bootstrap == "static"  # fixed addresses keep the static default
    assert s.image_ref("kube-apiserver") == f"registry.k8s.io/kube-apiserver:v{versions.DEFAULT_KUBERNETES}"
    assert s.image_ref("etcd") == f"registry.k8s.io/etcd:{versions.DEFAULT_ETCD}-0"


def test_spec_is_frozen():
    s = spec.parse(MINIMAL)
    with pytest.raises(Exception, match="frozen"):
        s.masters = 5  # type: ignore[misc]


def test_unknown_key_names_line_and_suggests():
    (line,) = problems("name: demo\nprovider: aws\nmasers: 3\n")
    assert line.startswith("cluster.yaml:3: masers: unknown key 'masers'; did you mean 'masters'?")


def test_unknown_nested_key_suggests_from_its_own_section():
    (line,) = problems("name: demo\nprovider: aws\netcd:\n  bootstrp: static\n")
    assert line.startswith("cluster.yaml:4: etcd.bootstrp: unknown key 'bootstrp'; did you mean 'bootstrap'?")


def test_yaml_syntax_error_has_line():
    (line,) = problems("name: demo\nprovider: aws\nnetwork:\n  subnet: [10.0.0.0/24\n")
    assert line.startswith("cluster.yaml:") and "YAML syntax error" in line
    assert int(line.split(":")[1]) >= 4


def test_duplicate_key_is_an_error():
    (line,) = problems("name: demo\nprovider: aws\nname: other\n")
    assert "cluster.yaml:3" in line and "duplicate key 'name'" in line


@pytest.mark.parametrize("masters", [0, 2, 4, 6, 9])
def test_even_zero_or_too_many_masters(masters: int):
    (line,) = problems(f"{MINIMAL}masters: {masters}\n")
    assert line.startswith("cluster.yaml:4: masters:") and "use 3, 5 or 7" in line


def test_address_outside_subnet():
    text = FIXED + "network:\n  subnet: 10.0.0.0/24\n  addresses: [10.0.0.5, 10.0.0.6, 10.9.9.9]\n"
    (line,) = problems(text)
    assert line.startswith("cluster.yaml:6: network.addresses[2]: 10.9.9.9 is outside")


def test_duplicate_addresses():
    text = FIXED + "network:\n  subnet: 10.0.0.0/24\n  addresses:\n  - 10.0.0.5\n  - 10.0.0.5\n  - 10.0.0.7\n"
    (line,) = problems(text)
    assert line.startswith("cluster.yaml:8: network.addresses[1]: 10.0.0.5 is given to masters 0 and 1")


def test_kubernetes_below_minimum():
    (line,) = problems(MINIMAL + 'kubernetes_version: "1.20.4"\n')
    assert line == "cluster.yaml:4: kubernetes_version: Kubernetes 1.20.4 is older than the supported minimum 1.29"


def test_removed_2015_options():
    lines = problems(MINIMAL + "basic_auth_file: /srv/kubernetes/basic_auth.csv\napiserver:\n  extra_args:\n    insecure-port: '8080'\n")
    assert lines[0].startswith("cluster.yaml:4: basic_auth_file: unknown key 'basic_auth_file': removed in Kubernetes 1.19")
    assert lines[1].startswith("cluster.yaml:7: apiserver.extra_args.insecure-port: --insecure-port is removed in Kubernetes 1.24")


def test_every_problem_is_listed_in_line_order():
    lines = problems("name: Bad_Name\nprovider: azure\nmasters: 4\n")
    assert [line.split(":")[1] for line in lines] == ["1", "2", "3"]


def test_missing_provider_section_is_reported():
    (line,) = problems("name: demo\nprovider: gcp\n")
    assert "the 'gcp' section is missing" in line


def test_mode_specific_requirements():
    (line,) = problems(FIXED + "etcd:\n  bootstrap: dns-srv\n")
    assert "etcd.srv_domain" in line and "needs the domain" in line
    lines = problems(FIXED + 'allow_unsupported_versions: true\netcd_version: "3.5.21"\netcd:\n  bootstrap: discovery-v3\n')
    assert any("etcd 3.6" in x for x in lines) and any("discovery_endpoints" in x for x in lines)


def test_missing_file_and_non_mapping(tmp_path: Path):
    with pytest.raises(SpecError, match="no such file"):
        spec.load(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(SpecError) as e:
        spec.load(tmp_path / "list.yaml")
    assert e.value.lines() == [f"{tmp_path / 'list.yaml'}:1: the file must be a YAML mapping (name: ..., provider: ...)"]
