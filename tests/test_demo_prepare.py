"""`autt demo`'s data step (jobs.demo.prepare): the demo data of a workspace are made
once, and a rerun with other demo settings, or on data of another version, is refused
with one line instead of silently reusing them."""

from __future__ import annotations

import os

import pytest

from jobs.demo import RECORD, prepare
from jobs.pipeline_job import UserError
from pipeline.config import load_config

SMALL = ["demo.n_subjects=2", "demo.n_target=1", "demo.videos_per_class=1",
         "demo.n_frames=8", "demo.size=64"]


def _cfg(out: str, *extra: str):
    return load_config(None, [f"run.out={out}", *SMALL, *extra])


def test_demo_data_are_made_once_and_other_settings_are_refused(tmp_path) -> None:
    out = str(tmp_path / "ws")
    first = prepare(_cfg(out))
    assert os.path.exists(first.ingest.manifest)
    assert os.path.exists(os.path.join(out, "demo-data", RECORD))
    again = prepare(_cfg(out))  # the same settings: reused
    assert again.ingest.manifest == first.ingest.manifest
    with pytest.raises(UserError, match=r"demo settings \(n_subjects 2 -> 3\).*another --out"):
        prepare(_cfg(out, "demo.n_subjects=3"))
    with pytest.raises(UserError, match=r"seed 0 -> 5"):
        prepare(_cfg(out, "demo.seed=5"))
    os.remove(os.path.join(out, "demo-data", RECORD))  # as made before the record existed
    with pytest.raises(UserError, match="another version of autt demo"):
        prepare(_cfg(out))


def test_demo_out_must_be_local() -> None:
    with pytest.raises(UserError, match="must be a local path"):
        prepare(_cfg("memory://ws"))
