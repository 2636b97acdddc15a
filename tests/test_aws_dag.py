"""The step-graph runner behind the AWS provider's up/down (bakery/providers/aws/dag.py)."""

from __future__ import annotations

import threading

import pytest

from bakery.providers.aws import dag


def test_independent_steps_run_together_and_dependents_see_results() -> None:
    both = threading.Barrier(2, timeout=10)  # passes only if a and b run at the same time

    def meet(value: int):
        def fn(r):
            both.wait()
            return value
        return fn

    run = dag.run([
        dag.Step("a", (), meet(1)),
        dag.Step("b", (), meet(2)),
        dag.Step("sum", ("a", "b"), lambda r: r["a"] + r["b"]),
        dag.Step("where", ("sum",), lambda r: threading.current_thread() is threading.main_thread(), inline=True),
    ])
    assert run.results["sum"] == 3
    assert run.results["where"] is True  # inline steps run on the caller's thread
    assert run.trace["sum"].deps == ("a", "b")


def test_a_failure_stops_waiting_steps_and_starts_nothing_new() -> None:
    seen: list[str] = []

    def waits(r):
        try:
            for _ in range(600):  # 10 minutes of polls unless cancelled
                dag.sleep(1.0)
        except dag.Cancelled:
            seen.append("cancelled")
            raise

    def fails(r):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        dag.run([
            dag.Step("waits", (), waits),
            dag.Step("fails", (), fails),
            dag.Step("after", ("fails",), lambda r: seen.append("after ran")),
        ])
    assert seen == ["cancelled"]
