"""bakery's Packer templates under the real Packer (Debian's 1.6.6 here): every source
validates offline (AWS against a local endpoint with credential and region checks
skipped, GCP with a fake account file), the files are `packer fmt` clean, variable
validation rejects bad values, and the 1.7+ plugins file is staged only for 1.7+.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bakery.bake import packer as pk
from bakery.bake import stage
from bakery.output import write_tree
from bakery.spec import parse
from tests.conftest import REPO, need_binary

pytestmark = pytest.mark.packer

SPEC = parse("name: demo\nprovider: aws\naws:\n  region: eu-west-1\n")


@pytest.fixture
def packer(tmp_path: Path) -> str:
    return need_binary("packer")


def _env(tmp_path: Path) -> dict[str, str]:
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    return {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "TMPDIR": str(tmp), "CHECKPOINT_DISABLE": "1"}


def _version(packer: str, tmp_path: Path) -> tuple[int, int, int]:
    res = subprocess.run(pk.version_argv(packer), capture_output=True, text=True, env=_env(tmp_path), check=True)
    return pk.parse_version(res.stdout)


def _stage(tmp_path: Path, target: str, version: tuple[int, int, int]) -> stage.Recipe:
    rec = stage.recipe(SPEC, target, "http://127.0.0.1:9/debian", stage.template_dir(), version)
    write_tree(tmp_path / target, rec.files)
    return rec


def _fake_account_file(tmp_path: Path) -> Path:
    # A service-account key file that parses; Packer 1.6 does not contact Google to validate.
    path = tmp_path / "account.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "my-project", "private_key_id": "0",
        "private_key": "", "client_email": "packer@my-project.iam.gserviceaccount.com",
        "client_id": "0", "token_uri": "http://127.0.0.1:9/token",
    }))
    return path


def _offline_vars(target: str, tmp_path: Path, name: str) -> dict[str, str]:
    if target == "aws":
        return {"image_name": name, "aws_endpoint": "http://127.0.0.1:9", "aws_skip_checks": "true"}
    if target == "gcp":
        return {"image_name": name, "gcp_account_file": str(_fake_account_file(tmp_path))}
    return {"image_name": name, "local_output_dir": str(tmp_path / "out"), "local_work_dir": str(tmp_path / "work")}


@pytest.mark.parametrize("target", ["aws", "gcp", "local"])
def test_every_source_validates_offline(packer: str, tmp_path: Path, target: str) -> None:
    rec = _stage(tmp_path, target, _version(packer, tmp_path))
    argv = pk.validate_argv(packer, tmp_path / target, rec.source, _offline_vars(target, tmp_path, rec.name))
    res = subprocess.run(argv, capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path / target)
    assert res.returncode == 0, res.stdout + res.stderr


def test_templates_are_packer_fmt_clean(packer: str, tmp_path: Path) -> None:
    for folder in (REPO / "packer", REPO / "packer" / "plugins", REPO / "tests" / "fixtures" / "packer" / "mini"):
        res = subprocess.run([packer, "fmt", "-check", "-diff", str(folder)], capture_output=True, text=True, env=_env(tmp_path))
        assert res.returncode == 0, f"{folder}: run `packer fmt {folder}`\n{res.stdout}{res.stderr}"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("kubernetes_version", "v1.31.4", "kubernetes_version must look like 1.31.4"),
        ("image_name", "Bakery_K8s", "image_name must be lowercase"),
        ("local_disk_size", "2GB", "local_disk_size must be a number"),
        ("debian_mirror", "deb.debian.org/debian", "debian_mirror must be"),
        ("control_plane_images", '["registry.k8s.io/pause"]', "full reference with a tag or digest"),
    ],
)
def test_variable_validation_rejects_bad_values(packer: str, tmp_path: Path, name: str, value: str, message: str) -> None:
    rec = _stage(tmp_path, "local", _version(packer, tmp_path))
    variables = {**_offline_vars("local", tmp_path, rec.name), name: value}
    res = subprocess.run(pk.validate_argv(packer, tmp_path / "local", rec.source, variables),
                         capture_output=True, text=True, env=_env(tmp_path))
    assert res.returncode != 0
    assert message in " ".join((res.stdout + res.stderr).split())


def test_required_plugins_file_is_staged_only_for_packer_17(packer: str, tmp_path: Path) -> None:
    old = {path for path, _, _ in stage.recipe(SPEC, "aws", "http://m", stage.template_dir(), (1, 6, 6)).files}
    new = {path for path, _, _ in stage.recipe(SPEC, "aws", "http://m", stage.template_dir(), (1, 7, 0)).files}
    assert new - old == {"required_plugins.pkr.hcl"}
    if _version(packer, tmp_path) < (1, 7, 0):
        # Why the file is kept apart: this Packer refuses the block outright.
        rec = _stage(tmp_path, "aws", (1, 7, 0))
        res = subprocess.run(pk.validate_argv(packer, tmp_path / "aws", rec.source, _offline_vars("aws", tmp_path, rec.name)),
                             capture_output=True, text=True, env=_env(tmp_path))
        assert res.returncode != 0
