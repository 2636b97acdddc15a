"""`bakery up / status / instance-template / down` for a GCP spec, through the CLI, against the fake GCE."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bakery import cli, validate
from bakery.node import description
from bakery.node.description import NodeConfig
from bakery.pipeline import Cluster
from bakery.store import open_store
from tests.conftest import need_binary
from tests.fake_gce import FakeGCE
from tests.fake_gcs import FakeGCS

IMAGE = "bakery-k8s-1-31-4-abc123"
SPEC = f"""\
name: demo
provider: gcp
gcp:
  project: test-project
  image: {IMAGE}
  masters: instances
"""


@pytest.fixture
def gce(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGCE]:
    with FakeGCE(project="test-project").running() as fake:
        fake.add_image(IMAGE)
        monkeypatch.setenv("BAKERY_GCP_ENDPOINT_URL", fake.url)  # the env override, as a user would set it
        with FakeGCS(project="test-project").running() as gcs:  # the store's bucket, the masters' service account
            monkeypatch.setenv("BAKERY_GCS_ENDPOINT_URL", gcs.url)
            monkeypatch.setenv("BAKERY_GCP_IAM_ENDPOINT_URL", gcs.url)
            yield fake


def test_up_status_instance_template_down(gce: FakeGCE, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(SPEC)
    args = ["-f", str(spec), "-o", str(tmp_path / "build")]

    assert cli.main(["up", *args]) == 0
    lb_ip = next(a for a in gce.resources("addresses") if a["name"] == "demo-apiserver")["address"]
    out = capsys.readouterr()
    assert f"API: https://{lb_ip}:6443" in out.out
    assert "instance demo-master-2" in out.err  # progress lines

    assert cli.main(["up", *args]) == 0
    assert "0 created" in capsys.readouterr().out

    assert cli.main(["status", *args]) == 0
    status = capsys.readouterr().out
    for i in range(3):
        assert f"demo-master-{i}" in status and f"10.240.0.1{i}" in status
    assert IMAGE in status
    assert cli.main(["status", *args, "--output", "json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert as_json["endpoint"] == f"https://{lb_ip}:6443"
    assert [n["address"] for n in as_json["nodes"]] == ["10.240.0.10", "10.240.0.11", "10.240.0.12"]

    assert cli.main(["instance-template", *args]) == 0
    (tpl,) = gce.resources("instanceTemplates")
    assert f"instance template {tpl['name']}" in capsys.readouterr().out
    meta = {i["key"]: i["value"] for i in tpl["properties"]["metadata"]["items"]}
    assert meta["user-data"].startswith("#cloud-config\n") and "bakery-node.service" in meta["user-data"]
    assert "PRIVATE KEY" not in meta["user-data"] and "-----BEGIN" not in meta["user-data"]

    assert cli.main(["down", *args]) == 0
    assert "resources deleted" in capsys.readouterr().out
    assert gce.inventory() == {}
    assert cli.main(["down", *args]) == 0
    assert "nothing to delete" in capsys.readouterr().out


def test_instance_template_refuses_another_provider(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text("name: demo\nprovider: local\n")
    assert cli.main(["instance-template", "-f", str(spec), "-o", str(tmp_path / "build")]) == 2
    assert "GCP feature" in capsys.readouterr().err


def test_instance_template_user_data_is_the_small_one_and_passes_cloud_inits_schema(gce: FakeGCE, tmp_path: Path) -> None:
    """The template's user-data, read back from GCE: schema-checked by cloud-init itself,
    naming the store and the description `instance-template` published there."""
    cloud_init = need_binary("cloud-init")
    spec = tmp_path / "cluster.yaml"
    spec.write_text(SPEC)
    args = ["-f", str(spec), "-o", str(tmp_path / "build")]
    assert cli.main(["up", *args]) == 0
    assert cli.main(["instance-template", *args]) == 0
    (tpl,) = gce.resources("instanceTemplates")
    meta = {i["key"]: i["value"] for i in tpl["properties"]["metadata"]["items"]}
    document = tmp_path / "user-data"
    document.write_text(meta["user-data"])
    check = subprocess.run([cloud_init, "schema", "--config-file", str(document)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    config = NodeConfig.load_text(validate.write_files(document.read_bytes())["/etc/bakery/node.json"]["data"].decode())
    cluster = Cluster.load(spec, tmp_path / "build")
    assert config.store == cluster.store_url()
    desc = description.fetch(open_store(config.store), "demo", config.digest)  # published, and it checks out
    assert desc.spec == cluster.spec


def test_second_bakery_up_makes_zero_insert_and_zero_add_calls(gce: FakeGCE, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12: GCE answers a second addInstances for a member with 400 memberAlreadyExists
    (so does the fake); the second `up`, real pipeline render included, adds nothing."""
    spec = tmp_path / "cluster.yaml"
    spec.write_text(SPEC)
    args = ["-f", str(spec), "-o", str(tmp_path / "build")]
    assert cli.main(["up", *args]) == 0
    assert gce.count("insert") > 0 and gce.count("action:addInstances") == 3  # one per zone's group
    before = len(gce.calls)
    assert cli.main(["up", *args]) == 0, capsys.readouterr().err
    second = gce.calls[before:]
    assert [c for c in second if c.kind == "insert"] == []
    assert [c for c in second if c.kind == "action:addInstances"] == []
    assert [c.kind for c in second if c.kind not in ("get", "list", "wait", "action:listInstances")] == []
    assert "drift" not in capsys.readouterr().err


def test_default_spec_runs_its_masters_in_managed_groups(gce: FakeGCE, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default (gcp.masters: mig) through the CLI and the real pipeline: the template carries the
    published small user-data, status shows the groups, `bakery instance-template` names the same template."""
    spec = tmp_path / "cluster.yaml"
    spec.write_text(SPEC.replace("  masters: instances\n", ""))
    args = ["-f", str(spec), "-o", str(tmp_path / "build")]
    assert cli.main(["up", *args]) == 0
    (tpl,) = gce.resources("instanceTemplates")
    meta = {i["key"]: i["value"] for i in tpl["properties"]["metadata"]["items"]}
    cluster = Cluster.load(spec, tmp_path / "build")
    assert meta["user-data"].encode() == (cluster.paths.node("demo-master-0") / "user-data").read_bytes()
    assert "-----BEGIN" not in meta["user-data"]
    for inst in gce.resources("instances"):
        assert {i["key"]: i["value"] for i in inst["metadata"]["items"]}["user-data"] == meta["user-data"]
    capsys.readouterr()

    assert cli.main(["status", *args]) == 0
    status = capsys.readouterr().out
    assert "GROUP" in status and "demo-mig-us-central1-a" in status and tpl["name"] in status
    for inst in gce.resources("instances"):
        assert inst["name"] in status and inst["networkInterfaces"][0]["networkIP"] in status
    assert cli.main(["status", *args, "--output", "json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert sorted(as_json["extra"]["groups"]) == [f"demo-mig-us-central1-{z}" for z in "abc"]

    assert cli.main(["instance-template", *args]) == 0
    assert f"instance template {tpl['name']}" in capsys.readouterr().out  # the same content: the same template
    assert cli.main(["up", *args]) == 0
    assert "0 created" in capsys.readouterr().out
    assert cli.main(["down", *args]) == 0
    assert gce.inventory() == {}
