"""`bakery up / status / down / launch-template` end to end: the real pipeline (PKI,
rendering) and the real boto3 default client chain, pointed at moto by
BAKERY_AWS_ENDPOINT_URL, as a user would run them against a local server."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pytest
from cryptography import x509

from bakery import cli, pki, state
from bakery.render.userdata import decode
from tests.moto_server import Moto, moto, moto_session, record_ami  # noqa: F401


@pytest.fixture
def aws_env(moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Moto:  # noqa: F811
    monkeypatch.setenv("BAKERY_AWS_ENDPOINT_URL", moto.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto


def test_up_status_launch_template_down(aws_env: Moto, repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_file, build = str(repo / "examples" / "aws.yaml"), tmp_path / "build"
    paths = state.paths("prod-aws", build)
    paths.base.mkdir(parents=True)
    record_ami(paths, aws_env.register_ami())
    args = ["-f", spec_file, "-o", str(build)]

    assert cli.main(["up", *args, "--wait"]) == 0
    printed = capsys.readouterr()
    assert "API: https://api.prod-aws.example.com:6443" in printed.out
    assert "healthy" in printed.err

    # Each master's user-data, read back from EC2, is what `up` rendered and wrote under nodes/.
    ec2 = aws_env.client("ec2")
    for node, iid in state.load(paths)["aws"]["instances"].items():
        sent = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]
        assert decode(base64.b64decode(sent), "plain") == (paths.node(node) / "user-data").read_bytes()
    lb_dns = state.load(paths)["lb"]["dns_names"][0]
    cert = x509.load_pem_x509_certificate((paths.pki / "apiserver.crt").read_bytes())
    assert lb_dns in pki.sans(cert)[0]  # the LB existed before the certificate was issued

    assert cli.main(["up", *args]) == 0
    assert "0 created" in capsys.readouterr().out

    assert cli.main(["status", *args, "--output", "json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [n["state"] for n in status["nodes"]] == ["running"] * 3
    assert status["extra"]["load_balancer"] == lb_dns

    assert cli.main(["status", *args]) == 0
    assert "prod-aws-master-2" in capsys.readouterr().out

    assert cli.main(["launch-template", *args]) == 0
    assert "version 1" in capsys.readouterr().out

    assert cli.main(["down", *args]) == 0
    out = capsys.readouterr().out
    assert "deleted launch-template" in out and "deleted vpc" in out
    assert cli.main(["down", *args]) == 0
    assert "nothing to delete" in capsys.readouterr().out


def test_status_without_credentials_is_one_line(aws_env: Moto, repo: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert cli.main(["status", "-f", str(repo / "examples" / "aws.yaml"), "-o", str(tmp_path)]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: AWS: no credentials found")


def test_up_refuses_oversize_user_data_before_creating_anything(aws_env: Moto, repo: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_aws import inventory

    noise = random.Random(0).randbytes(20_000).hex()  # ~20 KB even gzipped
    spec_file = tmp_path / "big.yaml"
    flags = "".join(f"    noise-{i}: '{noise[i:i + 4000]}'\n" for i in range(0, len(noise), 4000))  # values are at most 4 KB
    # embedded: the whole tree in each master's user-data, as a spec may still ask
    spec_file.write_text((repo / "examples" / "aws.yaml").read_text() + f"user_data: embedded\napiserver:\n  extra_args:\n{flags}")
    build = tmp_path / "build"
    paths = state.paths("prod-aws", build)
    paths.base.mkdir(parents=True)
    record_ami(paths, aws_env.register_ami())
    assert cli.main(["up", "-f", str(spec_file), "-o", str(build)]) == 2
    assert "over the aws limit of 16,384 bytes" in capsys.readouterr().err
    assert all(v == [] for v in inventory(aws_env, "prod-aws").values())
    assert "lb" not in state.load(paths)


def test_help_does_not_import_boto3() -> None:
    import subprocess
    import sys

    code = ("import sys, contextlib, io\nfrom bakery import cli\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n    cli.main(['--help'])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
