"""Never ship a certificate its CA did not sign (issue 13): `bakery render` interrupted
(SIGINT, SIGKILL) at chosen points and on a full tmpfs at many fill levels; after each,
the next render exits 0 with a PKI that `openssl verify` accepts leaf by leaf, or exits
with one clear line. Expiry is refused or warned and `bakery pki renew` fixes both."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from bakery import pki, spec, state, topology
from tests.conftest import need
from tests.pki_check import CRASH_AT, REPO, assert_consistent, one_error_line, run

EXAMPLE = REPO / "examples" / "aws.yaml"
CLUSTER = "prod-aws"


def render(build: Path, *extra: str, **kw) -> subprocess.CompletedProcess[str]:
    return run(["render", "-f", str(EXAMPLE), "-o", str(build), *extra], **kw)


def after(build: Path) -> None:
    """The next render, as a user would run it after the interruption."""
    r = render(build)
    if r.returncode == 0:
        assert_consistent(build / CLUSTER)
    else:
        one_error_line(r)
        assert r.returncode != 0


def interesting(log: list[str]) -> list[int]:
    """1-based call numbers worth interrupting at: the first, one inside the PKI's staging,
    just before and just after the PKI's swap, just before the first and the last node's
    swap and the admin.kubeconfig rename, and the last."""
    n = len(log)
    renames = [i for i, call in enumerate(log, 1) if call.startswith(("rename", "replace"))]
    points = {1, renames[0] // 2, renames[0], renames[0] + 1, renames[1], renames[-2], renames[-1], n}
    return sorted(p for p in points if 1 <= p <= n)


def counted(build: Path, tmp: Path) -> list[str]:
    log = tmp / "calls.log"
    r = run(["count", str(log), str(build), "--", "render", "-f", str(EXAMPLE), "-o", str(build)], prefix=CRASH_AT)
    assert r.returncode == 0, r.stderr
    return log.read_text().splitlines()


def set_lb(build: Path, name: str) -> None:
    st = state.paths(CLUSTER, build)
    state.update(st, lb={"dns_names": [name], "ips": []})


@pytest.mark.parametrize("phase", ["fresh", "lb-renamed"])
def test_interrupted_render_never_leaves_a_leaf_its_ca_did_not_sign(tmp_path: Path, phase: str):
    seed = tmp_path / "seed"
    if phase == "lb-renamed":  # a complete PKI whose apiserver certificate must be re-issued
        assert render(seed).returncode == 0
        set_lb(seed, "nlb-1.elb.us-east-1.amazonaws.com")
    probe = tmp_path / "probe"
    if seed.exists():
        shutil.copytree(seed, probe)
    log = counted(probe, tmp_path)
    # fresh: the PKI and 3 nodes moved in, admin.kubeconfig replaced; later swaps are renameat2 exchanges (not counted)
    assert sum(c.startswith(("rename", "replace")) for c in log) == (5 if phase == "fresh" else 1), log
    points = interesting(log) if phase == "fresh" else []
    if phase == "lb-renamed":  # the PKI is staged before the node trees; all are swapped in after the last is staged
        first_node = next(i for i, c in enumerate(log, 1) if "/nodes/" in c)
        points = sorted({first_node // 2, first_node - 2, first_node, len(log)})
    for k, point in enumerate(points):
        build = tmp_path / f"b{k}"
        if seed.exists():
            shutil.copytree(seed, build)
        sig = ("KILL", "INT")[k % 2]
        r = run([sig, str(point), str(build), "--", "render", "-f", str(EXAMPLE), "-o", str(build)], prefix=CRASH_AT)
        if sig == "KILL":
            assert r.returncode == -9, f"call {point}: {r.returncode} {r.stderr}"
        else:
            lines = [line for line in r.stderr.strip().splitlines() if not line.startswith("pki: ")]  # what was saved
            assert r.returncode == 130 and lines == ["interrupted; nothing half-written (outputs are replaced atomically)"], \
                f"call {point}: {r.stderr}"
        base = build / CLUSTER
        if (base / "pki").exists():  # whatever is there under the name pki/ is a complete PKI
            assert (base / "pki" / "manifest.json").exists(), f"call {point} ({log[point - 1]}): pki/ without a manifest"
        after(build)
        shutil.rmtree(build)


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    need("root (to mount a tmpfs)", os.geteuid() == 0)
    need("mount", shutil.which("mount") is not None)
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mnt)], capture_output=True, text=True, check=False)
    need("a tmpfs mount", r.returncode == 0, r.stderr.strip())
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True, timeout=30)


def fill(mnt: Path, leave: int) -> Path:
    """Leave about `leave` bytes free on the tmpfs."""
    filler = mnt / "filler"
    st = os.statvfs(mnt)
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def test_full_disk_at_many_points_never_leaves_a_mix(small_tmpfs: Path):
    build = small_tmpfs / "build"
    free = os.statvfs(small_tmpfs).f_bavail * os.statvfs(small_tmpfs).f_frsize
    assert render(build).returncode == 0
    need_bytes = free - os.statvfs(small_tmpfs).f_bavail * os.statvfs(small_tmpfs).f_frsize
    shutil.rmtree(build)
    outcomes = set()
    for k in range(4):  # from a full disk to three quarters of the room the whole render needs
        filler = fill(small_tmpfs, need_bytes * k // 4)
        r = render(build)
        base = build / CLUSTER
        if (base / "pki").exists():
            assert (base / "pki" / "manifest.json").exists()
        filler.unlink()
        if r.returncode != 0:
            line = one_error_line(r)
            assert r.returncode == 7 and "No space left on device" in line and "free some space" in line, line
            outcomes.add("refused")
            after(build)
        else:
            assert_consistent(base)
            outcomes.add("ok")
        # the same with a PKI in place that must change (the LB got its name) and nodes to rewrite
        set_lb(build, f"nlb-{k}.elb.us-east-1.amazonaws.com")
        before = (base / "pki" / "apiserver.crt").read_bytes()
        filler = fill(small_tmpfs, need_bytes * k // 8)
        r = render(build)
        if r.returncode != 0:
            one_error_line(r)
            assert (base / "pki" / "apiserver.crt").read_bytes() == before, "a failed render changed the PKI"
        filler.unlink()
        after(build)
        assert f"nlb-{k}.elb.us-east-1.amazonaws.com" in pki.sans(x509.load_pem_x509_certificate((base / "pki/apiserver.crt").read_bytes()))[0]
        shutil.rmtree(build)
    assert "refused" in outcomes


# -- expiry and renewal ------------------------------------------------------------------


def plan_of_example() -> topology.ClusterPlan:
    return topology.plan(spec.load(EXAMPLE))


def aged_pki(build: Path, days_ago: int) -> Path:
    folder = state.paths(CLUSTER, build).pki
    pki.ensure(plan_of_example(), folder, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago))
    return folder


def leaf_keys(folder: Path) -> dict[str, bytes]:
    return {rel: (folder / f"{rel}.key").read_bytes() for rel in json.loads((folder / "manifest.json").read_text())["leaves"]}


def test_expired_pki_is_refused_and_renew_fixes_it_with_new_keys(tmp_path: Path):
    build = tmp_path / "build"
    folder = aged_pki(build, 900)
    ca_before, keys_before = (folder / "ca.crt").read_bytes(), leaf_keys(folder)
    r = render(build)
    assert r.returncode == 3
    lines = r.stderr.strip().splitlines()
    assert lines and all(line.startswith("error: ") and "expired on" in line and "bakery pki renew" in line for line in lines), r.stderr
    assert any(str(folder / "apiserver.crt") in line for line in lines)
    assert not (build / CLUSTER / "nodes").exists(), "expired leaves were shipped"
    r = run(["pki", "renew", "-f", str(EXAMPLE), "-o", str(build)])
    assert r.returncode == 0, r.stderr
    assert "pki: renewed apiserver.crt until" in r.stderr and "(new key)" in r.stderr
    assert (folder / "ca.crt").read_bytes() == ca_before  # CAs are never renewed by it
    keys_after = leaf_keys(folder)
    assert all(keys_after[rel] != keys_before[rel] for rel in keys_before), "renew kept keys it was not asked to keep"
    r = render(build)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert_consistent(build / CLUSTER)


def test_soon_to_expire_pki_is_warned_and_renew_keep_keys_keeps_them(tmp_path: Path):
    build = tmp_path / "build"
    folder = aged_pki(build, pki.LEAF_DAYS - 10)  # leaves expire in ~10 days
    keys_before = leaf_keys(folder)
    r = render(build)
    assert r.returncode == 0
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert any(f"{folder / 'apiserver.crt'} expires on" in w and "bakery pki renew" in w for w in warnings), r.stderr
    r = run(["pki", "renew", "--keep-keys", "-f", str(EXAMPLE), "-o", str(build)])
    assert r.returncode == 0 and "(same key)" in r.stderr and "(new key)" not in r.stderr, r.stderr
    assert leaf_keys(folder) == keys_before
    end = x509.load_pem_x509_certificate((folder / "apiserver.crt").read_bytes()).not_valid_after_utc
    assert end - dt.datetime.now(dt.UTC) > dt.timedelta(days=pki.LEAF_DAYS - 1)
    r = render(build)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert_consistent(build / CLUSTER)
    r = run(["pki", "renew", "-f", str(EXAMPLE), "-o", str(build)])
    assert r.returncode == 0 and "nothing renewed" in r.stdout and leaf_keys(folder) == keys_before


def test_renew_without_a_pki_says_so(tmp_path: Path):
    r = run(["pki", "renew", "-f", str(EXAMPLE), "-o", str(tmp_path / "b")])
    assert r.returncode == 3 and "no PKI to renew yet" in one_error_line(r)
