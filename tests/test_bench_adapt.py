"""`autt bench adapt` runs end to end at toy sizes and prints every part of its table."""

from __future__ import annotations

import pytest

from jobs.cli import main as cli


def test_bench_adapt_prints_its_tables(capsys) -> None:
    rc = cli(["bench", "adapt", "--model", "autt-tiny", "--clips", "3", "--frames", "6", "--window", "4",
              "--steps", "2", "--reps", "1", "--tower-reps", "1", "--batch", "2", "--workers", "none",
              "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    for line in ("cache fast", "cache plain", "tower + plain", "fast / plain text path", "whole subject",
                 "2 subjects one at a time", "peak RSS"):
        assert line in out, line
    # batched subjects are the same arithmetic per subject: equal final probabilities
    diff = float(out.split("max |final prob diff|")[1].split()[0])
    assert diff <= 1e-5


def test_bench_adapt_refuses_bad_options(capsys) -> None:
    with pytest.raises(SystemExit):
        cli(["bench", "adapt", "--window", "30", "--frames", "20"])
    assert "--window 30 is longer than --frames 20" in capsys.readouterr().err
