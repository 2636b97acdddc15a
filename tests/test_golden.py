"""Golden files pin the rendered output byte for byte (STYLE.md #9).

Each scenario folder holds a cluster.yaml, the cluster's one small `user-data` (what
every master boots with), and per node `<node>.tree`: the #cloud-config of the node's
whole file tree (what bakery-node writes there, and the node's user-data under
`user_data: embedded`).
The PKI is derived deterministically from a fixed seed and clock, so the files are
the same on every machine. After an intended change to rendering:

    make golden        # BAKERY_UPDATE_GOLDEN=1 pytest tests/test_golden.py

then review `git diff tests/golden`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
from pathlib import Path

import pytest

from bakery import discovery, pki, render, spec, topology
from bakery.node import description
from bakery.providers.base import LBAddress
from bakery.store import location

GOLDEN = Path(__file__).resolve().parent / "golden"
SCENARIOS = sorted(p.name for p in GOLDEN.iterdir() if (p / "cluster.yaml").exists())
SEED = b"bakery golden tests"
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
UPDATE = os.environ.get("BAKERY_UPDATE_GOLDEN") == "1"


BUILD = Path("/build")  # the local store URL derives from the build folder: a fixed one


def render_scenario(folder: Path, pki_dir: Path) -> dict[str, bytes]:
    """{file name in the scenario folder: bytes}."""
    s = spec.load(folder / "cluster.yaml")
    plan = topology.plan(s)
    keys = pki.ensure(plan, pki_dir, seed=SEED, now=NOW)
    bootstrap = discovery.bootstrap_for(s)
    out = {}
    if s.user_data == "store":
        doc, _ = description.document(s, LBAddress((), ()), bootstrap, keys)
        config = description.NodeConfig(s.name, location.store_url(s, BUILD), description.digest(doc))
        out["user-data"] = render.node_user_data(config.to_json(), s.provider).plain
    for name, r in render.render_cluster(plan, keys, bootstrap).items():
        out[f"{name}.tree"] = render.embedded_document(plan, r.node, r.files)
    return out


def test_the_three_required_scenarios_exist():
    assert {"aws-3-static-builtin", "gcp-5-discovery-podmaster", "local-3-systemd-podmaster"} <= set(SCENARIOS)


def _pinned(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name == "user-data" or p.suffix == ".tree"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_golden(scenario: str, tmp_path: Path):
    folder = GOLDEN / scenario
    rendered = render_scenario(folder, tmp_path / "pki")
    if UPDATE:
        for stale in _pinned(folder) - set(rendered):
            (folder / stale).unlink()
        for name, data in rendered.items():
            (folder / name).write_bytes(data)
        return
    assert _pinned(folder) == set(rendered), "node set changed; run `make golden` and review the diff"
    for name, data in rendered.items():
        expected = (folder / name).read_bytes()
        if data != expected:
            diff = difflib.unified_diff(
                expected.decode().splitlines(), data.decode().splitlines(),
                f"golden/{scenario}/{name}", "rendered", lineterm="", n=2,
            )
            pytest.fail(f"{scenario}/{name} differs from its golden file (make golden to accept):\n" + "\n".join(list(diff)[:80]))


def test_the_small_user_data_carries_no_private_key():
    for scenario in SCENARIOS:
        ud = GOLDEN / scenario / "user-data"
        assert ud.exists(), scenario
        assert b"PRIVATE KEY" not in ud.read_bytes() and b"-----BEGIN" not in ud.read_bytes(), scenario


def test_deterministic_pki_is_reproducible(tmp_path: Path):
    folder = GOLDEN / SCENARIOS[0]
    assert render_scenario(folder, tmp_path / "a") == render_scenario(folder, tmp_path / "b")
