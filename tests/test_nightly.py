"""The nightly job's report (nightly.run: bake, rollout only when an image was built) and
`--fail-on-drift` (exit 10) on `bakery up` against moto with the real boto3."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from bakery import cli, nightly, state
from bakery.bake import TargetResult
from bakery.errors import BakeError, EtcdError
from bakery.rollout import Replaced
from tests.conftest import need_binary
from tests.moto_server import Moto, moto, moto_session, record_ami  # noqa: F401
from tests.test_aws_cli import aws_env  # noqa: F401

T0 = dt.datetime(2026, 12, 2, 2, 0, 5, tzinfo=dt.UTC)


def clock() -> object:
    ticks = iter([T0, T0 + dt.timedelta(minutes=12)])
    return lambda: next(ticks)


def image(status: str) -> TargetResult:
    return TargetResult("aws", "bakery-prod-1-31-4-abc", "abc", status)


def test_a_changed_image_is_rolled_out_and_reported(tmp_path: Path) -> None:
    paths = state.paths("prod", tmp_path)
    rolled: list[int] = []
    replaced = [Replaced("prod-master-1", 0xA1, 0xB1, 101.5), Replaced("prod-master-0", 0xA0, 0xB0, 99.0)]
    report = nightly.run(paths, bake=lambda: [image("built")], rollout=lambda: rolled.append(1) or replaced,
                         drift=lambda: ["prod-master-2: user-data differs"], now=clock())
    assert rolled == [1]
    written = json.loads(nightly.report_path(paths, T0).read_text())
    assert written == report and nightly.report_path(paths, T0).name == "nightly-20261202T020005Z.json"
    assert written["ok"] and written["image_changed"] and written["rollout"]["ran"]
    assert [r["node"] for r in written["rollout"]["replaced"]] == ["prod-master-1", "prod-master-0"]
    assert written["rollout"]["replaced"][0] == {"node": "prod-master-1", "old_member": "a1", "new_member": "b1", "seconds": 101.5,
                                                 "replacement": "prod-master-1"}
    assert written["bake"]["images"] == [{"target": "aws", "name": "bakery-prod-1-31-4-abc", "status": "built"}]
    assert written["drift"] == ["prod-master-2: user-data differs"]
    assert written["started_at"] == "2026-12-02T02:00:05+00:00" and written["finished_at"] == "2026-12-02T02:12:05+00:00"


def test_an_unchanged_image_rolls_nothing_out(tmp_path: Path) -> None:
    paths = state.paths("prod", tmp_path)

    def no_rollout() -> list[Replaced]:
        raise AssertionError("rollout ran for an unchanged image")

    report = nightly.run(paths, bake=lambda: [image("unchanged")], rollout=no_rollout, now=clock())
    assert report["ok"] and not report["image_changed"]
    assert report["rollout"] == {"ran": False, "reason": "the image's inputs did not change", "replaced": []}


@pytest.mark.parametrize(("fails", "step"), [("bake", "bake"), ("rollout", "rollout")])
def test_a_failed_step_is_in_the_report_and_raised(tmp_path: Path, fails: str, step: str) -> None:
    paths = state.paths("prod", tmp_path)

    def bake() -> list[TargetResult]:
        if fails == "bake":
            raise BakeError("packer build failed: exit 1")
        return [image("built")]

    def rollout() -> list[Replaced]:
        raise EtcdError("refusing to replace a master before the rollout: prod-master-2 is not healthy")

    with pytest.raises((BakeError, EtcdError)):
        nightly.run(paths, bake=bake, rollout=rollout, now=clock())
    written = json.loads(nightly.report_path(paths, T0).read_text())
    assert not written["ok"] and written["failed"]["step"] == step
    assert ("packer build failed" if fails == "bake" else "prod-master-2 is not healthy") in written["failed"]["error"]


def test_up_fail_on_drift_exits_10_after_reporting_it(aws_env: Moto, repo: Path, tmp_path: Path,  # noqa: F811
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    spec_file = tmp_path / "cluster.yaml"
    text = (repo / "examples" / "aws.yaml").read_text()
    spec_file.write_text(text)
    build = tmp_path / "build"
    paths = state.paths("prod-aws", build)
    paths.base.mkdir(parents=True)
    record_ami(paths, aws_env.register_ami())
    args = ["-f", str(spec_file), "-o", str(build)]
    assert cli.main(["up", *args, "--fail-on-drift"]) == 0  # a new cluster: nothing drifted
    capsys.readouterr()
    # a changed spec changes every master's user-data: `up` reports it and replaces nothing
    spec_file.write_text(text.replace("name: prod-aws\n", "name: prod-aws\napiserver:\n  extra_args:\n    v: \"2\"\n", 1))
    assert cli.main(["up", *args]) == 0
    assert capsys.readouterr().err.count("drift: ") == 3
    assert cli.main(["up", *args, "--fail-on-drift"]) == 10
    err = capsys.readouterr().err.splitlines()
    assert sum(line.startswith("drift: ") for line in err) == 3
    assert err[-1] == "error: 3 drift line(s) above (--fail-on-drift)"


def test_bakery_nightly_with_an_unchanged_image_writes_the_report_and_rolls_nothing(
        aws_env: Moto, repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    need_binary("packer")
    spec_file, build = str(repo / "examples" / "aws.yaml"), tmp_path / "build"
    paths = state.paths("prod-aws", build)
    paths.base.mkdir(parents=True)
    args = ["-f", spec_file, "-o", str(build)]
    assert cli.main(["bake", *args, "--dry-run"]) == 0  # the image's name and inputs' hash; runs only `packer version`
    (planned,) = json.loads(capsys.readouterr().out)
    record_ami(paths, aws_env.register_ami())
    doc = json.loads(paths.images.read_text())
    rec = {**doc["aws"], "name": planned["name"], "hash": planned["hash"]}
    doc["aws"], doc["images"] = rec, [rec]
    paths.images.write_text(json.dumps(doc))
    assert cli.main(["nightly", *args, "--fail-on-drift"]) == 0
    out = capsys.readouterr().out
    assert f"aws: {planned['name']} unchanged" in out and "rollout skipped: the image's inputs did not change" in out
    (report_file,) = paths.base.glob("nightly-*.json")
    report = json.loads(report_file.read_text())
    assert report["ok"] and not report["image_changed"] and report["rollout"]["replaced"] == []
    assert report["bake"]["images"] == [{"target": "aws", "name": planned["name"], "status": "unchanged"}]
