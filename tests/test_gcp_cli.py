"""`bakery up / status / instance-template / down` for a GCP spec, through the CLI, against the fake GCE."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import jinja2
import pytest
import yaml

from bakery import cli
from bakery.pipeline import Cluster
from bakery.providers.gcp import template
from bakery.render import generic
from tests.conftest import need, need_binary
from tests.fake_gce import FakeGCE
from tests.fake_gcs import FakeGCS

IMAGE = "bakery-k8s-1-31-4-abc123"
SPEC = f"""\
name: demo
provider: gcp
gcp:
  project: test-project
  image: {IMAGE}
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
    assert meta["user-data"].startswith("## template: jinja\n#cloud-config\n")

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


def test_generic_document_completes_from_instance_data(tmp_path: Path) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(SPEC)
    cluster = Cluster.load(spec, tmp_path / "build")
    rendered = cluster.render()
    files = generic.shared_files(rendered.nodes)
    document = template.generic_document(rendered.plan, files)
    assert document == template.generic_document(rendered.plan, files)  # pure
    header, body = document.decode().split("\n", 1)
    assert header == "## template: jinja"
    # cloud-init renders the document with Jinja over its instance-data (v1 keys on GCE)
    instance_data = {"v1": {"instance_id": "4242", "availability_zone": "us-central1-b", "region": "us-central1", "local_hostname": "demo-mig-x1"}}
    config = yaml.safe_load(jinja2.Template(body, undefined=jinja2.StrictUndefined).render(**instance_data))
    assert config["hostname"] == "demo-mig-x1"
    env = config["write_files"][0]
    assert env["path"] == generic.NODE_ENV
    assert "BAKERY_ZONE=us-central1-b\n" in env["content"] and "BAKERY_INSTANCE_ID=4242\n" in env["content"]
    shared = {f.path: f.content for f in files}
    assert shared and all(base64.b64decode(e["content"]) == shared[e["path"]] for e in config["write_files"][1:])
    assert not any("etcd/peer" in p for p in shared)  # per-node files stay out
    assert "metadata.google.internal" in config["runcmd"][0][2]


# cloud-init's own Jinja renderer, run by the system Python that Debian's cloud-init uses.
CLOUD_INIT_RENDER = """
import sys
from cloudinit.handlers.jinja_template import render_jinja_payload_from_file
out = render_jinja_payload_from_file(open(sys.argv[1]).read(), "part-001", sys.argv[2])
sys.stdout.write(out or "")
"""


def test_instance_template_user_data_renders_with_cloud_init(gce: FakeGCE, tmp_path: Path) -> None:
    """The template's user-data, read back from GCE, rendered and schema-checked by cloud-init itself."""
    cloud_init = need_binary("cloud-init")
    python = Path("/usr/bin/python3")
    need("Debian's cloud-init Python package", Path("/usr/lib/python3/dist-packages/cloudinit").is_dir() and python.exists())
    spec = tmp_path / "cluster.yaml"
    spec.write_text(SPEC)
    args = ["-f", str(spec), "-o", str(tmp_path / "build")]
    assert cli.main(["up", *args]) == 0
    assert cli.main(["instance-template", *args]) == 0
    (tpl,) = gce.resources("instanceTemplates")
    meta = {i["key"]: i["value"] for i in tpl["properties"]["metadata"]["items"]}
    document = tmp_path / "user-data"
    document.write_text(meta["user-data"])
    instance_data = tmp_path / "instance-data.json"
    instance_data.write_text(json.dumps({"v1": {
        "instance_id": "4242", "availability_zone": "us-central1-b", "region": "us-central1",
        "local_hostname": "demo-mig-x1", "cloud_name": "gce", "platform": "gce"}}))
    rendered = subprocess.run([str(python), "-c", CLOUD_INIT_RENDER, str(document), str(instance_data)],
                              capture_output=True, text=True, timeout=60, check=True).stdout
    assert rendered.startswith("#cloud-config")
    config = yaml.safe_load(rendered)
    assert config["hostname"] == "demo-mig-x1"
    assert "BAKERY_INSTANCE_ID=4242\n" in config["write_files"][0]["content"]
    (tmp_path / "rendered.yaml").write_text(rendered)
    check = subprocess.run([cloud_init, "schema", "--config-file", str(tmp_path / "rendered.yaml")],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr


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
