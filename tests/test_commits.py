"""Atomic, resumable units on the micro dataset: a kill between the two tables of a fused
shard, or during a retry, resumes with every ok face frame embedded exactly once; the fused
pass reuses done faces (no MTCNN) when only the embeddings need work; vectors computed
another way (device, precision) are not mixed into one table unless asked for."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.workspace import Workspace
from tests.test_pipeline_micro import EMB, TINY, keys, run, table


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from pipeline.demo import make_micro

    return make_micro(str(tmp_path_factory.mktemp("micro")), n_subjects=2, n_frames=5, extra=1)


@pytest.fixture
def broken(micro, tmp_path):
    """A copy of the micro data with one unreadable frame, ingested and run once."""
    data = tmp_path / "data"
    shutil.copytree(Path(micro["manifest"]).parent, data)
    frame = data / "faces" / "s01" / "s01_pain_1" / "frame_2.png"
    good = frame.read_bytes()
    frame.write_bytes(b"not a png")
    out = tmp_path / "out"
    assert run(out, "ingest", manifest=str(data / "manifest.csv")) == 0
    assert run(out, "embed", "--fused") == 0
    faces = table(out, "faces").to_pandas()
    assert (faces["status"] == "bad_frame").sum() == 1
    frame.write_bytes(good)  # repaired: a retry can now succeed
    return out


def assert_every_ok_frame_embedded_once(out: Path) -> None:
    faces = table(out, "faces")
    assert set(faces.column("status").to_pylist()) == {"ok"}
    emb = keys(table(out, EMB))
    assert emb == keys(faces) and len(set(emb)) == len(emb)


@pytest.mark.parametrize("where", [
    f"after_tmp:{EMB}/part-",            # embeddings data written, nothing committed
    "after_tmp:errors/faces/",           # faces data written, its errors file not
    "after_tmp:faces/_done",             # the commit record itself not in place
    "before_done:faces+embed",           # every file written, no marker
])
def test_kill_during_fused_retry_resumes_exactly_once(broken, monkeypatch, where):
    committed = {t: Workspace(str(broken)).markers(t) for t in ("faces", EMB)}
    monkeypatch.setenv("AUTT_FAULT", where)
    assert run(broken, "embed", "--fused", "--retry-failed") == 1
    monkeypatch.delenv("AUTT_FAULT")
    # Both tables of the unit flip at once: a kill anywhere leaves the last commit whole.
    assert {t: Workspace(str(broken)).markers(t) for t in committed} == committed
    assert keys(table(broken, EMB)) == keys(table(broken, "faces").filter(
        __import__("pyarrow").compute.equal(table(broken, "faces").column("status"), "ok")))
    # The same command resumes; a plain rerun after it has nothing left to do.
    assert run(broken, "embed", "--fused", "--retry-failed") == 0
    assert_every_ok_frame_embedded_once(broken)
    before = {t: Workspace(str(broken)).markers(t) for t in ("faces", EMB)}
    assert run(broken, "embed", "--fused") == 0
    assert {t: Workspace(str(broken)).markers(t) for t in before} == before


def test_embeddings_lost_after_commit_are_redone_without_mtcnn(broken, monkeypatch):
    """Faces committed, embeddings missing (their marker deleted by hand): a plain rerun
    embeds them from the stored boxes without running the face stage again."""
    ws = Workspace(str(broken))
    shard = sorted(ws.markers(EMB))[0]
    (broken / EMB / "_done" / f"{shard}.json").unlink()
    faces_markers = ws.markers("faces")
    monkeypatch.setattr("pipeline.embed.shard.FaceStage", None)  # any face stage use fails
    assert run(broken, "embed", "--fused") == 0
    assert Workspace(str(broken)).markers("faces") == faces_markers
    assert Workspace(str(broken)).markers(EMB)[shard]["stage"] == "embed"
    faces = table(broken, "faces")
    ok = faces.filter(__import__("pyarrow").compute.equal(faces.column("status"), "ok"))
    assert keys(table(broken, EMB)) == keys(ok)


def test_committed_files_only_and_no_orphans(broken, monkeypatch):
    monkeypatch.setenv("AUTT_FAULT", f"after_tmp:{EMB}/part-")
    assert run(broken, "embed", "--fused", "--retry-failed") == 1
    monkeypatch.delenv("AUTT_FAULT")
    assert run(broken, "embed", "--fused", "--retry-failed") == 0
    ws = Workspace(str(broken))
    for name in ("faces", EMB):
        named = {Path(u).name for s in ws.markers(name) for u in ws.files(name, s).values()}
        on_disk = {p.name for folder in (name, f"errors/{name}", f"stats/{name}")
                   for p in (broken / folder).glob("part-*.parquet")}
        assert on_disk == named


def test_fused_after_standalone_faces_reuses_them(micro, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert run(out, "ingest", manifest=micro["manifest"]) == 0
    assert run(out, "faces") == 0
    faces_markers = Workspace(str(out)).markers("faces")

    def no_mtcnn(*a, **k):
        raise AssertionError("the face stage must not run again")

    monkeypatch.setattr("pipeline.embed.shard.FaceStage", no_mtcnn)
    assert run(out, "embed", "--fused") == 0
    assert Workspace(str(out)).markers("faces") == faces_markers
    assert keys(table(out, EMB)) == keys(table(out, "faces"))
    # a second backbone in the same workspace: embeddings only, faces untouched
    other = "embeddings/autt-tiny__random-s1"
    assert run(out, "embed", "--fused", "embed.seed=1") == 0
    assert Workspace(str(out)).markers("faces") == faces_markers
    assert keys(table(out, other)) == keys(table(out, "faces"))
    assert run(out, "embed", "--fused") == 0  # and the first backbone is still done


def test_mixed_numerics_refused_unless_allowed(micro, tmp_path, capsys):
    out = tmp_path / "out"
    data = tmp_path / "data"
    shutil.copytree(Path(micro["manifest"]).parent, data)
    man = (data / "manifest.csv").read_text().splitlines()
    (data / "first.csv").write_text("\n".join(man[:-1]) + "\n")  # the last sample comes later
    assert run(out, "ingest", manifest=str(data / "first.csv")) == 0
    assert run(out, "embed", "--fused") == 0
    ws = Workspace(str(out))
    for shard, marker in ws.markers(EMB).items():  # as if a GPU had computed them
        assert marker["numerics"] == "cpu/fp32"
        marker["numerics"] = "cuda/amp_fp16"
        (out / EMB / "_done" / f"{shard}.json").write_text(json.dumps(marker))
    assert run(out, "ingest", manifest=str(data / "manifest.csv")) == 0
    capsys.readouterr()
    assert run(out, "embed", "--fused") == 1
    assert "embed.mixed_numerics=true" in capsys.readouterr().err
    assert run(out, "embed", "--fused", "embed.mixed_numerics=true") == 0
    assert {m["numerics"] for m in Workspace(str(out)).markers(EMB).values()} == {
        "cuda/amp_fp16", "cpu/fp32"}


def test_non_finite_embedding_is_an_error_row(micro, tmp_path, monkeypatch):
    import numpy as np

    from pipeline.embed.stage import EmbedStage

    real = EmbedStage.embed

    def nan_for_first(self, pixels):
        out = real(self, pixels)
        if len(out):
            out[0] = np.nan
        return out

    monkeypatch.setattr(EmbedStage, "embed", nan_for_first)
    out = tmp_path / "out"
    assert run(out, "ingest", manifest=micro["manifest"]) == 0
    assert run(out, "embed", "--fused") == 0
    ws = Workspace(str(out))
    import schemas

    errors = ws.read_side_table("errors", EMB, schemas.get("errors")).to_pylist()
    assert errors and {e["status"] for e in errors} == {"embed_error"}
    assert all("non-finite" in e["error"] for e in errors)
    emb = table(out, EMB)
    assert not set(emb.column("sample_id").to_pylist()) & {e["sample_id"] for e in errors}
    monkeypatch.setattr(EmbedStage, "embed", real)
    assert run(out, "embed", "--fused", "--retry-failed") == 0
    assert keys(table(out, EMB)) == keys(table(out, "faces"))


__all__ = ["TINY"]
