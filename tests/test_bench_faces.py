"""`autt bench faces` at toy sizes: both tables print, with a row per clip and demo video."""

from __future__ import annotations

import re

import pytest

from jobs.cli import main as cli
from tests.media import needs_shared_faces, shared_faces_dir


@needs_shared_faces()
def test_bench_faces_prints_both_tables(capsys) -> None:
    clip = str(shared_faces_dir() / "single_face.mp4")
    assert cli(["bench", "faces", "--clips", clip, "--frames", "10", "--reps", "1", "--demo", "1",
                "--threads", "1", "--detect-size", "160"]) == 0
    out = capsys.readouterr().out
    assert "resample fast" in out and "keyframe_every 8, keyframe_shrink on" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.startswith(("single_face.mp4", "demo_0.mp4"))}
    assert set(rows) == {"single_face.mp4", "demo_0.mp4"}
    key = [line for line in out.splitlines() if line.startswith("demo_0.mp4")][-1].split()
    ratio, faces, iou = float(key[4]), int(key[5]), float(key[8])
    assert ratio > 0 and faces == 10 and 0.5 < iou <= 1.0  # 10 frames of the 40, all faces
    assert re.search(r"keyframe mode, seconds by phase .*detect \d", out)
    waits = re.search(r"per-frame detection [\d.]+ f/s, waiting for frames ([\d.]+) s of "
                      r"([\d.]+) s .*keyframe mode [\d.]+ f/s, waiting ([\d.]+) s of ([\d.]+) s",
                      out)
    assert waits, out
    assert 0 < float(waits[1]) <= float(waits[2]) and 0 < float(waits[3]) <= float(waits[4])


def test_bench_faces_refuses_bad_sizes(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        cli(["bench", "faces", "--reps", "0"])
    assert stop.value.code == 2
    assert "--reps and --frames must be >= 1" in capsys.readouterr().err
