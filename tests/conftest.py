"""Shared fixtures. The rule for missing components (TESTING.md): a test that needs a
binary may skip on a developer laptop without it, but under CI (CI=true, set by
.ci/run) a missing component is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["tests.etcd_fixtures"]  # etcd_bin, etcd, v2: real etcd for any test module

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(what: str, found: bool, how: str = "") -> None:
    """Skip (laptop) or fail (CI) when a component the test needs is missing."""
    if found:
        return
    message = f"{what} is not available{': ' + how if how else ''}"
    if IN_CI:
        pytest.fail(f"CI: {message} (the project's setup must install it)", pytrace=False)
    pytest.skip(message)


def need_binary(name: str, how: str = "make setup-system") -> str:
    """Path of an executable on PATH (the venv's bin first), or skip/fail."""
    venv_bin = str(Path(sys.executable).parent)
    path = shutil.which(name, path=os.pathsep.join([venv_bin, os.environ.get("PATH", "")]))
    need(f"`{name}`", path is not None, how)
    assert path is not None
    return path


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def local_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real `bakery bake` of the local image per test session, from bakery's own
    packer/ folder (debootstrap from apt's mirror; ~4 minutes), shared by the bake test
    and the end-to-end test. Returns the build folder of the spec it baked (cluster
    "demo"); the image is current in build/demo/images.json."""
    for tool in ("packer", "debootstrap", "mkfs.ext4", "qemu-img"):
        need_binary(tool)
    tmp = tmp_path_factory.mktemp("local-image")
    spec = tmp / "cluster.yaml"
    spec.write_text('name: demo\nprovider: local\nkubernetes_version: "1.37.2"\n')
    r = subprocess.run([sys.executable, "-m", "bakery.cli", "bake", "-f", str(spec), "-o", str(tmp / "build")],
                       capture_output=True, text=True, timeout=1800, check=False)
    assert r.returncode == 0, f"bake failed:\n{r.stdout}\n{r.stderr[-3000:]}"
    return tmp / "build"
