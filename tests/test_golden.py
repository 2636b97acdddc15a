"""Golden files pin the rendered user-data byte for byte (STYLE.md #9).

Each scenario folder holds a cluster.yaml and the expected user-data of every node.
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

GOLDEN = Path(__file__).resolve().parent / "golden"
SCENARIOS = sorted(p.name for p in GOLDEN.iterdir() if (p / "cluster.yaml").exists())
SEED = b"bakery golden tests"
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
UPDATE = os.environ.get("BAKERY_UPDATE_GOLDEN") == "1"


def render_scenario(folder: Path, pki_dir: Path) -> dict[str, bytes]:
    s = spec.load(folder / "cluster.yaml")
    plan = topology.plan(s)
    keys = pki.ensure(plan, pki_dir, seed=SEED, now=NOW)
    nodes = render.render_cluster(plan, keys, discovery.bootstrap_for(s))
    return {name: r.user_data.plain for name, r in nodes.items()}


def test_the_three_required_scenarios_exist():
    assert {"aws-3-static-builtin", "gcp-5-discovery-podmaster", "local-3-systemd-podmaster"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_golden(scenario: str, tmp_path: Path):
    folder = GOLDEN / scenario
    rendered = render_scenario(folder, tmp_path / "pki")
    expected_names = {p.name.removesuffix(".user-data") for p in folder.glob("*.user-data")}
    if UPDATE:
        for stale in expected_names - set(rendered):
            (folder / f"{stale}.user-data").unlink()
        for name, data in rendered.items():
            (folder / f"{name}.user-data").write_bytes(data)
        return
    assert expected_names == set(rendered), "node set changed; run `make golden` and review the diff"
    for name, data in rendered.items():
        expected = (folder / f"{name}.user-data").read_bytes()
        if data != expected:
            diff = difflib.unified_diff(
                expected.decode().splitlines(), data.decode().splitlines(),
                f"golden/{scenario}/{name}.user-data", "rendered", lineterm="", n=2,
            )
            pytest.fail(f"{scenario}/{name} differs from its golden file (make golden to accept):\n" + "\n".join(list(diff)[:80]))


def test_deterministic_pki_is_reproducible(tmp_path: Path):
    folder = GOLDEN / SCENARIOS[0]
    assert render_scenario(folder, tmp_path / "a") == render_scenario(folder, tmp_path / "b")
