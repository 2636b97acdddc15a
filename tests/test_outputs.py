"""Where bakery writes (issue 13): `-o` that cannot be written, a key the user loosened,
modes whatever the umask, locked read-modify-writes, and a tree swap a crash cut short."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from bakery import output, state
from bakery.bake import images
from tests.conftest import need
from tests.pki_check import REPO, assert_consistent, one_error_line, run

EXAMPLE = REPO / "examples" / "aws.yaml"
CLUSTER = "prod-aws"


def render(build: Path | str, **kw) -> subprocess.CompletedProcess[str]:
    return run(["render", "-f", str(EXAMPLE), "-o", str(build)], **kw)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_o_naming_a_file_is_one_clear_line(tmp_path: Path):
    f = tmp_path / "build"
    f.write_text("not a folder")
    r = render(f)
    assert r.returncode == 7
    line = one_error_line(r)
    assert f"{f}: is a file, not a folder" in line and "unreadable state" not in line
    assert f.read_text() == "not a folder"


def test_o_somewhere_unwritable_is_one_clear_line():
    r = render("/proc/bakery-cannot-write-here")
    assert r.returncode == 7
    assert "/proc/bakery-cannot-write-here" in one_error_line(r)


def test_o_on_a_read_only_mount_is_one_clear_line(tmp_path: Path):
    need("root (to bind-mount read-only)", os.geteuid() == 0)
    ro = tmp_path / "ro"
    ro.mkdir()
    r = subprocess.run(["mount", "--bind", "-o", "ro", str(ro), str(ro)], capture_output=True, text=True, check=False)
    need("a read-only bind mount", r.returncode == 0, r.stderr.strip())
    try:
        if (ro / "probe").exists() or (os.access(ro, os.W_OK) and _writable(ro)):
            pytest.fail("the bind mount is writable")
        r = render(ro)
        assert r.returncode == 7
        line = one_error_line(r)
        assert str(ro) in line and "read-only" in line.lower()
    finally:
        subprocess.run(["umount", str(ro)], check=True, timeout=30)


def _writable(folder: Path) -> bool:
    try:
        (folder / "probe").touch()
    except OSError:
        return False
    return True


def test_a_loose_key_names_the_users_own_path(tmp_path: Path):
    assert render(tmp_path).returncode == 0
    key = tmp_path / CLUSTER / "pki" / "ca.key"
    key.chmod(0o644)
    r = render(tmp_path)
    assert r.returncode == 3
    line = one_error_line(r)
    assert f"{key}: private key has permissions 0644" in line and f"chmod 600 {key}" in line
    assert "bakery-pki-" not in line and "PRIVATE" not in line


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_modes_do_not_depend_on_the_umask(tmp_path: Path, umask: int):
    build = tmp_path / "build"
    assert render(build, umask=umask).returncode == 0
    base = build / CLUSTER
    assert mode(build) == 0o755
    for folder in (base, base / "nodes", base / "pki", base / "pki" / "etcd"):
        assert mode(folder) == 0o700, folder
    for d in [p for p in (base / "nodes").rglob("*") if p.is_dir()] + [p for p in (base / "pki").rglob("*") if p.is_dir()]:
        assert mode(d) == 0o700, d
    assert mode(base / "admin.kubeconfig") == 0o600
    for p in (base / "pki").rglob("*"):
        if p.is_file():
            assert mode(p) == (0o600 if p.suffix == ".key" else 0o644), p
    files = base / "nodes" / f"{CLUSTER}-master-0" / "files"
    expected = {
        "etc/kubernetes/manifests/kube-apiserver.manifest": 0o600,
        "etc/kubernetes/manifests/etcd.manifest": 0o600,
        "etc/kubernetes/kubelet-config.yaml": 0o600,
        "etc/systemd/system/kubelet.service": 0o600,
        "etc/kubernetes/pki/ca.crt": 0o644,
        "etc/kubernetes/pki/apiserver.key": 0o600,
        "etc/kubernetes/pki/front-proxy-client.key": 0o600,
        "etc/kubernetes/pki/encryption-config.yaml": 0o600,
        "etc/kubernetes/kubelet.conf": 0o600,
    }
    for rel, want in expected.items():
        assert mode(files / rel) == want, rel
    assert mode(files.parent / "user-data") == 0o600
    assert_consistent(base)


def test_state_updates_under_a_lock_lose_nothing(tmp_path: Path):
    p = state.paths("demo", tmp_path)

    def writer(k: int) -> None:
        for i in range(15):
            state.update(p, **{f"w{k}-{i}": i})

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    data = state.load(p)
    assert all(f"w{k}-{i}" in data for k in range(3) for i in range(15))
    assert mode(p.state) == 0o600


def test_images_json_records_from_parallel_bakes_are_all_kept(tmp_path: Path):
    path = tmp_path / "demo" / "images.json"

    def bake(target: str) -> None:
        for i in range(15):
            images.record(path, "demo", {"target": target, "name": f"{target}-{i}", "hash": str(i)})

    threads = [threading.Thread(target=bake, args=(t,)) for t in ("aws", "gcp", "local")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    data = images.load(path, "demo")
    assert len(data["images"]) == 45 and {data[t]["name"] for t in ("aws", "gcp", "local")} == {"aws-14", "gcp-14", "local-14"}


def test_a_swap_cut_short_is_finished_or_undone(tmp_path: Path):
    target = tmp_path / "pki"
    new, old = tmp_path / ".pki.new", tmp_path / ".pki.old"
    # cut after the old tree was moved aside: the new one is complete, so it goes in
    new.mkdir()
    (new / "a").write_text("new")
    old.mkdir()
    (old / "a").write_text("old")
    output.recover_tree(target)
    assert (target / "a").read_text() == "new" and not new.exists() and not old.exists()
    # cut while the new tree was being written: it is removed, the target left alone
    new.mkdir()
    (new / "half").write_text("")
    output.recover_tree(target)
    assert not new.exists() and (target / "a").read_text() == "new"
    # the old tree moved aside and the new one lost: the old one comes back
    shutil.rmtree(target)
    old.mkdir()
    (old / "a").write_text("old")
    output.recover_tree(target)
    assert (target / "a").read_text() == "old"


def test_write_tree_replaces_a_tree_whole_with_explicit_modes(tmp_path: Path):
    old_umask = os.umask(0)
    try:
        output.write_tree(tmp_path / "t", [("a/b/c", b"1", 0o640)], dir_mode=0o700)
        output.write_tree(tmp_path / "t", [("x", b"2", 0o600)], dir_mode=0o700)
    finally:
        os.umask(old_umask)
    assert sorted(p.relative_to(tmp_path / "t").as_posix() for p in (tmp_path / "t").rglob("*")) == ["x"]
    assert mode(tmp_path / "t") == 0o700 and mode(tmp_path / "t" / "x") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def _one_tree(target: Path) -> set[bytes]:
    """The contents of the files of one tree instance (read through its folder's descriptor,
    so a swap in between cannot mix two); files the other writer removed meanwhile are skipped."""
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    seen = set()
    try:
        for i in range(8):
            try:
                f = os.open(f"f{i}", os.O_RDONLY, dir_fd=fd)
            except FileNotFoundError:
                continue
            with os.fdopen(f, "rb") as fh:
                seen.add(fh.read())
    finally:
        os.close(fd)
    return seen


def test_two_writers_of_one_tree_never_mix_it(tmp_path: Path):
    target = tmp_path / "pki"
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for _ in range(20):
                output.write_tree(target, [(f"f{i}", str(k).encode(), 0o600) for i in range(8)], dir_mode=0o700)
                assert len(_one_tree(target)) <= 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pki"]
    assert len(_one_tree(target)) == 1
