"""`bakery ssh`, `bakery logs` and `down --purge`: the local provider's commands, without a VM."""

from __future__ import annotations

from pathlib import Path

import pytest

from bakery import cli


def _spec(tmp_path: Path, provider: str = "local") -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(f"name: lc\nprovider: {provider}\n")
    return str(path)


def test_logs_prints_the_console_tail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    console = tmp_path / "build" / "lc" / "local" / "lc-master-1" / "console.log"
    console.parent.mkdir(parents=True)
    console.write_text("".join(f"line {i}\n" for i in range(10)))
    assert cli.main(["logs", "-f", _spec(tmp_path), "-o", str(tmp_path / "build"), "lc-master-1", "-n", "2"]) == 0
    assert capsys.readouterr().out == "line 8\nline 9\n"


def test_logs_before_up_and_of_an_unknown_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path)
    assert cli.main(["logs", "-f", spec, "-o", str(tmp_path), "lc-master-0"]) == 5
    assert "no console log yet" in capsys.readouterr().err
    assert cli.main(["logs", "-f", spec, "-o", str(tmp_path), "lc-master-7"]) == 5
    assert "not a master of lc" in capsys.readouterr().err


def test_ssh_needs_the_key_that_up_makes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ssh", "-f", _spec(tmp_path), "-o", str(tmp_path), "lc-master-0", "--", "true"]) == 5
    assert "bakery up" in capsys.readouterr().err


def test_local_commands_refuse_a_cloud_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "aws.yaml"
    spec.write_text("name: lc\nprovider: aws\naws: {region: us-east-1}\n")
    for argv in (["ssh", "-f", str(spec), "lc-master-0"], ["logs", "-f", str(spec), "lc-master-0"]):
        assert cli.main(argv) == 2
        assert "local provider" in capsys.readouterr().err


def test_down_purge_of_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["down", "--purge", "-f", _spec(tmp_path), "-o", str(tmp_path)]) == 0
    assert "nothing" in capsys.readouterr().out
