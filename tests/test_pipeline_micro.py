"""Faces and embeddings on the micro dataset (pre-cropped faces): reruns, resumes, faults
on a real local Ray cluster, and the standalone and fused paths agreeing row for row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import schemas
from jobs.cli import main as cli
from pipeline import parquet
from pipeline.workspace import Workspace

TINY = ["embed.model=autt-tiny", "embed.weights=random"]
EMB = "embeddings/autt-tiny__random-s0"


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from pipeline.demo import make_micro

    return make_micro(str(tmp_path_factory.mktemp("micro")), n_subjects=3, n_frames=6, extra=2)


def run(out, command, *extra, manifest=None, executor="local"):
    args = [command, "--out", str(out), "--executor", executor, "--quiet", *TINY, *extra]
    if command == "ingest":
        args += ["--manifest", manifest, "--classes", "neutral,pain", "ingest.shard_size=2"]
    return cli(args)


def table(out, name, schema=None) -> pa.Table:
    return Workspace(str(out)).read_table(name, schema)


def keys(t: pa.Table) -> list[tuple]:
    return sorted(zip(t.column("sample_id").to_pylist(), t.column("frame_index").to_pylist()))


def test_fused_pass_writes_conforming_tables_and_reruns_do_nothing(micro, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(out, "ingest", manifest=micro["manifest"]) == 0
    assert run(out, "embed", "--fused") == 0
    faces = table(out, "faces", schemas.get("faces"))
    emb = table(out, EMB)
    assert faces.num_rows == micro["n_samples"] * 6
    assert set(faces.column("status").to_pylist()) == {"ok"}
    assert faces.column("crop").null_count == faces.num_rows  # crops not stored by default
    assert keys(emb) == keys(faces)
    ws = Workspace(str(out))
    for shard in ws.markers(EMB):
        part = parquet.read(ws.part_url(EMB, shard))
        schemas.check(part, schemas.embeddings_schema(32, "float16"))
        schemas.check(parquet.read(ws.part_url("faces", shard)), schemas.get("faces"))
    capsys.readouterr()
    assert run(out, "embed", "--fused") == 0
    assert "0 shard(s) done, 3 already done" in capsys.readouterr().out
    # standalone embed sees the fused embeddings as done: same fingerprint either way
    assert run(out, "embed") == 0
    assert "embed: 0 shard(s) done, 3 already done" in capsys.readouterr().out


def test_standalone_faces_then_embed_equals_fused(micro, tmp_path):
    fused, split, stored = tmp_path / "fused", tmp_path / "split", tmp_path / "stored"
    for out in (fused, split, stored):
        assert run(out, "ingest", manifest=micro["manifest"]) == 0
    assert run(fused, "embed", "--fused") == 0
    assert run(split, "faces") == 0 and run(split, "embed") == 0  # crops recomputed from boxes
    assert run(stored, "faces", "faces.store_crops=true") == 0
    assert table(stored, "faces").column("crop").null_count == 0
    assert run(stored, "embed", "faces.store_crops=true") == 0  # crops read back from PNG
    ref = table(fused, EMB).sort_by([("sample_id", "ascending"), ("frame_index", "ascending")])
    for other in (split, stored):
        t = table(other, EMB).sort_by([("sample_id", "ascending"), ("frame_index", "ascending")])
        assert keys(t) == keys(ref)
        a = np.stack(t.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
        b = np.stack(ref.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-3)


def test_changed_config_refuses_and_recompute_redoes(micro, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(out, "ingest", manifest=micro["manifest"]) == 0
    assert run(out, "embed", "--fused") == 0
    capsys.readouterr()
    assert run(out, "faces", "faces.margin=0.5") == 2
    err = capsys.readouterr().err
    assert "faces: 3 done unit(s)" in err and "faces.margin: 0.2 -> 0.5" in err
    assert run(out, "embed", "--fused", "embed.dtype=float32") == 2
    assert "embed.dtype: 'float16' -> 'float32'" in capsys.readouterr().err
    assert run(out, "embed", "--fused", "embed.dtype=float32", "--recompute") == 0
    assert pa.types.is_float32(table(out, EMB).schema.field("embedding").type.value_type)


def test_tables_made_before_the_new_face_defaults_are_kept(micro, tmp_path, capsys):
    """A workspace whose faces were made per frame with the exact resampling (as every
    table before them): refused with the settings that keep it, which then do no work."""
    out = tmp_path / "old"
    legacy = ("faces.detect_mode=every", "faces.resample=exact")
    assert run(out, "ingest", manifest=micro["manifest"]) == 0
    assert run(out, "embed", "--fused", *legacy) == 0
    marker = next(iter(Workspace(str(out)).markers("faces").values()))
    assert not {"detect_mode", "resample", "keyframe_every"} & set(marker["config"]["faces"])
    before = table(out, "faces")
    capsys.readouterr()
    for command in (["faces"], ["embed", "--fused"]):
        assert run(out, *command) == 2
        err = capsys.readouterr().err
        assert "faces.detect_mode: '<absent>' -> 'keyframe'" in err, err
        assert "`faces.detect_mode=every faces.resample=exact` keeps using them" in err, err
    assert table(out, "faces").equals(before)
    assert run(out, "embed", *legacy) == 0 and run(out, "embed", "--fused", *legacy) == 0
    assert "0 shard(s) done" in capsys.readouterr().out
    assert run(out, "faces", "--recompute") == 0  # redone with the new defaults
    marker = next(iter(Workspace(str(out)).markers("faces").values()))
    assert marker["config"]["faces"]["detect_mode"] == "keyframe"
    assert marker["config"]["faces"]["resample"] == "fast"


def test_new_samples_alone_and_killed_worker_on_ray(micro, tmp_path, ray_cluster, monkeypatch,
                                                    capsys):
    out = tmp_path / "out"
    assert run(out, "ingest", manifest=micro["manifest"], executor="ray") == 0
    monkeypatch.setenv("AUTT_FAULT", "mid_shard:b0000-s0001:exit")  # kill the actor's process
    monkeypatch.setenv("AUTT_FAULT_ONCE", str(tmp_path / "fired"))
    assert run(out, "embed", "--fused", executor="ray") == 0  # Ray restarts it, retries
    assert (tmp_path / "fired").exists()
    monkeypatch.delenv("AUTT_FAULT")
    faces = table(out, "faces")
    assert faces.num_rows == micro["n_samples"] * 6 and len(set(keys(faces))) == faces.num_rows
    assert keys(table(out, EMB)) == keys(faces)
    capsys.readouterr()
    assert run(out, "ingest", manifest=micro["manifest_plus"], executor="ray") == 0
    assert run(out, "embed", "--fused", executor="ray") == 0
    printed = capsys.readouterr().out
    assert "faces+embed: 1 shard(s) done, 3 already done" in printed
    assert table(out, "faces").num_rows == micro["n_samples_plus"] * 6


@pytest.mark.parametrize("point", ["after_tmp", "before_done"])
def test_interrupted_fused_shard_resumes_exactly_once(micro, tmp_path, monkeypatch, point):
    out = tmp_path / "out"
    assert run(out, "ingest", manifest=micro["manifest"]) == 0
    monkeypatch.setenv("AUTT_FAULT", f"{point}:b0000-s0002")
    assert run(out, "embed", "--fused") == 1
    assert "b0000-s0002" not in Workspace(str(out)).markers("faces")
    monkeypatch.delenv("AUTT_FAULT")
    assert run(out, "embed", "--fused") == 0
    faces, emb = table(out, "faces"), table(out, EMB)
    assert len(set(keys(faces))) == faces.num_rows == micro["n_samples"] * 6
    assert keys(emb) == keys(faces)


def test_retry_failed_flows_through_every_stage(micro, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(str(__import__("pathlib").Path(micro["manifest"]).parent), data)
    folder = data / "faces" / "s01" / "s01_pain_1"
    folder.rename(data / "hidden")
    out = tmp_path / "out"
    args = ["--manifest", str(data / "manifest.csv"), "--classes", "neutral,pain",
            "ingest.shard_size=2"]
    assert run(out, "run", *args) == 0
    man = table(out, "manifest").to_pandas().set_index("sample_id")
    assert man.loc["s01_pain_1", "status"] == "missing"
    assert "s01_pain_1" not in set(table(out, "faces").column("sample_id").to_pylist())
    (data / "hidden").rename(folder)
    assert run(out, "run", *args) == 0  # failed rows stay failed without --retry-failed
    assert table(out, "manifest").to_pandas().set_index("sample_id").loc[
        "s01_pain_1", "status"] == "missing"
    assert run(out, "run", *args, "--retry-failed") == 0
    faces = table(out, "faces")
    assert faces.num_rows == micro["n_samples"] * 6
    assert keys(table(out, EMB)) == keys(faces)


def test_standalone_embed_follows_the_faces_table_not_the_flags(micro, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(out, "ingest", manifest=micro["manifest"]) == 0
    assert run(out, "faces", "faces.crop_size=112") == 0
    assert run(out, "embed", "faces.crop_size=300") == 0  # the faces table's 112 px crops
    marker = next(iter(Workspace(str(out)).markers(EMB).values()))
    assert marker["config"]["crop"]["crop_size"] == 112
    assert run(out, "faces", "faces.crop_size=96", "--recompute") == 0
    capsys.readouterr()
    assert run(out, "embed") == 2  # the faces it was made from changed
    err = capsys.readouterr().err
    assert "config changed (crop.crop_size: 112 -> 96)" in err
    assert run(out, "embed", "--recompute") == 0


def test_fused_groups_bound_frames_not_samples():
    from pipeline.embed.shard import frame_groups

    groups = frame_groups(np.array([400, 400, 400, 2000, 10, None], dtype=object), budget=1000)
    assert [g.tolist() for g in groups] == [[0, 1], [2], [3], [4, 5]]
    assert [g.tolist() for g in frame_groups(np.array([], dtype=object))] == [[]]


def test_unreadable_media_costs_only_its_own_sample_in_standalone_embed(micro, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(str(__import__("pathlib").Path(micro["manifest"]).parent), data)
    out = tmp_path / "out"
    assert run(out, "ingest", manifest=str(data / "manifest.csv")) == 0
    assert run(out, "faces") == 0
    folder = data / "faces" / "s01" / "s01_neutral_1"
    folder.rename(data / "away")  # the media went away after the faces ran
    assert run(out, "embed") == 0  # the shard finishes; the sample is an error row
    emb, faces = table(out, EMB), table(out, "faces")
    assert "s01_neutral_1" not in set(emb.column("sample_id").to_pylist())
    assert emb.num_rows == faces.num_rows - 6
    errors = Workspace(str(out)).read_side_table("errors", EMB, schemas.get("errors")).to_pylist()
    assert [(e["sample_id"], e["status"]) for e in errors] == [("s01_neutral_1", "embed_error")]
    assert "s01_neutral_1" in errors[0]["error"]
    (data / "away").rename(folder)
    assert run(out, "embed") == 0  # failed rows stay failed without --retry-failed
    assert table(out, EMB).num_rows == faces.num_rows - 6
    assert run(out, "embed", "--retry-failed") == 0
    assert keys(table(out, EMB)) == keys(faces)
    assert Workspace(str(out)).read_side_table("errors", EMB, schemas.get("errors")).num_rows == 0


def test_fused_retry_redoes_only_the_failed_sample(micro, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(str(__import__("pathlib").Path(micro["manifest"]).parent), data)
    frame = data / "faces" / "s02" / "s02_pain_1" / "frame_3.png"
    good = frame.read_bytes()
    frame.write_bytes(b"not a png")
    out = tmp_path / "out"
    assert run(out, "ingest", manifest=str(data / "manifest.csv")) == 0
    assert run(out, "embed", "--fused") == 0
    faces = table(out, "faces").to_pandas()
    bad = faces[faces["status"] != "ok"]
    assert list(zip(bad["sample_id"], bad["frame_index"], bad["status"])) == [
        ("s02_pain_1", 3, "bad_frame")]
    assert table(out, EMB).num_rows == len(faces) - 1
    frame.write_bytes(good)
    assert run(out, "embed", "--fused", "--retry-failed") == 0
    ws = Workspace(str(out))
    shard = faces.loc[faces["sample_id"] == "s02_pain_1", "shard_id"].iloc[0]
    for name in ("faces", EMB):
        marker = ws.markers(name)[shard]
        assert (marker["mode"], marker["processed"], marker["rows_in"]) == ("retry", 1, 2)
    faces = table(out, "faces")
    assert set(faces.column("status").to_pylist()) == {"ok"}
    assert keys(table(out, EMB)) == keys(faces)
