"""Storage rules: explicit schemas, atomic writes, one fsspec layer for local and memory://."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import schemas
from jobs.cli import main as cli
from pipeline import faults, io, parquet
from pipeline.workspace import Workspace


def test_writer_never_infers_and_names_the_bad_column():
    schema = schemas.get("stats")
    with pytest.raises(ValueError, match="column 'rows_in' does not fit int64"):
        parquet.to_table({"stage": ["x"], "shard_id": ["s"], "run_id": ["r"],
                          "rows_in": ["many"], "rows_out": [1], "fingerprint": ["f"]}, schema)
    with pytest.raises(ValueError, match="required column 'rows_out' of the stats table is missing"):
        parquet.to_table({"stage": ["x"], "shard_id": ["s"], "run_id": ["r"], "rows_in": [1],
                          "fingerprint": ["f"]}, schema)
    with pytest.raises(ValueError, match=r"\['bogus'\] are not in the stats schema"):
        parquet.to_table({"bogus": [1]}, schema)


def test_embedding_vectors_are_fixed_size_lists_with_keys_in_the_row():
    schema = schemas.embeddings_schema(8, "float16")
    vec = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    t = parquet.to_table({"sample_id": ["a", "a", "b"], "video_id": ["v"] * 3,
                          "subject_id": ["s"] * 3, "shard_id": ["x"] * 3,
                          "frame_index": np.arange(3, dtype=np.int32),
                          "timestamp": np.zeros(3), "embedding": vec}, schema)
    schemas.check(t, schema)
    assert pa.types.is_fixed_size_list(t.schema.field("embedding").type)
    back = np.stack(t.column("embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(back, vec.astype(np.float16), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"expected shape \(n, 8\)"):
        parquet.to_table({"sample_id": ["a"], "shard_id": ["x"], "frame_index": [0],
                          "embedding": np.zeros((1, 7))}, schema)


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    url = str(tmp_path / "t" / "part-x.parquet")
    io.write_text_atomic(url, "old")
    monkeypatch.setenv("AUTT_FAULT", "after_tmp:part-x")
    with pytest.raises(faults.InjectedFault):
        io.write_text_atomic(url, "new")
    assert io.read_text(url) == "old"
    assert io.listdir(str(tmp_path / "t")) == ["part-x.parquet"]  # temporaries are invisible
    assert any(p.name.startswith("_tmp-") for p in (tmp_path / "t").iterdir())


def test_bad_fault_spec_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("AUTT_FAULT", "sometime:x")
    with pytest.raises(ValueError, match="AUTT_FAULT='sometime:x'"):
        faults.maybe_fail("after_tmp", "x")


def test_memory_filesystem_runs_the_same_code(tmp_path, tiny_video):
    src = "memory://autt-test-src"
    io.write_bytes_atomic(f"{src}/clip.mp4", tiny_video.read_bytes())
    man = pd.DataFrame([{"video_id": "v", "subject_id": "s", "label": "a", "path": "clip.mp4"}])
    io.write_text_atomic(f"{src}/manifest.csv", man.to_csv(index=False))
    out = "memory://autt-test-out"
    assert cli(["ingest", "--manifest", f"{src}/manifest.csv", "--classes", "a,b", "--out", out,
                "--executor", "local", "--quiet"]) == 0
    rows = Workspace(out).read_table("manifest", schemas.get("manifest")).to_pylist()
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["num_frames"] == 8
    assert rows[0]["path"] == "memory://autt-test-src/clip.mp4"
