"""`bakery bake` from the CLI with the real Packer, to images.json.

Most tests bake the mini template (tests/fixtures/packer/mini: the real `null.local`
source and manifest post-processor, with a one-second shell-local step instead of
debootstrap), through the same CLI, staging, runner, parser and images.json code as the
real thing. test_real_local_image checks the session's one real bake of bakery's own
packer/ folder (tests/conftest.py: local_image), shared with the end-to-end test; e2e.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bakery import cli
from bakery.bake import images
from tests.conftest import REPO, need_binary

pytestmark = pytest.mark.packer

MINI = REPO / "tests" / "fixtures" / "packer" / "mini"


@pytest.fixture
def packer() -> str:
    need_binary("qemu-img")
    return need_binary("packer")


@pytest.fixture(autouse=True)
def binaries_cache(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about images.json, not the programs: a cache of this machine's
    layout (bakery/components/cache.py) holds small stand-ins for the versions they bake,
    so no Kubernetes release is built for them. Their sums still enter the image hash.
    Never for the real image (the session's `local_image`, which the containers boot)."""
    if "local_image" in request.fixturenames:
        return
    from bakery.bake.stage import LOCAL_BINARIES
    from bakery.components import ETCD, cache

    root = tmp_path / "binaries"
    monkeypatch.setenv("BAKERY_CACHE_DIR", str(root))
    for project, version, names in [*(("kubernetes", v, [c for c in LOCAL_BINARIES if c not in ETCD]) for v in ("1.31.3", "1.31.4", "1.31.5")),
                                    ("etcd", "3.7.4", [c for c in LOCAL_BINARIES if c in ETCD])]:
        slot = cache.Slot(root, project, version)
        with slot.locked(), slot.staging() as work:
            for name in names:
                (work / name).write_text(f"#!/bin/sh\necho {name} {version}\n")
                slot.install(name, work / name)


def _spec(tmp_path: Path, version: str = "1.31.4") -> Path:
    path = tmp_path / f"cluster-{version}.yaml"
    # 1.31 is past upstream support: accepted on purpose, these tests only record images
    path.write_text(f"name: demo\nprovider: local\nallow_unsupported_versions: true\nkubernetes_version: \"{version}\"\n")
    return path


def _bake(tmp_path: Path, *extra: str, version: str = "1.31.4", templates: Path | None = MINI) -> int:
    argv = ["bake", "-f", str(_spec(tmp_path, version)), "-o", str(tmp_path / "build"), *extra]
    if templates is not None:
        argv += ["--templates", str(templates)]
    return cli.main(argv)


def _images(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "build" / "demo" / "images.json").read_text())


def test_bake_records_the_local_image_and_packers_manifest(packer: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _bake(tmp_path) == 0
    data = _images(tmp_path)
    rec = data["local"]
    assert rec["name"].startswith("bakery-k8s-1-31-4-") and rec["hash"].startswith(rec["name"][-12:])
    for key in ("disk", "kernel", "initrd"):
        assert Path(rec[key]).is_file() and Path(rec[key]).is_absolute()
    assert Path(rec["disk"]).parent == tmp_path.resolve() / "build" / "demo" / "images" / rec["name"]
    assert data["images"] == [rec]
    assert images.current(tmp_path / "build" / "demo" / "images.json", "demo", "local") == rec  # what `up` reads
    manifest = json.loads((tmp_path / "build" / "demo" / "manifest-local.json").read_text())
    assert manifest["builds"][-1]["custom_data"]["image_name"] == rec["name"]
    captured = capsys.readouterr()
    assert f"local: {rec['name']} built" in captured.out
    assert "image local" in captured.err and "building" in captured.err  # progress while Packer ran
    log = (tmp_path / "build" / "demo" / "packer" / "local" / "packer-build.log").read_text()
    assert f"made {rec['name']}" in log


def test_if_changed_skips_an_unchanged_image_and_rebuilds_a_changed_one(packer: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _bake(tmp_path) == 0
    first = (tmp_path / "build" / "demo" / "images.json").read_bytes()
    capsys.readouterr()
    assert _bake(tmp_path, "--if-changed") == 0
    assert "unchanged" in capsys.readouterr().out
    assert (tmp_path / "build" / "demo" / "images.json").read_bytes() == first
    assert _bake(tmp_path, "--if-changed", version="1.31.5") == 0
    data = _images(tmp_path)
    assert [r["kubernetes_version"] for r in data["images"]] == ["1.31.4", "1.31.5"]
    assert data["local"]["kubernetes_version"] == "1.31.5"


def test_dry_run_runs_no_build_and_writes_nothing(packer: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _bake(tmp_path, "--dry-run") == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan[0]["status"] == "planned"
    assert plan[0]["argv"][-1][:3] == [packer, "build", "-machine-readable"]
    assert not (tmp_path / "build" / "demo" / "images.json").exists()
    assert not (tmp_path / "build" / "demo" / "packer" / "local").exists()


def test_dry_run_of_cloud_targets_plans_their_sources_without_credentials(
    packer: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAKERY_AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert _bake(tmp_path, "--dry-run", "--only", "aws", "--only", "gcp", "--only", "qemu", templates=None) == 0
    plan = {p["target"]: p for p in json.loads(capsys.readouterr().out)}
    assert set(plan) == {"aws", "gcp", "local"}
    assert "-only=amazon-ebs.bakery" in plan["aws"]["argv"][-1]
    assert "-var=aws_endpoint=http://127.0.0.1:9" in plan["aws"]["argv"][-1]  # not part of the hash
    assert "-only=googlecompute.bakery" in plan["gcp"]["argv"][-1]
    assert len({p["hash"] for p in plan.values()}) == 3


def test_failed_build_exits_non_zero_with_packers_errors_and_leaves_images_json(
    packer: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _bake(tmp_path) == 0
    before = (tmp_path / "build" / "demo" / "images.json").read_bytes()
    capsys.readouterr()
    monkeypatch.setenv("BAKERY_TEST_FAIL", "1")
    assert _bake(tmp_path, version="1.31.5") == 4
    err = capsys.readouterr().err
    assert "error: packer build failed (exit 1); its whole output: " in err
    assert "error: packer: null.local: Script exited with non-zero exit status: 1" in err
    assert "E: Failed getting release file" in err  # Packer's own lines, shown as progress
    assert (tmp_path / "build" / "demo" / "images.json").read_bytes() == before


def test_missing_packer_says_how_to_install_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _bake(tmp_path, "--packer", str(tmp_path / "no-packer")) == 4
    err = capsys.readouterr().err
    assert "not found" in err and "apt-get install packer" in err


def test_unknown_template_variable_fails_validation_before_building(packer: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "mini.pkr.hcl").write_text((MINI / "mini.pkr.hcl").read_text().replace('variable "debian_mirror"', 'variable "mirror"'))
    assert _bake(tmp_path, templates=broken) == 4
    err = capsys.readouterr().err
    assert "packer validate failed" in err or "debian_mirror" in err
    assert not (tmp_path / "build" / "demo" / "images.json").exists()


def test_images_list_and_prune(packer: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for version in ("1.31.3", "1.31.4", "1.31.5"):
        assert _bake(tmp_path, version=version) == 0
    data = _images(tmp_path)
    oldest = data["images"][0]
    spec = str(_spec(tmp_path))
    capsys.readouterr()
    assert cli.main(["images", "list", "-f", spec, "-o", str(tmp_path / "build")]) == 0
    listing = capsys.readouterr().out
    assert all(r["name"] in listing for r in data["images"])
    assert cli.main(["images", "prune", "--keep", "2", "-f", spec, "-o", str(tmp_path / "build")]) == 0
    after = _images(tmp_path)
    assert [r["kubernetes_version"] for r in after["images"]] == ["1.31.4", "1.31.5"]
    assert not Path(oldest["disk"]).exists()
    assert Path(after["local"]["disk"]).is_file()
    assert cli.main(["images", "prune", "--keep", "0", "-f", spec, "-o", str(tmp_path / "build")]) == 4


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][:1] != "Z"


def test_ctrl_c_interrupts_packer_waits_and_records_nothing(packer: str, tmp_path: Path) -> None:
    pidfile = tmp_path / "step.pid"
    env = {**os.environ, "BAKERY_TEST_SLEEP_PIDFILE": str(pidfile)}
    argv = [sys.executable, "-m", "bakery.cli", "bake", "-f", str(_spec(tmp_path)), "-o", str(tmp_path / "build"),
            "--templates", str(MINI)]
    # Its own process group, like a shell job: Ctrl-C goes to the group.
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not pidfile.exists() or not pidfile.read_text().strip():
            assert time.monotonic() < deadline, "the build step never started"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        step = int(pidfile.read_text())
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    deadline = time.monotonic() + 10
    while _alive(step) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(step), "Packer's build step outlived the interrupt"
    assert not (tmp_path / "build" / "demo" / "images.json").exists()


def _debugfs(raw: Path, request: str) -> str:
    res = subprocess.run(["debugfs", "-R", request, str(raw)], capture_output=True, text=True, check=True)
    return res.stdout


@pytest.mark.e2e
def test_real_local_image(local_image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """bakery's own packer/ folder (the session's one real bake, tests/conftest.py):
    debootstrap from apt's mirror, chroot configuration, mkfs.ext4 -d, qcow2. Then the
    disk's contents are read back with debugfs."""
    for tool in ("debootstrap", "mkfs.ext4", "debugfs"):
        need_binary(tool)
    data = json.loads((local_image / "demo" / "images.json").read_text())
    rec = data["local"]
    spec = local_image.parent / "cluster.yaml"
    assert cli.main(["bake", "-f", str(spec), "-o", str(local_image), "--if-changed"]) == 0
    assert "unchanged" in capsys.readouterr().out
    assert not (local_image / "demo" / "packer" / ".work").exists()  # the scratch root is gone

    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", rec["disk"], str(raw)], check=True)
    assert _debugfs(raw, "cat /etc/machine-id") == ""
    assert _debugfs(raw, "cat /etc/hostname").strip() == "localhost"
    assert "datasource_list: [NoCloud, None]" in _debugfs(raw, "cat /etc/cloud/cloud.cfg.d/90-bakery.cfg")
    assert "ssh_host_" not in _debugfs(raw, "ls /etc/ssh")
    assert _debugfs(raw, "cat /etc/shadow").startswith("root:*:")
    wants = _debugfs(raw, "ls /etc/systemd/system/multi-user.target.wants")
    assert "bakery-etcd.service" in wants and "bakery-podmaster.service" in wants and "etcd.service" not in wants.replace("bakery-etcd.service", "")
    assert "File not found" in subprocess.run(["debugfs", "-R", "stat /etc/default/etcd", str(raw)], capture_output=True, text=True).stderr
    assert "from bakery.podmaster import main" in _debugfs(raw, "cat /usr/local/bin/bakery-podmaster")
    assert "class" in _debugfs(raw, "cat /usr/lib/python3/dist-packages/bakery/podmaster.py")
    assert _debugfs(raw, "ls /var/lib/cloud").split() in ([], [".", ".."]) or "instance" not in _debugfs(raw, "ls /var/lib/cloud")
    assert Path(rec["kernel"]).stat().st_size > 1_000_000 and Path(rec["initrd"]).stat().st_size > 1_000_000
