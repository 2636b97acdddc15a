"""Issue 23: what the spec grammar accepted before, one test per item, each through
spec.parse (the one path validate, render, up and the node agent share).

Every refusal names the key, the value as written and the rule that bit; the asserted
text is the part a user reads to fix the file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bakery import errors, spec

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = {p.stem: p.read_text() for p in sorted((REPO / "examples").glob("*.yaml"))}
ETCD = "etcd:\n  bootstrap: static\n"


def example_with(name: str, old: str, new: str) -> str:
    text = EXAMPLES[name]
    assert old in text, (name, old)
    return text.replace(old, new, 1)


def refused(text: str) -> dict[str, str]:
    """key -> message of every problem spec.parse reports (it must report some)."""
    with pytest.raises(spec.SpecError) as caught:
        spec.parse(text)
    assert caught.value.exit_code == errors.SpecError.exit_code == 2
    return {p.key: p.message for p in caught.value.problems}


# (example, old, new, key, the words the message must hold)
YAML11_BOOLEANS = {
    "load_balancer.port: yes": ("aws", "  port: 6443", "  port: yes", "load_balancer.port",
                                ["`yes`", "is a boolean in YAML 1.1", "1 to 65535"]),
    "etcd.client_port: true": ("aws", ETCD, ETCD + "  client_port: true\n", "etcd.client_port",
                               ["`true`", "is a boolean in YAML", "1 to 65535"]),
    "etcd.peer_port: on": ("aws", ETCD, ETCD + "  peer_port: on\n", "etcd.peer_port",
                           ["`on`", "is a boolean in YAML 1.1", "1 to 65535"]),
    "network.first_host: true": ("aws", "first_host: 10", "first_host: true", "network.first_host",
                                 ["`true`", "is a boolean in YAML", "whole number"]),
    "local.cpus: true": ("local", "cpus: 1", "cpus: true", "local.cpus", ["`true`", "is a boolean in YAML", "whole number"]),
}
LAX_COERCIONS = {
    'masters: "3"': ("aws", "masters: 3", 'masters: "3"', "masters", ['`"3"`', "is a string in YAML (it is quoted)", "without quotes"]),
    "masters: 3.0": ("aws", "masters: 3", "masters: 3.0", "masters", ["`3.0`", "is a float in YAML", "whole number"]),
    'load_balancer.port: "6443"': ("aws", "  port: 6443", '  port: "6443"', "load_balancer.port",
                                   ['`"6443"`', "is a string in YAML (it is quoted)", "without quotes, 6443"]),
}
RANGES = {
    "service_cidr /31": ("aws", "service_cidr: 10.96.0.0/12", "service_cidr: 10.96.0.0/31", "network.service_cidr",
                         ["10.96.0.0/31", "holds 2 addresses", "at least a /28"]),
    "pod_cidr /28": ("aws", "pod_cidr: 10.244.0.0/16", "pod_cidr: 10.244.0.0/28", "network.pod_cidr",
                     ["10.244.0.0/28", "--node-cidr-mask-size", "too few for 3 masters", "at least a /22"]),
    "gcp subnet multicast": ("gcp", "subnet: 10.128.0.0/20", "subnet: 224.0.0.0/4", "network.subnet",
                             ["224.0.0.0/4", "multicast", "RFC 5771", "GCP needs a unicast range"]),
    "gcp subnet link-local": ("gcp", "subnet: 10.128.0.0/20", "subnet: 169.254.0.0/24", "network.subnet",
                              ["169.254.0.0/24", "link-local", "RFC 3927", "GCP needs a unicast range"]),
    "load_balancer.port: 22": ("aws", "  port: 6443", "  port: 22", "load_balancer.port",
                               ["port 22", "system port (0-1023", "from 1024"]),
    "first_host: 1 on AWS": ("aws", "first_host: 10", "first_host: 1", "network.first_host",
                             ["10.0.1.1", "host number 1", "AWS reserves the first four addresses", "at least 4"]),
    "registry port 99999": ("aws", "registry: registry.k8s.io", "registry: registry.example.com:99999", "images.registry",
                            ["registry.example.com:99999", "port 99999", "not a TCP port (1-65535)"]),
    "same zone twice": ("aws", "{name: us-east-1b, subnet: 10.0.2.0/24}", "{name: us-east-1a, subnet: 10.0.2.0/24}",
                        "aws.zones[1].name", ["us-east-1a", "listed twice", "entries 0 and 1"]),
}
SUPPORTED_K8S = "supported minors: 1.35, 1.36, 1.37"
SUPPORTED_ETCD = "supported: 3.6, 3.7"
VERSIONS = {
    "kubernetes 99.0.0": ("aws", '"1.37.2"', '"99.0.0"', "kubernetes_version", ["Kubernetes 99.0", "newer than any", SUPPORTED_K8S]),
    "kubernetes 1.99.0": ("aws", '"1.37.2"', '"1.99.0"', "kubernetes_version", ["Kubernetes 1.99", "newer than any", SUPPORTED_K8S]),
    "kubernetes 2.0.0": ("aws", '"1.37.2"', '"2.0.0"', "kubernetes_version", ["Kubernetes 2.0", "newer than any", SUPPORTED_K8S]),
    "kubernetes 1.031.4": ("aws", '"1.37.2"', '"1.031.4"', "kubernetes_version", ["'1.031.4'", "without leading zeros"]),
    "etcd 3.99.0": ("aws", '"3.7.4"', '"3.99.0"', "etcd_version", ["etcd 3.99", SUPPORTED_ETCD]),
    "etcd 4.0.0": ("aws", '"3.7.4"', '"4.0.0"', "etcd_version", ["etcd 4.0", SUPPORTED_ETCD]),
}
ITEMS = {**YAML11_BOOLEANS, **LAX_COERCIONS, **RANGES, **VERSIONS}


@pytest.mark.parametrize("item", sorted(ITEMS))
def test_each_item_of_issue_23_is_refused_naming_key_value_and_rule(item: str) -> None:
    name, old, new, key, words = ITEMS[item]
    problems = refused(example_with(name, old, new))
    assert key in problems, problems
    for word in words:
        assert word in problems[key], (word, problems[key])


def test_the_examples_themselves_still_pass_without_warnings() -> None:
    for name, text in EXAMPLES.items():
        assert spec.parse(text).warnings == (), name


def test_etcd_ports_far_apart_are_accepted_with_a_note() -> None:
    parsed = spec.parse(example_with("aws", ETCD, ETCD + "  client_port: 2379\n  peer_port: 40000\n"))
    (warning,) = parsed.warnings
    assert warning.key == "etcd.peer_port", warning
    assert "2379 (client) and 40000 (peer) follow no convention" in warning.message
    # one apart is a convention: no note
    assert spec.parse(example_with("aws", ETCD, ETCD + "  client_port: 12379\n  peer_port: 12380\n")).warnings == ()


HARDENING = {
    "authorization-mode": ("AlwaysAllow", "--authorization-mode=AlwaysAllow", "Node,RBAC"),
    "anonymous-auth": ("'true'", "--anonymous-auth=true", "anonymous requests refused"),
    "profiling": ("'true'", "--profiling=true", "profiling off"),
    "tls-cert-file": ("/etc/shadow", "--tls-cert-file=/etc/shadow", "/etc/kubernetes/"),
}


@pytest.mark.parametrize("flag", sorted(HARDENING))
def test_an_extra_arg_undoing_hardening_is_refused_unless_overridden_then_warned_every_parse(flag: str) -> None:
    value, shown, hardening = HARDENING[flag]
    text = EXAMPLES["aws"] + f"apiserver:\n  extra_args:\n    {flag}: {value}\n"
    key = f"apiserver.extra_args.{flag}"
    message = refused(text)[key]
    assert shown in message and hardening in message and f"apiserver.hardening_overrides: [{flag}]" in message
    overridden = text + f"  hardening_overrides: [{flag}]\n"
    for _ in range(2):  # every run, not once
        (warning,) = spec.parse(overridden).warnings
        assert warning.key == key and shown in warning.message and "overridden on purpose" in warning.message
    # the override is per flag: naming another one does not cover this one
    other = next(f for f in sorted(HARDENING) if f != flag)
    assert key in refused(text + f"  hardening_overrides: [{other}]\n")
