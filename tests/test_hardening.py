"""kubeadm's defaults and the CIS Kubernetes Benchmark (v1.10.0, for Kubernetes 1.31)
control-plane items, each read from what bakery renders. README.md's hardening table
names the test behind each row."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from bakery import discovery, pki, spec, topology
from bakery.render import builders, configs, flags, start_commands
from tests.test_upstream import NOW, REPO, SEED, node_files

APISERVER = f"{flags.MANIFESTS}/kube-apiserver.manifest"
SCHEDULER = f"{flags.MANIFESTS}/kube-scheduler.manifest"
CONTROLLER = f"{flags.MANIFESTS}/kube-controller-manager.manifest"


@pytest.fixture(scope="module")
def aws(tmp_path_factory) -> dict[str, bytes]:
    return node_files(tmp_path_factory.mktemp("aws"), version="1.31.4")  # the 1.31 hardening choices below


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> builders.NodeContext:
    s = spec.load(REPO / "examples" / "aws.yaml")
    plan = topology.plan(s)
    keys = pki.ensure(plan, tmp_path_factory.mktemp("ctx") / "pki", seed=SEED, now=NOW)
    return builders.NodeContext(plan, plan.nodes[0], keys, discovery.bootstrap_for(s))


def container(files: dict[str, bytes], path: str) -> dict:
    return yaml.safe_load(files[path])["spec"]["containers"][0]


def args(files: dict[str, bytes], path: str) -> dict[str, str]:
    """--name=value pairs of a manifest's component: its command starts with its binary, as
    kubeadm's does (what CIS scanners look for)."""
    cmd = container(files, path)["command"]
    assert cmd[0] == container(files, path)["name"], cmd[:2]
    out = {}
    for a in cmd[1:]:
        name, _, value = a.removeprefix("--").partition("=")
        assert name not in out, f"--{name} given twice"
        out[name] = value
    return out


def mounted(files: dict[str, bytes], path: str, target: str) -> bool:
    """Whether `target` on the host is inside one of the pod's hostPath mounts."""
    pod = yaml.safe_load(files[path])["spec"]
    paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    for m in pod["containers"][0]["volumeMounts"]:
        host = paths[m["name"]]
        if (target == host or target.startswith(host.rstrip("/") + "/")) and m["mountPath"] == host:
            return True
    return False


def kubelet_config(files: dict[str, bytes]) -> dict:
    return yaml.safe_load(files[configs.KUBELET_CONFIG])


# -- API server ---------------------------------------------------------------------


def test_apiserver_front_proxy_flags(aws):
    a = args(aws, APISERVER)
    assert {k: a[k] for k in a if k.startswith(("requestheader-", "proxy-client-"))} == {
        "requestheader-client-ca-file": "/etc/kubernetes/pki/front-proxy-ca.crt",
        "requestheader-allowed-names": "front-proxy-client",
        "requestheader-extra-headers-prefix": "X-Remote-Extra-",
        "requestheader-group-headers": "X-Remote-Group",
        "requestheader-username-headers": "X-Remote-User",
        "proxy-client-cert-file": "/etc/kubernetes/pki/front-proxy-client.crt",
        "proxy-client-key-file": "/etc/kubernetes/pki/front-proxy-client.key",
    }
    for k in ("requestheader-client-ca-file", "proxy-client-cert-file", "proxy-client-key-file"):
        assert mounted(aws, APISERVER, a[k])


def test_controller_manager_trusts_the_front_proxy_ca_as_kubeadm_does(aws):
    a = args(aws, CONTROLLER)
    assert a["requestheader-client-ca-file"] == "/etc/kubernetes/pki/front-proxy-ca.crt"
    assert a["client-ca-file"] == "/etc/kubernetes/pki/ca.crt"
    assert mounted(aws, CONTROLLER, a["requestheader-client-ca-file"])


def test_cis_1_2_4_and_1_2_5_kubelet_client_certificate_and_certificate_authority(aws):
    a = args(aws, APISERVER)
    assert a["kubelet-client-certificate"].endswith(".crt") and a["kubelet-client-key"].endswith(".key")
    # the kubelet's serving certificate comes from the cluster CA (serverTLSBootstrap)
    assert a["kubelet-certificate-authority"] == "/etc/kubernetes/pki/ca.crt"
    assert kubelet_config(aws)["serverTLSBootstrap"] is True


def test_cis_1_2_1_anonymous_auth_in_1_31_is_left_at_its_default(aws):
    """1.31: AuthenticationConfiguration's anonymous conditions are alpha (feature gate
    off), and AWS's target group checks /readyz without credentials, so
    --anonymous-auth stays at its default; RBAC's system:public-info-viewer is all an
    anonymous request gets. The reason is written in README.md (Hardening)."""
    a = args(aws, APISERVER)
    assert "anonymous-auth" not in a and "authentication-config" not in a
    assert configs.AUTHENTICATION_CONFIG not in aws
    readme = (REPO / "README.md").read_text()
    assert "AnonymousAuthConfigurableEndpoints" in readme


@pytest.mark.parametrize(("version", "api_version"), [("1.32.0", "apiserver.config.k8s.io/v1beta1"),
                                                      ("1.34.1", "apiserver.config.k8s.io/v1")])
def test_cis_1_2_1_anonymous_only_to_health_endpoints_from_1_32(tmp_path: Path, version: str, api_version: str):
    files = node_files(tmp_path, version=version)
    a = args(files, APISERVER)
    assert a["authentication-config"] == configs.AUTHENTICATION_CONFIG
    assert "anonymous-auth" not in a  # the API server refuses both together
    assert mounted(files, APISERVER, configs.AUTHENTICATION_CONFIG)
    conf = yaml.safe_load(files[configs.AUTHENTICATION_CONFIG])
    assert conf == {"apiVersion": api_version, "kind": "AuthenticationConfiguration",
                    "anonymous": {"enabled": True, "conditions": [{"path": "/livez"}, {"path": "/readyz"}, {"path": "/healthz"}]}}


def test_cis_1_2_6_to_1_2_8_and_1_2_14_authorization_and_node_restriction(aws):
    a = args(aws, APISERVER)
    assert a["authorization-mode"] == "Node,RBAC"
    assert "NodeRestriction" in a["enable-admission-plugins"].split(",")
    assert "token-auth-file" not in a  # CIS 1.2.2


@pytest.mark.parametrize("path", [APISERVER, CONTROLLER])
def test_cis_1_2_15_and_1_3_2_profiling_off(aws, path):
    assert args(aws, path)["profiling"] == "false"


def test_cis_1_4_1_scheduler_profiling_off_in_its_config_file(aws):
    a = args(aws, SCHEDULER)
    assert "profiling" not in a and "kubeconfig" not in a  # deprecated flags, ignored next to --config
    assert a["config"] == configs.SCHEDULER_CONFIG and mounted(aws, SCHEDULER, configs.SCHEDULER_CONFIG)
    conf = yaml.safe_load(aws[configs.SCHEDULER_CONFIG])
    assert conf["enableProfiling"] is False and conf["enableContentionProfiling"] is False
    assert conf["clientConnection"]["kubeconfig"] == "/etc/kubernetes/scheduler.conf"


@pytest.mark.parametrize("path", [APISERVER, CONTROLLER, SCHEDULER])
def test_cis_1_2_29_tls_1_2_and_aead_ciphers(aws, path):
    a = args(aws, path)
    assert a["tls-min-version"] == "VersionTLS12"
    suites = a["tls-cipher-suites"].split(",")
    assert suites and all(s.startswith("TLS_ECDHE_") and ("_GCM_" in s or "CHACHA20_POLY1305" in s) for s in suites)


def test_cis_4_2_12_kubelet_tls_1_2_and_aead_ciphers(aws):
    conf = kubelet_config(aws)
    assert conf["tlsMinVersion"] == "VersionTLS12"
    assert conf["tlsCipherSuites"] == list(flags.TLS_CIPHER_SUITES)


def test_cis_1_2_27_encryption_provider_config(aws):
    a = args(aws, APISERVER)
    assert a["encryption-provider-config"] == "/etc/kubernetes/pki/encryption-config.yaml"
    assert mounted(aws, APISERVER, a["encryption-provider-config"])


def test_cis_1_2_16_to_1_2_19_audit_log_with_rotation(aws, ctx):
    a = args(aws, APISERVER)
    assert a["audit-log-path"] == flags.AUDIT_LOG
    assert int(a["audit-log-maxage"]) >= 30 and int(a["audit-log-maxbackup"]) >= 10 and int(a["audit-log-maxsize"]) >= 100
    assert mounted(aws, APISERVER, a["audit-log-path"]) and mounted(aws, APISERVER, a["audit-policy-file"])
    # created before the pod starts, like the other logs, and readable by root only
    log = next(f for f in builders.log_files(ctx) if f.path == flags.AUDIT_LOG)
    assert log.content == b"" and log.mode == 0o600
    policy = yaml.safe_load(aws[a["audit-policy-file"]])
    assert policy["apiVersion"] == "audit.k8s.io/v1" and policy["kind"] == "Policy"
    # Secrets and tokens are logged at Metadata (never their bodies) before the catch-all Request rule
    levels = [(r["level"], [g for res in r.get("resources", []) for g in res["resources"]]) for r in policy["rules"]]
    secrets = next(i for i, (lvl, res) in enumerate(levels) if "secrets" in res)
    writes = next(i for i, r in enumerate(policy["rules"]) if r["level"] == "Request")
    assert levels[secrets][0] == "Metadata" and secrets < writes
    assert policy["rules"][-1] == {"level": "Metadata"}


def test_every_file_a_control_plane_flag_names_is_mounted(aws):
    for path in (APISERVER, CONTROLLER, SCHEDULER):
        for name, value in args(aws, path).items():
            if value.startswith("/"):
                assert mounted(aws, path, value), f"{path}: --{name}={value} is not mounted"


# -- controller-manager and scheduler --------------------------------------------------


def test_cis_1_3_3_to_1_3_7_controller_manager(aws):
    a = args(aws, CONTROLLER)
    assert a["use-service-account-credentials"] == "true"
    assert a["service-account-private-key-file"] == "/etc/kubernetes/pki/sa.key"
    assert a["root-ca-file"] == "/etc/kubernetes/pki/ca.crt"
    assert a["bind-address"] == "127.0.0.1"
    assert a["controllers"] == "*,bootstrap-signer-controller,token-cleaner-controller"


def test_cis_1_4_2_scheduler_binds_to_localhost(aws):
    assert args(aws, SCHEDULER)["bind-address"] == "127.0.0.1"


# -- kubelet ------------------------------------------------------------------------------


def test_cis_4_2_1_to_4_2_4_kubelet_authn_authz_and_read_only_port(aws):
    conf = kubelet_config(aws)
    assert conf["authentication"]["anonymous"] == {"enabled": False}
    assert conf["authentication"]["webhook"] == {"enabled": True}
    assert conf["authentication"]["x509"]["clientCAFile"] == "/etc/kubernetes/pki/ca.crt"
    assert conf["authorization"]["mode"] == "Webhook"
    assert conf["readOnlyPort"] == 0


def test_cis_4_2_10_and_4_2_11_kubelet_certificate_rotation(aws):
    conf = kubelet_config(aws)
    assert conf["rotateCertificates"] is True
    assert conf["serverTLSBootstrap"] is True


def test_control_plane_taint_is_registered_from_the_config_file_not_flags(aws):
    assert kubelet_config(aws)["registerWithTaints"] == [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    kubelet_flags = aws["/etc/default/kubelet"].decode()
    assert "--register-with-taints" not in kubelet_flags and "--node-labels" not in kubelet_flags


# -- the control-plane label, through the API -------------------------------------------


def test_node_register_unit_timer_and_kubeconfig(aws, ctx):
    service = aws["/etc/systemd/system/bakery-node-register.service"].decode()
    assert "After=kubelet.service" in service and f"ExecStart={builders.NODE_REGISTER}" in service
    assert "Type=oneshot" in service
    assert "OnUnitInactiveSec=" in aws["/etc/systemd/system/bakery-node-register.timer"].decode()
    admin = yaml.safe_load(aws[builders.ADMIN_CONF])
    assert admin["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert admin["users"][0]["user"]["client-key-data"]
    files = {f.path: f for f in builders.node_register(ctx)}
    assert files[builders.ADMIN_CONF].mode == 0o600 and files[builders.NODE_REGISTER].mode == 0o755
    assert any("bakery-node-register.timer" in cmd for cmd in start_commands(ctx.plan))


FAKE_KUBECTL = textwrap.dedent("""\
    #!/bin/sh
    # kubectl as far as bakery-node-register uses it: answers from $STATE, logs calls to $LOG
    printf "%s\\n" "$*" >> "$LOG"
    case "$*" in
      *"super-admin.conf --request-timeout=20s apply -f /etc/kubernetes/addons/bakery-rbac.yaml") [ -e "$STATE/api-up" ] && exit 0
          echo "The connection to the server was refused" >&2; exit 1 ;;
      *"--request-timeout=20s get node "*) [ -e "$STATE/registered" ] && echo "node/$4" && exit 0
          echo "Error from server (NotFound): nodes \\"x\\" not found" >&2; exit 1 ;;
      *" label --overwrite node "*) exit 0 ;;
      *" get csr -o jsonpath="*) cat "$STATE/csrs"; exit 0 ;;
      *" certificate approve "*) exit 0 ;;
    esac
    echo "unexpected kubectl call: $*" >&2; exit 2
    """)


@pytest.fixture
def fake_kubectl(tmp_path: Path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STATE": str(state), "LOG": str(tmp_path / "log")}
    return state, env, tmp_path / "log"


def _run_register(aws, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = tmp_path / "bakery-node-register"
    script.write_bytes(aws[builders.NODE_REGISTER])
    script.chmod(0o755)
    sh = shutil.which("sh")
    assert sh
    assert subprocess.run([sh, "-n", str(script)], check=False).returncode == 0
    return subprocess.run([sh, str(script)], env=env, capture_output=True, text=True, timeout=30, check=False)


def test_node_register_applies_the_rbac_addon_first_then_waits_for_registration(aws, fake_kubectl, tmp_path):
    state, env, log = fake_kubectl
    r = _run_register(aws, tmp_path, env)
    assert r.returncode == 0 and "does not take the RBAC addon yet" in r.stdout
    assert " get node " not in log.read_text()  # the admin group has no rights before the addon
    (state / "api-up").touch()
    r = _run_register(aws, tmp_path, env)
    assert r.returncode == 0 and "not registered yet" in r.stdout
    assert " label " not in log.read_text()


def test_node_register_labels_its_node_and_approves_only_its_own_pending_serving_csrs(aws, fake_kubectl, tmp_path):
    state, env, log = fake_kubectl
    (state / "registered").touch()
    (state / "api-up").touch()
    node = "prod-aws-master-0"
    (state / "csrs").write_text(f"csr-mine system:node:{node} \ncsr-issued system:node:{node} LS0tLS1CRUdJTg==\n"
                                "csr-other system:node:prod-aws-master-1 \n")
    r = _run_register(aws, tmp_path, env)
    assert r.returncode == 0, r.stderr
    calls = [c.split("--request-timeout=20s ", 1)[1] for c in log.read_text().splitlines()]
    assert calls.pop(0) == "apply -f /etc/kubernetes/addons/bakery-rbac.yaml"
    assert calls[0] == f"get node {node} -o name"
    assert calls[1] == (f"label --overwrite node {node} node-role.kubernetes.io/control-plane= "
                        "node.kubernetes.io/exclude-from-external-load-balancers=")
    assert calls[2].startswith("get csr -o jsonpath=")
    assert calls[3:] == ["certificate approve csr-mine"]


def test_every_test_the_readme_hardening_table_names_exists():
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Hardening", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(test_\w+)`", table))
    assert len(named) >= 15
    assert named <= {name for name in globals() if name.startswith("test_")}
