"""bakery/components: the real binaries, from the official releases or built from the Go
modules, cached per machine. Downloads are served by a local HTTP server on loopback."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bakery import components, versions
from bakery.components import cache, gobuild
from bakery.errors import ComponentError


class Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A release mirror on 127.0.0.1 laid out as dl.k8s.io and etcd's GitHub releases are."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = lambda *a, **k: Files(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("BAKERY_KUBERNETES_RELEASE_URL", f"{base}/k8s")
    monkeypatch.setenv("BAKERY_ETCD_RELEASE_URL", f"{base}/etcd")
    yield root
    server.shutdown()
    server.server_close()


def publish_kubernetes(root: Path, version: str, component: str, data: bytes, digest: str | None = None) -> None:
    folder = root / "k8s" / f"v{version}" / "bin" / "linux" / "amd64"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / component).write_bytes(data)
    (folder / f"{component}.sha256").write_text((digest or hashlib.sha256(data).hexdigest()) + "\n")


def publish_etcd(root: Path, version: str, files: dict[str, bytes]) -> bytes:
    name = f"etcd-v{version}-linux-amd64"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(f"{name}/{member}")
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    folder = root / "etcd" / f"v{version}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.tar.gz").write_bytes(buf.getvalue())
    (folder / "SHA256SUMS").write_text(f"{hashlib.sha256(buf.getvalue()).hexdigest()}  {name}.tar.gz\n")
    return buf.getvalue()


def test_release_downloads_are_verified_cached_and_reused(mirror: Path, tmp_path: Path):
    publish_kubernetes(mirror, "1.37.2", "kubectl", b"#!/bin/sh\necho kubectl\n")
    publish_etcd(mirror, "3.7.4", {"etcd": b"e" * 3000, "etcdctl": b"c", "etcdutl": b"u"})
    lines: list[str] = []
    got = components.obtain(["kubectl", "etcd"], "1.37.2", "3.7.4", source="release", root=tmp_path / "cache", progress=lines.append)
    assert got["kubectl"] == tmp_path / "cache/kubernetes/v1.37.2/kubectl"
    assert got["kubectl"].read_bytes() == b"#!/bin/sh\necho kubectl\n" and os.access(got["kubectl"], os.X_OK)
    assert got["etcd"].read_bytes() == b"e" * 3000
    assert any("downloading" in line for line in lines)
    # a second call finds both in the cache and fetches nothing (the mirror is gone)
    for p in (mirror / "k8s", mirror / "etcd"):
        subprocess.run(["rm", "-rf", str(p)], check=True)
    again = components.obtain(["kubectl", "etcd"], "1.37.2", "3.7.4", source="release", root=tmp_path / "cache")
    assert again == got


def test_a_checksum_mismatch_installs_nothing(mirror: Path, tmp_path: Path):
    publish_kubernetes(mirror, "1.37.2", "kube-scheduler", b"tampered", digest="0" * 64)
    with pytest.raises(ComponentError, match=r"checksum mismatch.*nothing was installed"):
        components.obtain(["kube-scheduler"], "1.37.2", "3.7.4", source="release", root=tmp_path / "cache")
    slot = tmp_path / "cache/kubernetes/v1.37.2"
    assert sorted(p.name for p in slot.iterdir()) == [".lock"], "no binary, no staging folder left behind"


def test_a_version_the_release_does_not_have_is_named(mirror: Path, tmp_path: Path):
    with pytest.raises(ComponentError, match=r"v1\.37\.9/bin/linux/amd64/kubelet\.sha256 failed: HTTP 404"):
        components.obtain(["kubelet"], "1.37.9", "3.7.4", source="release", root=tmp_path / "cache")


def test_a_binary_changed_in_the_cache_counts_as_missing(mirror: Path, tmp_path: Path):
    publish_kubernetes(mirror, "1.37.2", "kubectl", b"good")
    got = components.obtain(["kubectl"], "1.37.2", "3.7.4", source="release", root=tmp_path / "cache")["kubectl"]
    got.write_bytes(b"bad")
    assert components.cached(["kubectl"], "1.37.2", "3.7.4", root=tmp_path / "cache") == {"kubectl": None}
    assert components.obtain(["kubectl"], "1.37.2", "3.7.4", source="release", root=tmp_path / "cache")["kubectl"].read_bytes() == b"good"


def test_the_source_is_chosen_without_the_network():
    assert components.choose_source(None, {"PATH": "/nonexistent"}) == "release"
    assert components.choose_source("build", {"PATH": "/nonexistent"}) == "build"
    assert components.choose_source(None, {"PATH": "/nonexistent", "BAKERY_BINARIES": "build"}) == "build"
    with pytest.raises(ComponentError, match="not one of auto, build, release"):
        components.choose_source("ftp")
    with pytest.raises(ComponentError, match="unknown component"):
        components.obtain(["kube-proxy"], "1.37.2", "3.7.4")


def test_building_without_go_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no go here
    with pytest.raises(ComponentError, match=r"needs the Go toolchain.*--source release"):
        components.obtain(["kubectl"], "1.37.2", "3.7.4", source="build", root=tmp_path / "cache")


def test_a_toolchain_older_than_the_module_wants_is_refused():
    with pytest.raises(ComponentError, match=r"needs Go 1\.26\.0 or newer and this machine's go is 1\.22\.5.*GOTOOLCHAIN=go1\.26\.0"):
        gobuild._check_toolchain((1, 22, 5), (1, 26, 0), "Kubernetes v1.37.2")


def test_a_version_the_module_proxy_does_not_have_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A module proxy on the file system (GOPROXY=file://) that has no such release."""
    need_go()
    proxy = tmp_path / "proxy"
    proxy.mkdir()
    monkeypatch.setenv("GOPROXY", f"file://{proxy}")
    monkeypatch.setenv("GOSUMDB", "off")
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "modcache"))
    with pytest.raises(ComponentError, match=r"the Go module proxy has no k8s\.io/kubernetes@v1\.99\.0"):
        components.obtain(["kubectl"], "1.99.0", "3.7.4", source="build", root=tmp_path / "cache")


def test_a_failed_build_shows_its_last_lines_and_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The go command is replaced by one that fails the way a compile error does."""
    fake = tmp_path / "bin" / "go"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\ncase \"$1 $2\" in\n  'env GOVERSION') echo go1.26.8 ;;\n"
                    "  'mod download') echo '{\"GoMod\": \"'$GOMODFILE'\"}' ;;\n"
                    "  'mod tidy') exit 0 ;;\n  *) echo 'k8s.io/x: cannot compile'; echo 'line two of the error'; exit 1 ;;\nesac\n")
    fake.chmod(0o755)
    gomod = tmp_path / "kubernetes.mod"
    gomod.write_text("module k8s.io/kubernetes\n\ngo 1.26.0\n\nreplace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n)\n")
    monkeypatch.setenv("GOMODFILE", str(gomod))
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    with pytest.raises(ComponentError) as e:
        components.obtain(["kubectl"], "1.37.2", "3.7.4", source="build", root=tmp_path / "cache")
    text = str(e.value)
    assert "go build of kubernetes v1.37.2 failed (exit 1)" in text and "line two of the error" in text
    assert f"full log: {tmp_path / 'cache/logs/kubernetes-v1.37.2.log'}" in text
    assert not (tmp_path / "cache/kubernetes/v1.37.2/kubectl").exists()


def test_the_wrapper_module_pins_every_staging_module_to_the_release():
    gomod = ("module k8s.io/kubernetes\n\ngo 1.26.0\n\nrequire (\n\tk8s.io/api v0.0.0\n)\n\nreplace (\n"
             "\tk8s.io/api => ./staging/src/k8s.io/api\n\tk8s.io/client-go => ./staging/src/k8s.io/client-go\n)\n")
    text = gobuild.kubernetes_wrapper("1.37.2", gomod)
    assert "require k8s.io/kubernetes v1.37.2" in text and "go 1.26.0" in text
    assert "\tk8s.io/api => k8s.io/api v0.37.2\n" in text and "\tk8s.io/client-go => k8s.io/client-go v0.37.2\n" in text
    with pytest.raises(ComponentError, match="replaces no staging modules"):
        gobuild.kubernetes_wrapper("1.37.2", "module k8s.io/kubernetes\n")


def test_the_cached_defaults_are_the_real_programs_of_their_versions():
    """What `make test` built (or found) for the default versions runs and says its version."""
    have = components.cached(components.ALL, versions.DEFAULT_KUBERNETES, versions.DEFAULT_ETCD)
    from tests.conftest import need

    need("the default versions' binaries", all(have.values()), "bakery binaries --kubernetes-version " + versions.DEFAULT_KUBERNETES)
    out = subprocess.run([str(have["kube-apiserver"]), "--version"], capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == f"Kubernetes v{versions.DEFAULT_KUBERNETES}"
    out = subprocess.run([str(have["etcd"]), "--version"], capture_output=True, text=True, timeout=60).stdout
    assert f"etcd Version: {versions.DEFAULT_ETCD}" in out
    r = subprocess.run([sys.executable, "-m", "bakery.cli", "binaries", "--kubernetes-version", versions.DEFAULT_KUBERNETES, "--cached"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and str(have["kubelet"]) in r.stdout and "(not cached)" not in r.stdout


def test_binaries_supported_lists_every_supported_minors_default_and_takes_no_version(tmp_path: Path):
    """`bakery binaries --supported` is what `make test` obtains: the newest known release of
    every supported minor with its paired etcd (here an empty cache: nothing is built)."""
    env = {**os.environ, "BAKERY_CACHE_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "bakery.cli", "binaries", "--supported", "--cached"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    wanted = [versions.KUBERNETES[m][-1] for m in versions.SUPPORTED_MINORS]
    assert sorted({row[0] for row in rows}) == sorted(wanted)
    assert len(rows) == len(wanted) * len(components.ALL) and all(row[2:] == ["(not", "cached)"] for row in rows)
    r = subprocess.run([sys.executable, "-m", "bakery.cli", "binaries", "--supported", "--kubernetes-version", "1.36.3"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode != 0 and "--supported" in r.stderr and "Traceback" not in r.stderr
    assert not any(tmp_path.iterdir())  # refused before anything was made


def test_install_is_a_rename_with_its_sum(tmp_path: Path):
    slot = cache.Slot(tmp_path, "etcd", "3.7.4")
    with slot.locked(), slot.staging() as work:
        made = work / "etcd"
        made.write_bytes(b"x")
        slot.install("etcd", made)
    assert slot.has("etcd") and not list(slot.folder.glob(".staging-*"))
    assert (slot.folder / "etcd.sha256").read_text().split()[0] == hashlib.sha256(b"x").hexdigest()


def need_go() -> None:
    from tests.conftest import need_binary

    need_binary("go", "install the Go toolchain")
