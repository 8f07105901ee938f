"""Planning a rerun with nothing to do, and `autt status`, cost O(shards) small reads: never a
walk of the whole workspace, never a read per sample (the `autt bench plan` workspace, built
at a few sizes, with every storage call counted)."""

from __future__ import annotations

from collections import Counter

import fsspec.implementations.local as local
import pytest

from jobs import bench_plan
from pipeline.config import load_config

CALLS = ("cat_file", "cat", "_open", "ls", "find", "glob", "walk", "info")


def counted(tmp_path, monkeypatch, samples: int, shard_size: int) -> Counter:
    cfg = load_config(None, ["embed.model=autt-tiny", "embed.weights=random"])
    root = str(tmp_path / f"ws-{samples}-{shard_size}")
    bench_plan.build(root, samples, shard_size, 2, cfg)
    calls: Counter = Counter()
    for name in CALLS:
        original = getattr(local.LocalFileSystem, name)

        def spy(self, *a, _name=name, _original=original, **k):
            calls[_name] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(local.LocalFileSystem, name, spy)
    rows = bench_plan.measure(root, cfg)
    monkeypatch.undo()
    assert [r[2] for r in rows if "to do" in str(r[2])] == ["0 to do", "0 to do"]  # nothing to do
    return calls


@pytest.mark.parametrize("shards", [8])
def test_no_op_planning_reads_per_shard_not_per_sample(tmp_path, monkeypatch, shards):
    small = counted(tmp_path, monkeypatch, samples=shards * 10, shard_size=10)
    many_samples = counted(tmp_path, monkeypatch, samples=shards * 200, shard_size=200)
    many_shards = counted(tmp_path, monkeypatch, samples=shards * 4 * 10, shard_size=10)
    assert small["find"] == 0 and small["walk"] == 0  # no walk over the workspace
    assert sum(many_samples.values()) == sum(small.values()), (small, many_samples)  # not per sample
    # four times the shards: at most four times the calls (O(shards)), in practice far fewer
    assert sum(many_shards.values()) <= 4 * sum(small.values()), (small, many_shards)
