"""The routing benchmark runs end to end on a small world and prints its comparison."""

from __future__ import annotations

import pytest

from bench import routing


def test_the_routing_benchmark_prints_engine_and_baseline(
    capsys: pytest.CaptureFixture[str],
) -> None:
    routing.main(
        [
            "--agents",
            "60",
            "--waiting",
            "300",
            "--queues",
            "5",
            "--decisions",
            "40",
            "--baseline-decisions",
            "5",
            "--no-freeze",
        ]
    )
    out = capsys.readouterr().out
    rows = {
        words[0]: words
        for words in (line.split() for line in out.splitlines())
        if len(words) == 6 and words[1].isdigit()
    }
    assert rows["engine"][1] == "40"  # every decision it was asked for was made
    assert rows["baseline"][1] == "5"
    assert "targets (p99 < 5 ms, >= 1000 assignments/s)" in out
