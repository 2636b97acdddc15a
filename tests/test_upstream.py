"""Rendered flags, config fields and manifests against the Kubernetes references
(bakery/reference): the examples are clean (tests/test_render.py checks every example
and golden scenario), and each kind of planted mistake is reported."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bakery import discovery, pki, reference, render, spec, topology, validate, versions
from bakery.reference.checks import check_files, component_argv, unit_command
from bakery.render import configs, flags
from tests.conftest import need

REPO = Path(__file__).resolve().parent.parent
SEED = b"bakery upstream tests"
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


# The reference data is generated from the 1.37.2 binaries and Go modules
# (bakery/reference/generate.py); the example is rendered at that version.
REFERENCE_VERSION = "1.37.2"


def node_files(tmp_path: Path, example: str = "aws", version: str | None = REFERENCE_VERSION) -> dict[str, bytes]:
    """The first master's files for an example, at a Kubernetes version with reference data."""
    text = (REPO / "examples" / f"{example}.yaml").read_text()
    if version:
        text = re.sub(r'(?m)^kubernetes_version: .*$', f'kubernetes_version: "{version}"', text)
        text = re.sub(r'(?m)^etcd_version: .*$', "allow_unsupported_versions: true", text)
    s = spec.parse(text, f"{example}.yaml")
    plan = topology.plan(s)
    keys = pki.ensure(plan, tmp_path / "pki", seed=SEED, now=NOW)
    nodes = render.render_cluster(plan, keys, discovery.bootstrap_for(s))
    first = next(iter(nodes.values()))
    return {f.path: f.content for f in first.files}


def edit_command(files: dict[str, bytes], path: str, container: str, add: list[str]) -> None:
    pod = yaml.safe_load(files[path])
    for c in pod["spec"]["containers"]:
        if c["name"] == container:
            c["command"] += add
    files[path] = yaml.safe_dump(pod).encode()


REF = reference.load("1.37")
APISERVER = f"{flags.MANIFESTS}/kube-apiserver.manifest"
SCHEDULER = f"{flags.MANIFESTS}/kube-scheduler.manifest"
CONTROLLER = f"{flags.MANIFESTS}/kube-controller-manager.manifest"


@pytest.fixture(scope="module")
def aws(tmp_path_factory) -> dict[str, bytes]:
    return node_files(tmp_path_factory.mktemp("aws"))


def test_render_is_clean_for_every_minor_with_data(tmp_path: Path):
    for minor in reference.minors():
        files = node_files(tmp_path / minor, version=f"{minor}.0")
        ref, note = reference.select(f"{minor}.0")
        assert note is None and ref.minor == minor
        assert check_files(ref, files) == ([], []), minor


def test_planted_unknown_flag_is_an_error(aws):
    files = dict(aws)
    edit_command(files, APISERVER, "kube-apiserver", ["--no-such-flag=1"])
    errors, _ = check_files(REF, files)
    assert errors == [f"{APISERVER} (kube-apiserver): kube-apiserver --no-such-flag is not a flag of kube-apiserver 1.37"]


def test_planted_removed_flag_is_an_error_with_its_replacement(aws):
    files = dict(aws)
    edit_command(files, CONTROLLER, "kube-controller-manager", ["--pod-eviction-timeout=5m"])
    errors, _ = check_files(REF, files)
    assert errors == [f"{CONTROLLER} (kube-controller-manager): kube-controller-manager --pod-eviction-timeout is removed "
                      "(kube-controller-manager v1.37.2 answers: unknown flag: --pod-eviction-timeout) [Kubernetes 1.37]"]


def test_planted_deprecated_flag_is_a_warning_naming_the_replacement(aws):
    files = dict(aws)
    edit_command(files, SCHEDULER, "kube-scheduler", ["--kubeconfig=/etc/kubernetes/scheduler.conf"])
    errors, warnings = check_files(REF, files)
    assert errors == []
    assert warnings == [f"{SCHEDULER} (kube-scheduler): kube-scheduler --kubeconfig is deprecated in Kubernetes 1.37: "
                        "path to kubeconfig file with authorization and master location information. "
                        "This parameter is ignored if a config file is specified in --config."]


def test_planted_unknown_config_fields_are_errors(aws):
    files = dict(aws)
    kubelet = yaml.safe_load(files[configs.KUBELET_CONFIG])
    kubelet["notAField"] = 1
    kubelet["authentication"]["anonymous"]["allowed"] = True
    files[configs.KUBELET_CONFIG] = yaml.safe_dump(kubelet).encode()
    sched = yaml.safe_load(files[configs.SCHEDULER_CONFIG])
    sched["clientConnection"]["kubeConfig"] = "/x"  # the field is kubeconfig
    files[configs.SCHEDULER_CONFIG] = yaml.safe_dump(sched).encode()
    errors, _ = check_files(REF, files)
    assert sorted(errors) == sorted([
        f"{configs.KUBELET_CONFIG}: notAField is not a field of KubeletConfiguration (kubelet.config.k8s.io/v1beta1) in Kubernetes 1.37",
        f"{configs.KUBELET_CONFIG}: authentication.anonymous.allowed is not a field of KubeletConfiguration "
        "(kubelet.config.k8s.io/v1beta1) in Kubernetes 1.37",
        f"{configs.SCHEDULER_CONFIG}: clientConnection.kubeConfig is not a field of KubeSchedulerConfiguration "
        "(kubescheduler.config.k8s.io/v1) in Kubernetes 1.37",
    ])


def test_free_form_maps_in_configs_are_not_fields(aws):
    files = dict(aws)
    kubelet = yaml.safe_load(files[configs.KUBELET_CONFIG])
    kubelet["featureGates"] = {"AnythingAtAll": True}
    kubelet["evictionHard"] = {"memory.available": "100Mi"}
    files[configs.KUBELET_CONFIG] = yaml.safe_dump(kubelet).encode()
    assert check_files(REF, files) == ([], [])


def test_planted_unknown_pod_field_is_an_error(aws):
    files = dict(aws)
    pod = yaml.safe_load(files[APISERVER])
    pod["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    pod["spec"]["volumes"][0]["hostPath"]["kind"] = "Directory"
    files[APISERVER] = yaml.safe_dump(pod).encode()
    errors, _ = check_files(REF, files)
    assert sorted(errors) == [
        f"{APISERVER}: spec.containers[0].imagePullPolicyy is not a field of Container in Kubernetes 1.37",
        f"{APISERVER}: spec.volumes[0].hostPath.kind is not a field of HostPathVolumeSource in Kubernetes 1.37",
    ]


def test_systemd_unit_flags_come_from_the_environment_file(aws):
    argv = unit_command(aws["/etc/systemd/system/kubelet.service"].decode(), {p: d.decode() for p, d in aws.items()})
    assert argv == ["/usr/bin/kubelet", *flags.kubelet_args(*_plan_node())]
    files = dict(aws)
    files["/etc/default/kubelet"] = files["/etc/default/kubelet"].replace(
        b'KUBELET_ARGS="', b'KUBELET_ARGS="--register-with-taints=a=b:NoSchedule --keep-terminated-pod-volumes ')
    errors, warnings = check_files(REF, files)
    assert errors == ["/etc/systemd/system/kubelet.service: kubelet --keep-terminated-pod-volumes is removed "
                      "(kubelet v1.37.2 answers: unknown flag: --keep-terminated-pod-volumes) [Kubernetes 1.37]"]
    assert warnings == ["/etc/systemd/system/kubelet.service: kubelet --register-with-taints is deprecated in Kubernetes 1.37: "
                        "This parameter should be set via the config file specified by the Kubelet's --config flag. "
                        "See https://kubernetes.io/docs/tasks/administer-cluster/kubelet-config-file/ for more information."]


def _plan_node():
    s = spec.load(REPO / "examples" / "aws.yaml")
    plan = topology.plan(s)
    return plan, plan.nodes[0]


def test_the_fatal_control_plane_node_label_is_caught(aws):
    files = dict(aws)
    files["/etc/default/kubelet"] = files["/etc/default/kubelet"].replace(
        b'KUBELET_ARGS="', b'KUBELET_ARGS="--node-labels=node-role.kubernetes.io/control-plane=,node.kubernetes.io/pool=a,team=x ')
    errors, _ = check_files(REF, files)
    assert len(errors) == 1 and "'node-role.kubernetes.io/control-plane' is in the kubernetes.io/k8s.io namespace" in errors[0]


def test_legacy_and_unknown_controller_names(aws):
    files = dict(aws)
    pod = yaml.safe_load(files[CONTROLLER])
    cmd = pod["spec"]["containers"][0]["command"]
    i = next(i for i, a in enumerate(cmd) if a.startswith("--controllers="))
    cmd[i] = "--controllers=*,bootstrapsigner,-tokencleaner,no-such-controller"
    files[CONTROLLER] = yaml.safe_dump(pod).encode()
    errors, warnings = check_files(REF, files)
    assert errors == [f"{CONTROLLER} (kube-controller-manager): kube-controller-manager --controllers: "
                      "'no-such-controller' is not a controller of Kubernetes 1.37"]
    # the binary accepts the old names but does not say what they stand for
    assert [w.split("--controllers: ", 1)[1] for w in warnings] == [
        "'bootstrapsigner' is a legacy alias (kube-controller-manager v1.37.2 accepts it; not a name its --help lists)",
        "'tokencleaner' is a legacy alias (kube-controller-manager v1.37.2 accepts it; not a name its --help lists)"]


def test_go_runner_wrapped_commands_are_found():
    assert component_argv(["/go-runner", "--log-file=/x", "/usr/local/bin/kube-apiserver", "--v=2"]) == ("kube-apiserver", ["--v=2"])
    assert component_argv(["etcd", "--name=x"]) is None
    assert component_argv(["/go-runner", "--also-stdout=false"]) is None


def test_every_supported_minor_has_its_own_data_and_others_say_which_they_are_checked_against():
    assert reference.minors() == list(versions.SUPPORTED_MINORS)
    for minor in versions.SUPPORTED_MINORS:
        ref, note = reference.select(versions.KUBERNETES[minor][-1])
        assert ref.minor == minor and note is None
    ref, note = reference.select("1.29.0")  # past end of life (allow_unsupported_versions): the oldest there is
    assert ref.minor == reference.minors()[0] and note and "1.29" in note
    ref, note = reference.select("1.40.0")
    assert ref.minor == reference.minors()[-1] and note and "1.40" in note


def test_every_supported_minor_renders_clean_against_the_data_it_is_checked_with(tmp_path: Path):
    """bakery's render of every supported minor passes that minor's own data."""
    for minor in versions.SUPPORTED_MINORS:
        version = versions.KUBERNETES[minor][-1]
        files = node_files(tmp_path / minor, version=version)
        ref, note = reference.select(version)
        assert (note is None) == (minor in reference.minors())
        assert check_files(ref, files) == ([], []), minor


def test_every_reference_file_names_its_source():
    for minor in reference.minors():
        for path in (reference.HERE / minor).iterdir():
            doc = json.loads(path.read_text())["_source"] if path.suffix == ".json" else yaml.safe_load(path.read_text())["source"]
            assert {"repository", "path", "version"} <= set(doc), path
            assert minor in doc["version"] or minor.split(".")[1] in doc["version"], path


def test_bakery_validate_reports_planted_extra_args(tmp_path: Path):
    text = (REPO / "examples" / "aws.yaml").read_text() + (
        "\napiserver:\n  extra_args:\n    no-such-flag: \"1\"\nscheduler:\n  extra_args:\n    profiling: \"false\"\n")
    (tmp_path / "c.yaml").write_text(text)
    r = subprocess.run([sys.executable, "-m", "bakery.cli", "validate", "-f", "c.yaml"], cwd=tmp_path,
                       capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "kube-apiserver --no-such-flag is not a flag of kube-apiserver 1.37" in r.stderr
    assert "warning: prod-aws-master-0: " in r.stderr and "kube-scheduler --profiling is deprecated" in r.stderr
    assert not (tmp_path / "build").exists()


def test_check_node_passes_the_version_through(aws):
    files = dict(aws)
    edit_command(files, APISERVER, "kube-apiserver", ["--no-such-flag=1"])
    user_data = render.cloud_config("n", [render.NodeFile(p, d) for p, d in files.items()], [])
    with_version = validate.check_node(user_data, schema=None, kubernetes_version="1.37.2")
    assert [p for p in with_version.problems if "kube-apiserver" in p] == [
        f"{APISERVER} (kube-apiserver): kube-apiserver --no-such-flag is not a flag of kube-apiserver 1.37"]
    without = validate.check_node(user_data, schema=None)
    assert not any("no-such-flag" in p for p in without.problems)


def test_pod_fields_match_the_official_client_models():
    """bakery/reference/1.37/pod.json (reflected from k8s.io/api v0.37.2) against the PyPI
    `kubernetes` 37.x client (dev extra), whose models come from the same release's
    OpenAPI. The client writes List[T] and Dict[str, T] where the file keeps list[T] and
    dict(str, T)."""
    try:
        import kubernetes
        from kubernetes.client import models
    except ImportError:
        need("the PyPI kubernetes client (dev extra)", False, "make setup")

    need(f"the PyPI kubernetes 37.x client (installed: {kubernetes.__version__})", kubernetes.__version__.startswith("37."),
         "make setup")
    types = reference.load("1.37").pod_types
    assert {"V1Pod", "V1PodSpec", "V1Container", "V1Probe", "V1VolumeMount", "V1Volume", "V1HostPathVolumeSource"} <= set(types)

    def notation(t: str) -> str:
        t = re.sub(r"\bList\[", "list[", t.replace("CoreV1", "V1"))
        return re.sub(r"\bDict\[str, (.*)\]$", r"dict(str, \1)", t)

    for name, fields in types.items():
        cls = getattr(models, name, None) or getattr(models, f"Core{name}")
        expected = {cls.attribute_map[a]: notation(t) for a, t in cls.openapi_types.items()}
        assert fields == expected, name


def test_authentication_config_is_checked(tmp_path: Path):
    files = node_files(tmp_path, version="1.37.2")
    conf = yaml.safe_load(files[configs.AUTHENTICATION_CONFIG])
    conf["anonymous"]["paths"] = ["/livez"]  # the field is conditions
    files[configs.AUTHENTICATION_CONFIG] = yaml.safe_dump(conf).encode()
    errors, _ = check_files(reference.load("1.37"), files)
    assert errors == [f"{configs.AUTHENTICATION_CONFIG}: anonymous.paths is not a field of AuthenticationConfiguration "
                      "(apiserver.config.k8s.io/v1) in Kubernetes 1.37"]
