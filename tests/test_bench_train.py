"""`autt bench train` at toy sizes: every row runs and the table reports them."""

from __future__ import annotations

from jobs.cli import main as cli

TINY = ["--model", "autt-tiny", "--subjects", "3", "--samples", "4", "--frames", "12", "--dim", "16",
        "--aus", "5", "--epochs", "2", "--steps", "2", "--reps", "1", "--batch-size", "2", "--clip-len",
        "4", "--threads", "1", "--in-process"]


def test_bench_train_prints_every_row(capsys) -> None:
    assert cli(["bench", "train", *TINY]) == 0
    out = capsys.readouterr().out
    for row in ("cache step (d=16)", "tower step (autt-tiny on 8 crops)", "full training (2 epochs, 8 steps)"):
        assert row in out
    assert "tower step / cache step:" in out
    assert "3 subjects x 4 samples x 12 frames = 144 vectors of 16" in out


def test_bench_train_refuses_bad_sizes(capsys) -> None:
    import pytest

    with pytest.raises(SystemExit) as stop:
        cli(["bench", "train", "--subjects", "1"])
    assert stop.value.code == 2
    assert "--subjects must be >= 2" in capsys.readouterr().err
