"""The official release downloads, verified against the checksums their projects publish.

- Kubernetes: <base>/v<V>/bin/linux/<arch>/<component>, and beside it <component>.sha256
  (the hex digest alone), as the Kubernetes release documentation describes them;
  base https://dl.k8s.io/release.
- etcd: <base>/v<V>/etcd-v<V>-linux-<arch>.tar.gz and the release's SHA256SUMS;
  base https://github.com/etcd-io/etcd/releases/download.

A mirror is set with BAKERY_KUBERNETES_RELEASE_URL and BAKERY_ETCD_RELEASE_URL. Nothing
is installed before its checksum matches.
"""

from __future__ import annotations

import hashlib
import os
import platform
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from bakery.errors import ComponentError

Progress = Callable[[str], None]
KUBERNETES_BASE = "https://dl.k8s.io/release"
ETCD_BASE = "https://github.com/etcd-io/etcd/releases/download"
CHUNK = 1 << 20
REPORT_SECS = 5.0


def arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def _get_text(client: httpx.Client, url: str) -> str:
    try:
        r = client.get(url)
    except httpx.HTTPError as e:
        raise ComponentError(f"download of {url} failed: {e}") from None
    if r.status_code != 200:
        raise ComponentError(f"download of {url} failed: HTTP {r.status_code}")
    return r.text


def _fetch(client: httpx.Client, url: str, dest: Path, progress: Progress) -> str:
    """Stream `url` to `dest`; returns the sha256 of what arrived."""
    h = hashlib.sha256()
    started = last = time.monotonic()
    got = 0
    try:
        with client.stream("GET", url) as r:
            if r.status_code != 200:
                raise ComponentError(f"download of {url} failed: HTTP {r.status_code}")
            total = int(r.headers.get("content-length") or 0)
            with dest.open("wb") as f:
                for chunk in r.iter_bytes(CHUNK):
                    f.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    if time.monotonic() - last >= REPORT_SECS:
                        last = time.monotonic()
                        share = f" of {total / 1e6:.0f}" if total else ""
                        progress(f"  {dest.name}: {got / 1e6:.0f}{share} MB, {last - started:.0f} s")
    except httpx.HTTPError as e:
        raise ComponentError(f"download of {url} failed: {e}") from None
    return h.hexdigest()


def _verify(url: str, got: str, want: str) -> None:
    if got != want.lower():
        raise ComponentError(f"{url}: checksum mismatch (published sha256 {want}, downloaded {got}); nothing was installed")


def download(project: str, version: str, components: Sequence[str], out: Path, *, root: Path | None = None,
             progress: Progress, client: httpx.Client | None = None) -> dict[str, Path]:
    """Download and verify `components` of `project` at `version` into `out`."""
    own = client is None
    client = client or httpx.Client(follow_redirects=True, timeout=httpx.Timeout(60.0, connect=15.0))
    try:
        if project == "kubernetes":
            return _kubernetes(client, version, components, out, progress)
        if project == "etcd":
            return _etcd(client, version, components, out, progress)
        raise ComponentError(f"no release download is known for {project}")
    finally:
        if own:
            client.close()


def _kubernetes(client: httpx.Client, version: str, components: Sequence[str], out: Path, progress: Progress) -> dict[str, Path]:
    base = os.environ.get("BAKERY_KUBERNETES_RELEASE_URL", KUBERNETES_BASE).rstrip("/")
    made = {}
    for c in components:
        url = f"{base}/v{version}/bin/linux/{arch()}/{c}"
        want = _get_text(client, f"{url}.sha256").split()
        if not want or len(want[0]) != 64:
            raise ComponentError(f"{url}.sha256 does not hold a sha256 digest")
        progress(f"  downloading {url}")
        dest = out / c
        _verify(url, _fetch(client, url, dest, progress), want[0])
        made[c] = dest
    return made


def _etcd(client: httpx.Client, version: str, components: Sequence[str], out: Path, progress: Progress) -> dict[str, Path]:
    base = os.environ.get("BAKERY_ETCD_RELEASE_URL", ETCD_BASE).rstrip("/")
    name = f"etcd-v{version}-linux-{arch()}"
    url = f"{base}/v{version}/{name}.tar.gz"
    sums = _get_text(client, f"{base}/v{version}/SHA256SUMS")
    want = next((line.split()[0] for line in sums.splitlines() if line.split()[-1:] == [f"{name}.tar.gz"]), None)
    if want is None:
        raise ComponentError(f"{base}/v{version}/SHA256SUMS lists no {name}.tar.gz")
    progress(f"  downloading {url}")
    tarball = out / f"{name}.tar.gz"
    _verify(url, _fetch(client, url, tarball, progress), want)
    made = {}
    with tarfile.open(tarball) as tar:
        for c in components:
            try:
                member = tar.getmember(f"{name}/{c}")
            except KeyError:
                raise ComponentError(f"{url} has no {name}/{c}") from None
            if not member.isfile():
                raise ComponentError(f"{url}: {name}/{c} is not a regular file")
            src = tar.extractfile(member)
            assert src is not None
            dest = out / c
            with dest.open("wb") as f:
                while chunk := src.read(CHUNK):
                    f.write(chunk)
            made[c] = dest
    tarball.unlink()
    return made
