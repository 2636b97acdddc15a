"""The `bakery` command as users run it: a subprocess, its exit code, its stderr."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
BAKERY = [sys.executable, "-m", "bakery.cli"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BAKERY, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120)


def test_help_teaches_and_does_not_import_cloud_sdks():
    code = (
        "import sys, bakery.cli as c\n"
        "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'google', 'cryptography', 'jinja2')))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "typical use:" in r.stdout and "bakery render -f cluster.yaml" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "[]"


BAD = {
    "unknown-key": ("name: demo\nprovider: aws\naws: {}\nmasers: 3\n", ["cluster.yaml:4: masers: unknown key 'masers'; did you mean 'masters'?"]),
    "yaml-syntax": ("name: demo\nprovider: aws\naws: {zones: [}\n", ["cluster.yaml:3: YAML syntax error"]),
    "even-masters": ("name: demo\nprovider: aws\naws: {}\nmasters: 4\n", ["cluster.yaml:4: masters: 4 masters: use 3, 5 or 7"]),
    "zero-masters": ("name: demo\nprovider: aws\naws: {}\nmasters: 0\n", ["cluster.yaml:4: masters: 0 masters"]),
    "outside-subnet": ("name: demo\nprovider: aws\naws: {masters: instances}\nnetwork:\n  addresses: [10.240.0.10, 10.240.0.11, 192.168.1.1]\n",
                       ["cluster.yaml:5: network.addresses[2]: 192.168.1.1 is outside"]),
    "duplicate-address": ("name: demo\nprovider: aws\naws: {masters: instances}\nnetwork:\n  addresses: [10.240.0.10, 10.240.0.10, 10.240.0.12]\n",
                          ["cluster.yaml:5: network.addresses[1]: 10.240.0.10 is given to masters 0 and 1"]),
    "old-kubernetes": ("name: demo\nprovider: aws\naws: {}\nkubernetes_version: 1.19.16\n",
                       ["cluster.yaml:4: kubernetes_version: Kubernetes 1.19.16 is older than the supported minimum 1.29"]),
    "basic-auth-file": ("name: demo\nprovider: aws\naws: {}\nbasic_auth_file: /srv/kubernetes/basic_auth.csv\n",
                        ["cluster.yaml:4: basic_auth_file: unknown key 'basic_auth_file': removed in Kubernetes 1.19"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["render", "validate"])
def test_bad_input_one_line_per_problem_exit_2_nothing_written(case: str, command: str, tmp_path: Path):
    text, expected = BAD[case]
    (tmp_path / "cluster.yaml").write_text(text)
    r = run(command, "-f", "cluster.yaml", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == len(expected)
    for line, want in zip(lines, expected, strict=True):
        assert line.startswith("error: " + want), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yaml"], "nothing may be written"


def test_embedded_user_data_over_the_aws_limit_is_refused_with_a_breakdown(tmp_path: Path):
    rng = random.Random(7)  # random hex does not compress: the gzipped document cannot fit
    args = {f"x-flag-{i}": "".join(rng.choice("0123456789abcdef") for _ in range(400)) for i in range(90)}
    doc = {"name": "big", "provider": "aws", "user_data": "embedded", "aws": {"masters": "instances"},
           "apiserver": {"extra_args": args}}
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(doc))
    r = run("render", "-f", "cluster.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert "over the aws limit of 16,384 bytes" in lines[0]
    assert any(line.endswith("/etc/kubernetes/manifests/kube-apiserver.manifest") for line in lines[1:4])
    assert "PRIVATE KEY" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yaml"]
    # the same spec with the small user-data renders: the tree is not in the user-data
    doc["user_data"] = "store"
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(doc))
    r = run("render", "-f", "cluster.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_render_table_and_byte_identical_rerender(tmp_path: Path):
    r1 = run("render", "-f", str(REPO / "examples" / "aws.yaml"), cwd=tmp_path)
    assert r1.returncode == 0, r1.stderr
    header = r1.stdout.splitlines()[0].split()
    assert header[:5] == ["NODE", "ADDRESS", "ZONE", "FILES", "PLAIN"] and "pki: issued ca.crt" in r1.stderr
    nodes = tmp_path / "build" / "prod-aws" / "nodes"
    first = {p: p.read_bytes() for p in nodes.rglob("*") if p.is_file()}
    r2 = run("render", "-f", str(REPO / "examples" / "aws.yaml"), cwd=tmp_path)
    assert r2.returncode == 0 and "pki:" not in r2.stderr
    assert first == {p: p.read_bytes() for p in nodes.rglob("*") if p.is_file()}
    assert (nodes / "prod-aws-master-1" / "files" / "etc/kubernetes/manifests/etcd.manifest").exists()


def test_validate_passes_on_local_example_and_writes_nothing(tmp_path: Path):
    r = run("validate", "-f", str(REPO / "examples" / "local.yaml"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("user-data ok") == 1 and "no secret" in r.stdout  # the one every master boots
    assert r.stdout.count("files ok") == 3
    assert list(tmp_path.iterdir()) == []


def test_init_writes_a_valid_spec_and_refuses_to_overwrite(tmp_path: Path):
    assert run("init", "--provider", "gcp", "-f", "cluster.yaml", cwd=tmp_path).returncode == 0
    first = (tmp_path / "cluster.yaml").read_text()
    assert "provider: gcp" in first
    again = run("init", "--provider", "aws", "-f", "cluster.yaml", cwd=tmp_path)
    assert again.returncode == 2 and "exists; not overwriting" in again.stderr
    assert (tmp_path / "cluster.yaml").read_text() == first
    assert run("init", "--provider", "aws", "-f", "cluster.yaml", "--force", cwd=tmp_path).returncode == 0
    assert run("validate", cwd=tmp_path).returncode == 0


def test_init_redirected_as_the_help_shows_writes_the_spec(tmp_path: Path):
    """`bakery init --provider local > cluster.yaml`: the shell makes cluster.yaml, empty, first."""
    r = subprocess.run(f"{sys.executable} -m bakery.cli init --provider local > cluster.yaml", shell=True, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    text = (tmp_path / "cluster.yaml").read_text()
    assert "provider: local" in text
    assert run("validate", cwd=tmp_path).returncode == 0
    # an empty file named with -f (a `touch`) holds nothing to lose; a spec with content stays refused
    (tmp_path / "other.yaml").write_text("")
    assert run("init", "--provider", "aws", "-f", "other.yaml", cwd=tmp_path).returncode == 0
    assert "provider: aws" in (tmp_path / "other.yaml").read_text()
    assert run("init", "--provider", "gcp", "-f", "other.yaml", cwd=tmp_path).returncode == 2


@pytest.mark.parametrize("provider", ["local", "gcp"])
def test_init_piped_into_head_exits_quietly(provider: str, tmp_path: Path):
    (tmp_path / "cluster.yaml").write_text("name: mine\n")  # the user's spec: a pipe never touches it
    for file_arg in ("-f -", ""):
        r = subprocess.run(f"{sys.executable} -m bakery.cli init --provider {provider} {file_arg} | head -3; "
                           "echo status=${PIPESTATUS[0]}", shell=True, executable="/bin/bash", cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr and r.stderr == "", r.stderr
        lines = r.stdout.splitlines()
        assert len(lines) == 4 and lines[0].startswith("# bakery cluster spec"), lines
        assert lines[-1] in ("status=0", "status=141"), lines[-1]
    assert (tmp_path / "cluster.yaml").read_text() == "name: mine\n"


@pytest.mark.parametrize(("provider", "layout"), [("aws", "asg"), ("gcp", "mig")])
def test_init_starters_use_the_layout_rollout_replaces(provider: str, layout: str, tmp_path: Path):
    from bakery import providers, spec, state

    assert run("init", "--provider", provider, "-f", "cluster.yaml", cwd=tmp_path).returncode == 0
    s = spec.load(tmp_path / "cluster.yaml")
    assert s.provider_spec.masters == layout
    # what `bakery rollout` asks of the provider: masters as cattle, surged one at a time
    assert providers.get(s, state.paths(s.name, tmp_path / "build"), lambda *a: None).cattle
    assert run("validate", cwd=tmp_path).returncode == 0


def test_render_without_a_known_load_balancer_writes_no_localhost_kubeconfig(tmp_path: Path):
    r = run("render", "-f", str(REPO / "examples" / "gcp.yaml"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    kubeconfig = tmp_path / "build" / "prod-gcp" / "admin.kubeconfig"
    assert not kubeconfig.exists()
    assert f"{kubeconfig.relative_to(tmp_path)} not written: the load balancer's address is not known yet" in r.stderr
    assert r.stderr.count("pki: issued admin.crt") == 1
    # once the LB is known (as `bakery up` records it), render writes it for that address
    from bakery import state

    state.update(state.paths("prod-gcp", tmp_path / "build"), lb={"dns_names": [], "ips": ["203.0.113.7"]})
    r = run("render", "-f", str(REPO / "examples" / "gcp.yaml"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "server: https://203.0.113.7:6443" in kubeconfig.read_text()
    assert "not written" not in r.stderr


def test_ssh_help_speaks_of_containers_too(tmp_path: Path):
    r = run("ssh", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "container" in r.stdout and "nsenter" in r.stdout
    top = run("--help", cwd=tmp_path).stdout
    ssh_line = next(line for line in top.splitlines() if line.strip().startswith("ssh "))
    assert "container" in ssh_line, ssh_line


def test_schema_command_prints_json_schema(tmp_path: Path):
    import json

    r = run("schema", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["title"] == "bakery cluster.yaml"
