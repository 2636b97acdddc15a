"""The real Kubernetes control plane runs what bakery renders.

Three masters on loopback addresses (tests/control_plane.py), each running the built etcd,
kube-apiserver, kube-controller-manager and kube-scheduler of every supported minor (the
release bakery pins for it, with its paired etcd), one minor after the other, with the
exact command lines, certificates, kubeconfigs, encryption config, audit policy,
authentication config and RBAC addon of `bakery render` (static pods: what the clouds get).
"""

from __future__ import annotations

import base64
import json
import re
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from bakery import versions
from tests.control_plane import CONTROL_PLANE, ControlPlane, bakery, binaries, pod_command

pytestmark = pytest.mark.kubernetes
PKI = "/etc/kubernetes/pki"


# every supported minor, at the release bakery pins for it (the default is the newest's)
RELEASES = [versions.KUBERNETES[m][-1] for m in versions.SUPPORTED_MINORS]


@pytest.fixture(scope="module", params=RELEASES, ids=[f"k8s-{r}" for r in RELEASES])
def cp(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    c = ControlPlane(tmp_path_factory.mktemp("control-plane"), kubernetes_version=request.param)
    c.render()
    try:
        c.start()
        c.wait_ready()
        # the master's own bakery-node-register applies the RBAC addon (its timer retries
        # until the API server takes it; bounded here)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            c.register()
            if c.kubectl("auth", "can-i", "*", "*", check=False).stdout.strip() == "yes":
                break
            time.sleep(2)
        yield c
    finally:
        c.stop()


def _client(cp: ControlPlane, cert: str | None = None) -> httpx.Client:
    """An HTTPS client that trusts the cluster CA, with a client certificate from the
    operator's PKI (build/<cluster>/pki/<cert>.crt) or none."""
    pki = cp.build / cp.name / "pki"
    return _https(pki / "ca.crt", pki / cert if cert else None)


def _https(ca: Path, cert: Path | None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(f"{cert}.crt", f"{cert}.key")
    return httpx.Client(verify=context, timeout=10)


def test_every_api_server_runs_the_rendered_command_and_answers_readyz(cp: ControlPlane):
    for m in cp.masters:
        for component in CONTROL_PLANE:
            proc = m.procs[component]
            assert proc.alive(), f"{m.name} {component} died:\n{proc.tail()}"
            # the rendered command, word for word, but for the binary's path
            assert proc.argv[4:] == [str(cp.bins[component]), *pod_command(m.files / f"etc/kubernetes/manifests/{component}.manifest")[1:]]
    for url in cp.api_urls:
        assert cp.kubectl("get", "--raw=/readyz", server=url).stdout.strip() == "ok"
        version = json.loads(cp.kubectl("get", "--raw=/version", server=url).stdout)
        assert version["gitVersion"] == f"v{cp.kubernetes_version}"


def _acquired(cp: ControlPlane, component: str) -> list[str]:
    """Masters whose component logged taking its Lease (each process logs it once per term)."""
    return [m.name for m in cp.masters if "Successfully acquired lease" in m.procs[component].log.read_text(errors="replace")]


@pytest.mark.parametrize("component", ["kube-scheduler", "kube-controller-manager"])
def test_the_elected_components_take_their_lease_and_another_master_takes_it_over(cp: ControlPlane, component: str):
    deadline = time.monotonic() + 90
    while not _acquired(cp, component) and time.monotonic() < deadline:
        time.sleep(1)
    (holder,) = _acquired(cp, component)
    lease = json.loads(cp.kubectl("get", "lease", "-n", "kube-system", component, "-o", "json").stdout)["spec"]
    assert lease["holderIdentity"] and lease["leaseDurationSeconds"] == 15
    master = next(m for m in cp.masters if m.name == holder)
    master.procs[component].signal(signal.SIGKILL)
    master.procs[component].wait(10)
    # another master's takes it once the lease runs out (15 s) plus its retry period
    # (2 s); the API keeps answering all the while (sampled every second)
    answered, asked = 0, 0
    bound = time.monotonic() + lease["leaseDurationSeconds"] + 10 + 15  # + renew deadline, + a starved machine
    while time.monotonic() < bound:
        asked += 1
        answered += cp.kubectl("get", "--raw=/readyz", server=cp.api_urls[1], check=False, timeout=15).returncode == 0
        if [n for n in _acquired(cp, component) if n != holder]:
            break
        time.sleep(1)
    new = [n for n in _acquired(cp, component) if n != holder]
    assert len(new) == 1, f"no other master took the {component} lease within the bound: {_acquired(cp, component)}"
    assert answered == asked
    after = json.loads(cp.kubectl("get", "lease", "-n", "kube-system", component, "-o", "json").stdout)["spec"]
    assert after["holderIdentity"] != lease["holderIdentity"]
    master.start(component)  # back for the other tests


def test_anonymous_requests_reach_only_the_health_endpoints(cp: ControlPlane):
    with _client(cp) as anon:
        for path in ("/readyz", "/livez", "/healthz"):
            assert anon.get(cp.api_urls[0] + path).status_code == 200, path
        for path in ("/api", "/version", "/api/v1/namespaces/kube-system/secrets", "/metrics"):
            assert anon.get(cp.api_urls[0] + path).status_code == 401, path


def test_a_secret_is_stored_encrypted_and_its_write_is_audited(cp: ControlPlane):
    cp.kubectl("create", "secret", "generic", "bakery-probe", "-n", "default", "--from-literal=token=not-in-clear")
    with cp.etcd_client() as etcd:
        kv = etcd.get("/registry/secrets/default/bakery-probe")
    assert kv is not None
    assert kv.value.startswith(b"k8s:enc:secretbox:v1:key1:")
    assert b"not-in-clear" not in kv.value and base64.b64encode(b"not-in-clear") not in kv.value
    # the audit policy records Secret writes at Metadata level (never their data)
    deadline = time.monotonic() + 30
    found = []
    while not found and time.monotonic() < deadline:
        for m in cp.masters:
            log = m.var / "log" / "kube-apiserver-audit.log"
            if log.exists():
                events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
                found += [e for e in events if e.get("verb") == "create" and e.get("objectRef", {}).get("name") == "bakery-probe"]
        time.sleep(1)
    assert found, "no audit event for the Secret's create"
    assert found[0]["level"] == "Metadata" and found[0]["user"]["username"] == "kubernetes-admin"
    assert "requestObject" not in found[0]


def test_the_admin_group_can_act_and_each_component_identity_only_what_it_does(cp: ControlPlane):
    assert cp.kubectl("auth", "can-i", "*", "*").stdout.strip() == "yes"
    scheduler = cp.node_file(0, "/etc/kubernetes/scheduler.conf")
    r = cp.kubectl("get", "secrets", "-A", kubeconfig=scheduler, check=False)
    assert r.returncode != 0 and "forbidden" in r.stderr.lower() and "system:kube-scheduler" in r.stderr
    assert cp.kubectl("get", "pods", "-A", kubeconfig=scheduler).returncode == 0  # what it does
    kcm = cp.node_file(0, "/etc/kubernetes/controller-manager.conf")
    r = cp.kubectl("create", "namespace", "by-kcm", kubeconfig=kcm, check=False)
    assert r.returncode != 0 and "forbidden" in r.stderr.lower()
    url = cp.api_urls[0]
    # the API server's client certificate for the kubelets is a real identity, in its group only
    with _client(cp, "apiserver-kubelet-client") as c:
        r = c.get(url + "/api/v1/namespaces/kube-system/secrets")
        assert r.status_code == 403 and "kube-apiserver-kubelet-client" in r.text
    # certificates of the other CAs are no identity at all to the API server
    for other in ("etcd/healthcheck-client", "front-proxy-client", "apiserver-etcd-client"):
        with _client(cp, other) as c:
            assert c.get(url + "/api/v1/namespaces").status_code == 401, other


def test_etcd_takes_only_clients_of_its_own_ca(cp: ControlPlane):
    pki = cp.build / cp.name / "pki"
    with _https(pki / "etcd" / "ca.crt", pki / "admin") as c, pytest.raises(httpx.HTTPError):  # the cluster CA's admin
        c.post(cp.etcd_urls[0] + "/v3/kv/range", json={"key": base64.b64encode(b"/registry").decode()})
    with _https(pki / "etcd" / "ca.crt", pki / "etcd" / "healthcheck-client") as c:
        assert c.post(cp.etcd_urls[0] + "/v3/kv/range", json={"key": base64.b64encode(b"/registry").decode()}).status_code == 200
    with cp.etcd_client() as etcd:
        assert etcd.health(cp.etcd_urls[0])


def test_the_kubelet_takes_bakerys_configuration_and_command_line_until_it_needs_a_runtime(cp: ControlPlane):
    m = cp.masters[0]
    default = (m.files / "etc/default/kubelet").read_text()
    args = re.search(r'KUBELET_ARGS="?([^"\n]*)"?', default)
    assert args, default
    argv = [str(cp.bins["kubelet"]), *args[1].split()]
    # This host runs cgroup v1; bakery's masters (Debian 12 images) run cgroup v2, and a
    # 1.35+ kubelet refuses v1 by default (failCgroupV1) before it asks for its runtime. The
    # override lets it go on, and names the host, not bakery's configuration, as the cause.
    v1 = Path("/sys/fs/cgroup/cgroup.controllers").exists() is False
    if v1:
        argv.append("--fail-cgroupv1=false")
    proc = m.start("kubelet", argv)
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        text = proc.log.read_text(errors="replace")
        if not proc.alive() or _runtime_refused(text):
            break
        time.sleep(1)
    proc.stop()
    # it read bakery's KubeletConfiguration and flags (no strict-decoding or flag error)...
    assert f'kubeletVersion="v{cp.kubernetes_version}"' in text, text[-3000:]
    assert "unknown flag" not in text and "strict decoding error" not in text and "failed to load Kubelet config" not in text, text[-3000:]
    assert "failed to validate kubelet configuration" not in text, text[-3000:]
    # ...and went on to the container runtime, which this host has not started for it
    assert _runtime_refused(text), text[-3000:]


def _runtime_refused(log: str) -> bool:
    """The kubelet tried bakery's containerRuntimeEndpoint and found no runtime there."""
    return any("containerd.sock" in line and ("no such file or directory" in line or "connection refused" in line
                                              or "Unavailable" in line) for line in log.splitlines())


@pytest.mark.parametrize("example", ["aws", "gcp"])
def test_the_examples_flags_parse_in_the_real_binaries(tmp_path: Path, repo: Path, example: str):
    bins = binaries()
    spec_file = repo / "examples" / f"{example}.yaml"
    bakery("render", "-f", str(spec_file), "-o", str(tmp_path))
    nodes = next((tmp_path).glob("*/nodes"))
    manifests = sorted(nodes.glob("*/files/etc/kubernetes/manifests/*.manifest")) + sorted(nodes.glob("*/files/srv/kubernetes/*.manifest"))
    seen = set()
    for manifest in manifests:
        pod = yaml.safe_load(manifest.read_text())
        for container in pod["spec"]["containers"]:
            command = [str(a) for a in container["command"]]
            if command[0] not in bins:
                continue  # bakery-podmaster: bakery's own, tested in test_podmaster
            seen.add(command[0])
            # flags are parsed before --help is acted on: an unknown or malformed flag fails
            r = subprocess.run([str(bins[command[0]]), *command[1:], "--help"], capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, f"{manifest.name}: {r.stderr[-2000:]}"
            assert "deprecated" not in r.stderr.lower(), f"{manifest.name}: {r.stderr[-2000:]}"
    assert {"etcd", *CONTROL_PLANE} <= seen
