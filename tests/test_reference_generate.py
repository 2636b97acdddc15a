"""bakery/reference/generate.py: its readers of --help and probe answers, on output the
real v1.37.2 binaries gave (tests/fixtures/reference-1.37.2/, README there), and the
committed bakery/reference/<minor>/ of every supported minor against what the generator
makes from the real binaries and Go modules of the release bakery pins for it (a missing binary or Go toolchain skips on a laptop, fails under CI)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from bakery import reference, versions
from bakery.components import cache
from bakery.reference import generate
from tests.conftest import need

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "reference-1.37.2"
VERSION = "1.37.2"
FLAG_FILES = [f"{c}.yaml" for c in reference.COMPONENTS]
TYPE_FILES = ["kubelet-config.yaml", "kube-scheduler-config.yaml", "authentication-config.yaml", "pod.json"]


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_help_flags_and_their_deprecations():
    flags = generate.parse_help(fixture("kube-scheduler--help.txt"))
    assert {"config", "master", "write-config-to", "secure-port", "leader-elect", "version", "help", "v"} <= set(flags)
    assert len(flags) == 62
    assert generate.help_deprecation(flags["kubeconfig"]) == (
        "path to kubeconfig file with authorization and master location information. "
        "This parameter is ignored if a config file is specified in --config.")
    assert generate.help_deprecation(flags["profiling"]) == (
        "enable profiling via web interface host:port/debug/pprof/. "
        "This parameter is ignored if a config file is specified in --config.")
    assert generate.help_deprecation(flags["config"]) is None
    deprecated = sorted(n for n, t in flags.items() if generate.help_deprecation(t))
    assert deprecated == ["contention-profiling", "kube-api-burst", "kube-api-content-type", "kube-api-qps", "kubeconfig",
                          "pod-max-in-unschedulable-pods-duration", "profiling"]


def test_kubelet_help_deprecation_in_parentheses_and_node_labels():
    flags = generate.parse_help(fixture("kubelet--help.excerpt.txt"))
    assert generate.help_deprecation(flags["address"]) == (
        "This parameter should be set via the config file specified by the Kubelet's --config flag. "
        "See https://kubernetes.io/docs/tasks/administer-cluster/kubelet-config-file/ for more information.")
    assert generate.help_node_labels(flags["node-labels"]) == {
        "allowed": ["beta.kubernetes.io/arch", "beta.kubernetes.io/instance-type", "beta.kubernetes.io/os",
                    "failure-domain.beta.kubernetes.io/region", "failure-domain.beta.kubernetes.io/zone", "kubernetes.io/arch",
                    "kubernetes.io/hostname", "kubernetes.io/os", "node.kubernetes.io/instance-type",
                    "topology.kubernetes.io/region", "topology.kubernetes.io/zone"],
        "allowed_namespaces": ["kubelet.kubernetes.io", "node.kubernetes.io"]}
    assert generate.help_deprecation(flags["node-labels"]) is None


def test_controller_names_from_the_controllers_help():
    flags = generate.parse_help(fixture("kube-controller-manager--help.excerpt.txt"))
    names = generate.help_controllers(flags["controllers"])
    assert len(names) == 49 and names == sorted(names)
    assert {"bootstrap-signer-controller", "token-cleaner-controller", "podgroup-protection-controller"} <= set(names)
    assert not any(n.startswith("Disabled") or " " in n for n in names)


@pytest.mark.parametrize(("name", "file", "expected"), [
    ("kubelet-port", "probe-kube-apiserver--kubelet-port.head.txt",
     ("deprecated", "kubelet-port is deprecated and will be removed.")),
    ("insecure-port", "probe-kube-apiserver--insecure-port.txt", ("removed", "unknown flag: --insecure-port")),
    ("port", "probe-kube-scheduler--port.tail.txt", ("removed", "unknown flag: --port")),
    ("keep-terminated-pod-volumes", "probe-kubelet--keep-terminated-pod-volumes.txt",
     ("removed", "unknown flag: --keep-terminated-pod-volumes")),
    ("enable-logs-handler", "probe-kube-apiserver--enable-logs-handler-x.txt", None),  # the value did not parse: try another
    ("address", "probe-kubelet--address-x.txt", None),  # the kubelet's \"quoted\" form
])
def test_probe_answers(name: str, file: str, expected):
    assert generate.read_probe(name, fixture(file)) == expected


def test_probe_does_not_take_a_longer_name_for_the_flag():
    assert generate.read_probe("port", fixture("probe-kube-apiserver--insecure-port.txt")) == ("current", "")


def test_help_text_of_the_generator_teaches():
    with pytest.raises(SystemExit) as e:
        generate.main(["--help"])
    assert e.value.code == 0


# the committed data of every supported minor, each from its pinned release
RELEASES = [versions.KUBERNETES[m][-1] for m in versions.SUPPORTED_MINORS]


def _binaries(version: str = VERSION) -> Path:
    slot = cache.Slot(cache.root(), "kubernetes", version)
    have = all(slot.has(c) for c in reference.COMPONENTS)
    need(f"the Kubernetes v{version} binaries in {slot.folder}", have, f"bakery binaries --kubernetes-version {version}")
    return slot.folder


def _go() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    need("the Go toolchain", go is not None, "make setup-system")
    assert go is not None
    return go


@pytest.mark.parametrize("version", RELEASES)
def test_committed_flags_are_what_the_binaries_say(version: str):
    """Without the source's marked names: the committed data lists them, so they are
    probed anyway (and the test needs no Go toolchain)."""
    bin_dir = _binaries(version)
    minor = versions.minor_of(version)
    files = {}
    for c in reference.COMPONENTS:
        data = generate.component_flags(c, bin_dir / c, version, reference.HERE)
        files[f"{c}.yaml"] = generate.render_flags(c, version, data)
    for name in FLAG_FILES:
        assert files[name] == (reference.HERE / minor / name).read_text(), f"{name}: run {generate.command(version)}"


def test_the_source_marks_the_hidden_flags_the_committed_data_has():
    """Names only the source's MarkDeprecated calls revealed (the 1.31/1.34 data had none of them)."""
    marked = generate.marked_in_source(VERSION, _go())
    found = {"kube-apiserver": {"audit-webhook-batch-initial-backoff", "kubelet-read-only-port"},
             "kube-controller-manager": {"node-sync-period"}}
    for c, names in found.items():
        d = yaml.safe_load((reference.HERE / "1.37" / f"{c}.yaml").read_text())
        assert names <= marked and names <= set(d["deprecated"]), c


def test_a_binary_of_another_release_is_refused():
    bin_dir = _binaries()
    with pytest.raises(generate.GenerateError, match=r"not Kubernetes v1\.36\.3"):
        generate.component_flags("kube-scheduler", bin_dir / "kube-scheduler", "1.36.3", reference.HERE)


@pytest.mark.parametrize("version", RELEASES)
def test_committed_config_fields_and_pod_types_are_what_the_go_modules_say(version: str):
    types = generate.go_types(version, _go())
    minor = versions.minor_of(version)
    files = {f"{n}.yaml": generate.render_config(version, d) for n, d in generate.config_files(types, version).items()}
    files["pod.json"] = generate.render_pod(generate.pod_file(types, version))
    for name in TYPE_FILES:
        assert files[name] == (reference.HERE / minor / name).read_text(), f"{name}: run {generate.command(version)}"
