"""Checks the PKI integrity tests share: run bakery, and verify a build folder with `openssl verify`."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from tests.conftest import need_binary

REPO = Path(__file__).resolve().parent.parent
BAKERY = [sys.executable, "-m", "bakery.cli"]
CRASH_AT = [sys.executable, str(REPO / "tests" / "crash_at.py")]


def run(args: list[str], *, umask: int | None = None, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    def pre() -> None:
        if umask is not None:
            os.umask(umask)

    return subprocess.run([*(prefix or BAKERY), *args], capture_output=True, text=True, check=False, timeout=120,
                          preexec_fn=pre, cwd=REPO)


def ca_of(rel: str) -> str:
    """The CA of a leaf, by its path in the PKI folder or in a node's /etc/kubernetes/pki."""
    return "etcd/ca" if rel.startswith("etcd/") or "/etcd-" in rel or "etcd-client" in rel else \
        "front-proxy-ca" if rel.startswith("front-proxy") else "ca"


def openssl_verify(ca: Path, certs: list[Path]) -> None:
    """`openssl verify` of every certificate against `ca` alone; fails naming the ones it rejects."""
    if not certs:
        return
    openssl = need_binary("openssl", "apt-get install openssl")
    r = subprocess.run([openssl, "verify", "-x509_strict", "-CAfile", str(ca), *map(str, certs)],
                       capture_output=True, text=True, check=False, timeout=60)
    ok = [line for line in r.stdout.splitlines() if line.endswith(": OK")]
    assert r.returncode == 0 and len(ok) == len(certs), f"openssl verify -CAfile {ca}:\n{r.stdout}{r.stderr}"


def assert_consistent(base: Path) -> None:
    """build/<cluster>/ as a user would get it: every leaf in pki/ (all of them listed in the
    manifest), every certificate in every node tree, and admin.kubeconfig's client certificate
    verify against the PKI's CAs with openssl; node trees carry the PKI's own CAs."""
    pki = base / "pki"
    manifest = json.loads((pki / "manifest.json").read_text())
    leaves = manifest["leaves"]
    on_disk = {p.relative_to(pki).with_suffix("").as_posix() for p in pki.rglob("*.crt")}
    assert on_disk - set(leaves) == {"ca", "etcd/ca", "front-proxy-ca"}, "a certificate outside the manifest"
    by_ca: dict[str, list[Path]] = {}
    for rel, info in leaves.items():
        by_ca.setdefault(info["ca"], []).append(pki / f"{rel}.crt")
        assert info["ca"] == ca_of(rel), rel
    nodes = sorted((base / "nodes").iterdir()) if (base / "nodes").is_dir() else []
    for node in nodes:
        files = node / "files/etc/kubernetes/pki"
        for ca, local in (("ca", "ca.crt"), ("etcd/ca", "etcd/ca.crt"), ("front-proxy-ca", "front-proxy-ca.crt")):
            assert (files / local).read_bytes() == (pki / f"{ca}.crt").read_bytes(), f"{node.name}: {local} is not the PKI's"
        for p in files.rglob("*.crt"):
            if not p.name.endswith("ca.crt"):
                by_ca[ca_of(p.relative_to(files).as_posix())].append(p)
    with tempfile.TemporaryDirectory() as tmp:
        admin = base / "admin.kubeconfig"
        if admin.exists():
            cfg = yaml.safe_load(admin.read_text())
            client = Path(tmp) / "admin-client.crt"
            client.write_bytes(base64.b64decode(cfg["users"][0]["user"]["client-certificate-data"]))
            by_ca["ca"].append(client)
        for ca, certs in by_ca.items():
            openssl_verify(pki / f"{ca}.crt", certs)


def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    """The one `error:` line of a failed run; `pki:` lines before it report what was saved."""
    lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("pki: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"not one clear line (rc {r.returncode}):\n{r.stderr}"
    assert "Traceback" not in r.stderr
    return lines[0]
