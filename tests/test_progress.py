"""Unit progress: a bar on a terminal, plain lines elsewhere; notices stay readable."""

from __future__ import annotations

import io
import sys

from jobs import progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_on_a_terminal(monkeypatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    p = progress.UnitProgress(True, "faces", 2)
    p.advance("[faces] 1/2 shard a")
    progress.say("a notice")
    p.advance("[faces] 2/2 shard b")
    p.close()
    assert err.getvalue() == "[faces] 1/2 shard a\na notice\n[faces] 2/2 shard b\n"


def test_a_bar_on_a_terminal_with_notices_above_it(monkeypatch) -> None:
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.delenv("AUTT_PROGRESS", raising=False)
    monkeypatch.setenv("COLUMNS", "120")
    p = progress.UnitProgress(True, "embed", 3)
    assert p.bar is not None
    for i in range(3):
        p.advance(f"[embed] {i + 1}/3 shard s{i}")
    progress.say("shard s9 FAILED: boom")
    p.close()
    text = err.getvalue()
    assert "[embed]" in text and "3/3" in text and "100%" in text  # tqdm's bar
    assert "shard s9 FAILED: boom\n" in text
    assert not progress._active  # closed: later notices print plainly


def test_quiet_prints_nothing_and_lines_can_be_forced(monkeypatch) -> None:
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    quiet = progress.UnitProgress(False, "train", 5)
    quiet.advance("x")
    quiet.close()
    assert err.getvalue() == ""
    monkeypatch.setenv("AUTT_PROGRESS", "lines")
    forced = progress.UnitProgress(True, "train", 5)
    forced.advance("[train] 1/5 model m0")
    forced.close()
    assert err.getvalue() == "[train] 1/5 model m0\n"


def test_a_terminal_without_width_gets_lines(monkeypatch) -> None:
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.delenv("AUTT_PROGRESS", raising=False)
    monkeypatch.setenv("COLUMNS", "0")  # e.g. `script` without a size: tqdm would draw nothing
    p = progress.UnitProgress(True, "adapt", 2)
    assert p.bar is None
    p.advance("[adapt] 1/2 shard u1")
    p.close()
    assert err.getvalue() == "[adapt] 1/2 shard u1\n"
