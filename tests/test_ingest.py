"""Manifest ingest: manifest-level faults abort, per-sample faults become rows, reruns are
idempotent, changed configs refuse, interrupted work resumes, new samples run alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

import schemas
from jobs.cli import main as cli
from pipeline import parquet
from pipeline.workspace import Workspace
from tests.media import write_frames


@pytest.fixture
def dataset(tmp_path: Path, tiny_video: Path) -> Path:
    """Four subjects, two clips each (videos and a frame folder), plus a split file."""
    root = tmp_path / "data"
    rows = []
    for s in range(4):
        for c, label in enumerate(["neutral", "pain"]):
            vid = f"s{s}_{label}"
            if s == 3 and c == 1:
                write_frames(root / vid, n=3)
                rows.append(dict(video_id=vid, subject_id=f"s{s}", label=label, path=vid))
            else:
                (root).mkdir(parents=True, exist_ok=True)
                shutil.copy(tiny_video, root / f"{vid}.mp4")
                rows.append(dict(video_id=vid, subject_id=f"s{s}", label=label, path=f"{vid}.mp4"))
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    pd.DataFrame({"subject_id": ["s0", "s1", "s2", "s3"],
                  "role": ["source", "source", "target", "target"]}).to_csv(root / "split.csv",
                                                                          index=False)
    return root


def ingest(root: Path, out: Path, *extra: str, manifest: str = "manifest.csv") -> int:
    return cli(["ingest", "--manifest", str(root / manifest), "--split", str(root / "split.csv"),
                "--classes", "neutral,pain", "--out", str(out), "--executor", "local",
                "--quiet", "ingest.shard_size=3", *extra])


def manifest_rows(out: Path) -> pd.DataFrame:
    return Workspace(str(out)).read_table("manifest", schemas.get("manifest")).to_pandas()


def test_ingest_writes_conforming_manifest_with_roles_and_labels(dataset, tmp_path):
    out = tmp_path / "out"
    assert ingest(dataset, out) == 0
    df = manifest_rows(out)
    assert len(df) == 8 and set(df["status"]) == {"ok"}
    assert df["shard_id"].nunique() == 3  # 8 samples, 3 per shard
    assert dict(zip(df["subject_id"], df["role"]))["s2"] == "target"
    pain = df[df["label"] == "pain"]
    assert set(pain["label_index"]) == {1}
    frames = df[df["video_id"] == "s3_pain"].iloc[0]
    assert frames["media"] == "frames" and frames["num_frames"] == 3
    video = df[df["video_id"] == "s0_neutral"].iloc[0]
    assert video["media"] == "video" and video["num_frames"] == 8 and video["width"] == 64
    ws = Workspace(str(out))
    for table in ("manifest",):
        for shard in ws.markers(table):
            t = parquet.read(ws.part_url(table, shard))
            schemas.check(t, schemas.get(table))
            meta = parquet.metadata(ws.part_url(table, shard))
            for key in ("autt.schema_version", "autt.run_id", "autt.config_hash",
                        "autt.code_version"):
                assert meta[key]
            schemas.check(parquet.read(ws.stats_url(table, shard)), schemas.get("stats"))
            schemas.check(parquet.read(ws.errors_url(table, shard)), schemas.get("errors"))
    assert list(out.joinpath("runs").iterdir())[0].joinpath("config.yaml").exists()
    # The batch plans are Parquet files too: the same run metadata as the shards' parts.
    part = parquet.metadata(ws.part_url("manifest", "b0000-s0000"))
    plans = sorted((out / "manifest" / "_plan").glob("*.parquet"))
    assert [p.name for p in plans] == ["b0000.parquet"]
    plan = parquet.metadata(str(plans[0]))
    for key in ("autt.schema_version", "autt.run_id", "autt.config_hash", "autt.code_version"):
        assert plan[key] == part[key], key
    assert (plan["autt.batch"], plan["autt.classes"]) == ("b0000", "neutral,pain")
    schemas.check(parquet.read(str(plans[0])), schemas.get("manifest"))


@pytest.mark.parametrize("mutate, message", [
    (lambda df, root: df.drop(columns=["subject_id"]), "lacks required column(s) ['subject_id']"),
    (lambda df, root: df.assign(camera="a"), "unknown column(s) ['camera']"),
    (lambda df, root: df.assign(sample_id=["x"] * len(df)), "duplicate sample_id ['x']"),
    (lambda df, root: df.assign(label=["happy"] + list(df["label"][1:])),
     "label(s) ['happy'] are not in the class list"),
    (lambda df, root: df.assign(split=["source"] + ["target"] * (len(df) - 1)),
     "are in both roles"),
    (lambda df, root: df.assign(split="training"), "unknown role(s) ['training']"),
])
def test_manifest_level_faults_abort_before_any_work(dataset, tmp_path, capsys, mutate, message):
    df = pd.read_csv(dataset / "manifest.csv")
    mutate(df, dataset).to_csv(dataset / "bad.csv", index=False)
    pd.DataFrame({"subject_id": [], "role": []}).to_csv(dataset / "split.csv", index=False)
    out = tmp_path / "out"
    assert ingest(dataset, out, manifest="bad.csv") == 2
    assert message in capsys.readouterr().err
    assert not (out / "manifest").exists()


def test_unreadable_manifest_and_conflicting_split_file_abort(dataset, tmp_path, capsys):
    (dataset / "broken.parquet").write_bytes(b"not parquet at all")
    assert ingest(dataset, tmp_path / "o1", manifest="broken.parquet") == 2
    assert "cannot read manifest" in capsys.readouterr().err
    assert ingest(dataset, tmp_path / "o2", manifest="nope.csv") == 2
    assert "nope.csv' does not exist" in capsys.readouterr().err
    pd.DataFrame({"subject_id": ["s0", "s0"], "role": ["source", "target"]}).to_csv(
        dataset / "split.csv", index=False)
    assert ingest(dataset, tmp_path / "o3") == 2
    assert "subject 's0' is in both roles" in capsys.readouterr().err


def test_per_sample_faults_become_rows_and_the_rest_goes_on(dataset, tmp_path, capsys):
    (dataset / "s0_neutral.mp4").unlink()  # missing
    (dataset / "s1_neutral.mp4").write_bytes(b"")  # zero-byte
    (dataset / "s1_pain.mp4").write_bytes(b"\x00garbage" * 64)  # unreadable header
    man = pd.read_csv(dataset / "manifest.csv")
    man.loc[man["video_id"] == "s2_pain", "path"] = ""  # an empty cell, not the path "nan"
    man.to_csv(dataset / "manifest.csv", index=False)
    out = tmp_path / "out"
    assert ingest(dataset, out) == 0
    df = manifest_rows(out).set_index("video_id")
    assert len(df) == 8
    assert df.loc["s0_neutral", "status"] == "missing" and "does not exist" in df.loc[
        "s0_neutral", "error"]
    assert df.loc["s1_neutral", "status"] == "empty_file"
    assert df.loc["s1_pain", "status"] == "unreadable" and "s1_pain.mp4" in df.loc[
        "s1_pain", "error"]
    assert df.loc["s2_pain", "status"] == "missing" and df.loc["s2_pain", "error"] == "path is empty"
    assert (df.drop(index=["s0_neutral", "s1_neutral", "s1_pain", "s2_pain"])["status"] == "ok").all()
    errors = Workspace(str(out)).read_side_table("errors", "manifest", schemas.get("errors"))
    assert sorted(errors.column("status").to_pylist()) == ["empty_file", "missing", "missing",
                                                           "unreadable"]
    # --strict turns the same faults into an abort that names the sample: a fault found in
    # the manifest itself before any work, a fault found by probing at that sample's shard
    capsys.readouterr()
    assert ingest(dataset, tmp_path / "strict", "--strict") == 2
    assert "--strict: sample 's2_pain' is missing: path is empty" in capsys.readouterr().err
    assert not (tmp_path / "strict" / "manifest").exists()
    man.loc[man["video_id"] == "s2_pain", "path"] = "s2_pain.mp4"
    man.to_csv(dataset / "manifest.csv", index=False)
    assert ingest(dataset, tmp_path / "strict", "--strict") == 2
    err = capsys.readouterr().err
    assert "aborted (--strict): SampleFault: --strict: sample 's0_neutral' is missing" in err
    assert Workspace(str(tmp_path / "strict")).markers("manifest") == {}  # its shard was first


def test_bad_windows_and_cells_are_rows_and_one_frame_windows_are_legal(dataset, tmp_path,
                                                                        capsys):
    folder = "s3_pain"  # 3 frames: positions 0..2
    spans = {  # sample_id: (start, end, time_unit, media), then the expected status
        "one": ("2", "2", "frame", "", "ok"),  # the last frame alone: start == end
        "one_s": ("0.5", "0.5", "s", "", "ok"),  # inclusive in seconds too
        "past": ("1", "10", "frame", "", "ok"),  # runs past the end: keeps frames 1..2
        "after": ("5", "9", "frame", "", "empty_window"),  # starts after the last frame
        "reversed": ("2", "1", "frame", "", "bad_row"),
        "nan": ("abc", "2", "frame", "", "bad_row"),
        "unit": ("0", "1", "minutes", "", "bad_row"),
        "media": ("", "", "frame", "audio", "bad_row"),
    }
    man = pd.DataFrame([dict(sample_id=sid, video_id=folder, subject_id="s3", label="pain",
                             path=folder, start=a, end=b, time_unit=u, media=m)
                        for sid, (a, b, u, m, _) in spans.items()])
    man.loc[len(man)] = dict(sample_id="nobody", video_id=folder, subject_id="", label="pain",
                             path=folder, start="", end="", time_unit="", media="")
    spans["nobody"] = ("bad_row",)
    man.to_csv(dataset / "spans.csv", index=False)
    out = tmp_path / "out"
    assert ingest(dataset, out, manifest="spans.csv") == 0
    df = manifest_rows(out).set_index("sample_id")
    assert dict(df["status"]) == {sid: v[-1] for sid, v in spans.items()}
    assert (df.loc["one", "start"], df.loc["one", "end"], df.loc["one", "num_frames"]) == (2, 2, 3)
    where = str(dataset / folder)
    assert df.loc["after", "error"] == (f"{where}: frame window 5..9 starts after the last frame "
                                        "(the sample has 3 frame(s), positions 0..2)")
    assert df.loc["reversed", "error"] == f"{where}: start 2 is after end 1 frame"
    assert df.loc["nan", "error"] == f"{where}: start 'abc' is not a number"
    assert df.loc["unit", "error"] == f"{where}: time_unit must be 's' or 'frame', got 'minutes'"
    assert df.loc["nobody", "error"] == f"{where}: subject_id is empty"
    assert "media must be one of ['video', 'frames', 'faces'], got 'audio'" in df.loc["media",
                                                                                   "error"]
    errors = Workspace(str(out)).read_side_table("errors", "manifest", schemas.get("errors"))
    assert sorted(errors.column("sample_id").to_pylist()) == ["after", "media", "nan", "nobody",
                                                              "reversed", "unit"]
    capsys.readouterr()  # --strict: a bad cell aborts before any work, naming the sample
    assert ingest(dataset, tmp_path / "strict", "--strict", manifest="spans.csv") == 2
    assert "--strict: sample 'media' is bad_row" in capsys.readouterr().err
    assert not (tmp_path / "strict" / "manifest").exists()
    man[man["sample_id"].isin(["one", "after"])].to_csv(dataset / "spans.csv", index=False)
    assert ingest(dataset, tmp_path / "strict", "--strict", manifest="spans.csv") == 2
    assert "--strict: sample 'after' is empty_window: " in capsys.readouterr().err


def test_rerun_does_no_work_and_changed_config_refuses(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert ingest(dataset, out) == 0
    ws = Workspace(str(out))
    before = {s: m["run_id"] for s, m in ws.markers("manifest").items()}
    capsys.readouterr()
    assert ingest(dataset, out) == 0
    assert "ingest: 0 shard(s) done, 3 already done" in capsys.readouterr().out
    assert {s: m["run_id"] for s, m in ws.markers("manifest").items()} == before
    assert ingest(dataset, out, "ingest.probe=false") == 2
    err = capsys.readouterr().err
    assert "config changed (probe: True -> False)" in err and "--recompute" in err
    assert ingest(dataset, out, "ingest.probe=false", "--recompute") == 0
    assert all(m["run_id"] not in before.values() for m in ws.markers("manifest").values())


def test_changed_sample_refuses_naming_it(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert ingest(dataset, out) == 0
    df = pd.read_csv(dataset / "manifest.csv")
    df.loc[df["video_id"] == "s0_pain", "label"] = "neutral"
    df.to_csv(dataset / "manifest.csv", index=False)
    assert ingest(dataset, out) == 2
    assert "s0_pain: label 'pain' -> 'neutral'" in capsys.readouterr().err
    assert ingest(dataset, out, "--recompute") == 0
    assert manifest_rows(out).set_index("video_id").loc["s0_pain", "label"] == "neutral"


def test_new_videos_are_processed_alone(dataset, tmp_path, tiny_video, capsys):
    out = tmp_path / "out"
    assert ingest(dataset, out) == 0
    df = pd.read_csv(dataset / "manifest.csv")
    for i in range(2):
        shutil.copy(tiny_video, dataset / f"new{i}.mp4")
    extra = pd.DataFrame([dict(video_id=f"new{i}", subject_id="s0", label="pain",
                               path=f"new{i}.mp4") for i in range(2)])
    pd.concat([df, extra]).to_csv(dataset / "manifest.csv", index=False)
    capsys.readouterr()
    assert ingest(dataset, out) == 0
    assert "ingest: 1 shard(s) done, 3 already done" in capsys.readouterr().out
    rows = manifest_rows(out)
    assert len(rows) == 10 and rows["sample_id"].is_unique
    assert set(rows.loc[rows["batch"] == 1, "video_id"]) == {"new0", "new1"}


def test_retry_failed_reprocesses_only_failed_samples(dataset, tmp_path, tiny_video):
    out = tmp_path / "out"
    moved = dataset / "s0_neutral.mp4"
    moved.rename(dataset / "later.mp4")
    assert ingest(dataset, out) == 0
    assert manifest_rows(out).set_index("video_id").loc["s0_neutral", "status"] == "missing"
    (dataset / "later.mp4").rename(moved)
    assert ingest(dataset, out) == 0  # failed rows stay failed without --retry-failed
    assert manifest_rows(out).set_index("video_id").loc["s0_neutral", "status"] == "missing"
    ws = Workspace(str(out))
    before = {s: m["run_id"] for s, m in ws.markers("manifest").items()}
    assert ingest(dataset, out, "--retry-failed") == 0
    rows = manifest_rows(out)
    assert len(rows) == 8 and set(rows["status"]) == {"ok"}
    after = ws.markers("manifest")
    retried = [s for s in after if after[s]["run_id"] != before[s]]
    assert len(retried) == 1 and after[retried[0]]["processed"] == 1


@pytest.mark.parametrize("point", ["after_tmp", "before_done", "mid_shard"])
def test_interrupted_ingest_resumes_without_duplicates(dataset, tmp_path, monkeypatch, point):
    out = tmp_path / "out"
    monkeypatch.setenv("AUTT_FAULT", f"{point}:b0000-s0001")
    assert ingest(dataset, out) == 1  # that shard failed, the others finished
    ws = Workspace(str(out))
    assert sorted(ws.markers("manifest")) == ["b0000-s0000", "b0000-s0002"]
    monkeypatch.delenv("AUTT_FAULT")
    assert ingest(dataset, out) == 0
    rows = manifest_rows(out)
    assert len(rows) == 8 and rows["sample_id"].is_unique
    # One data file per shard is left: the one its marker names (the interrupted
    # attempt's file, if it got that far, was removed when the shard was redone).
    parts = sorted(p.name for p in (out / "manifest").glob("part-*.parquet"))
    named = sorted(Path(ws.part_url("manifest", s)).name for s in ws.markers("manifest"))
    assert parts == named and len(parts) == 3
    if point == "after_tmp":  # the interrupted write left a temporary; readers never see it
        assert list((out / "manifest").glob("_tmp-*"))


def test_dataset_adapter_ingest_adds_only_a_new_subject(tmp_path, tiny_video, capsys):
    root = tmp_path / "biovid" / "video"
    for subject in ("071309_w_21", "080314_w_25"):
        for cls, n in (("BL1", 1), ("PA4", 2), ("PA2", 3)):
            (root / subject).mkdir(parents=True, exist_ok=True)
            shutil.copy(tiny_video, root / subject / f"{subject}-{cls}-{n:03d}.mp4")
    shutil.copy(tiny_video, root / "071309_w_21" / "holiday.mp4")  # does not parse
    out = tmp_path / "out"
    args = ["ingest", "--config", "biovid", "--root", str(tmp_path / "biovid"), "--out", str(out),
            "--executor", "local", "--quiet", "protocol.target_subjects=[080314_w_25]"]
    assert cli(args) == 0
    df = manifest_rows(out)
    ok = df[df["status"] == "ok"]
    assert sorted(ok["sample_id"]) == ["071309_w_21-BL1-001", "071309_w_21-PA4-002",
                                       "080314_w_25-BL1-001", "080314_w_25-PA4-002"]
    assert set(ok["label"]) == {"neutral", "pain"} and set(ok["start"]) == {2.04}
    assert dict(zip(ok["subject_id"], ok["role"])) == {"071309_w_21": "source",
                                                       "080314_w_25": "target"}
    bad = df[df["status"] == "unparsed"]
    assert len(bad) == 1 and "holiday.mp4" in bad.iloc[0]["error"]
    new = root / "100909_w_65"
    new.mkdir()
    shutil.copy(tiny_video, new / "100909_w_65-PA4-004.mp4")
    capsys.readouterr()
    assert cli(args) == 0
    assert "ingest: 1 shard(s) done" in capsys.readouterr().out
    df = manifest_rows(out)
    assert set(df.loc[df["batch"] == 1, "sample_id"]) == {"100909_w_65-PA4-004"}


def test_biovid_frame_folders_short_samples_are_rows_and_strict_names_them(tmp_path, capsys):
    root = tmp_path / "biovid"
    png = (write_frames(tmp_path / "one", n=1, size=8) / "frame_0.png").read_bytes()
    for name, last_ms in (("071309_w_21-BL1-001", 5480), ("071309_w_21-PA4-002", 2040),
                          ("071309_w_21-PA4-003", 1000)):
        (root / "071309_w_21" / name).mkdir(parents=True)
        for ms in range(0, last_ms + 1, 40):  # BioVid names frames by milliseconds
            (root / "071309_w_21" / name / f"image{ms}.png").write_bytes(png)
    out = tmp_path / "out"
    args = ["ingest", "--config", "biovid", "--root", str(root), "--executor", "local",
            "--quiet", "ingest.probe=false"]
    assert cli([*args, "--out", str(out)]) == 0
    df = manifest_rows(out).set_index("sample_id")
    assert dict(df["status"]) == {"071309_w_21-BL1-001": "ok", "071309_w_21-PA4-002": "ok",
                                  "071309_w_21-PA4-003": "empty_window"}
    assert (df.loc["071309_w_21-PA4-002", "start"], df.loc["071309_w_21-PA4-002", "end"]) == (51, 51)
    capsys.readouterr()
    assert cli([*args, "--out", str(tmp_path / "strict"), "--strict"]) == 2
    assert ("--strict: sample '071309_w_21-PA4-003' is empty_window: 071309_w_21/071309_w_21-PA4-003: "
            "no frame between 2040 and 5000 ms") in capsys.readouterr().err


def test_changed_class_order_refuses_before_writing_and_recompute_reindexes(dataset, tmp_path,
                                                                           capsys):
    out = tmp_path / "out"
    assert ingest(dataset, out) == 0
    args = ["ingest", "--manifest", str(dataset / "manifest.csv"), "--split",
            str(dataset / "split.csv"), "--out", str(out), "--executor", "local", "--quiet",
            "ingest.shard_size=3", "--classes", "pain,neutral"]
    assert cli(args) == 2
    assert "classes: ['neutral', 'pain'] -> ['pain', 'neutral']" in capsys.readouterr().err
    assert (out / "manifest" / "_classes.json").read_text() == '["neutral", "pain"]'
    assert cli([*args, "--recompute"]) == 0
    df = manifest_rows(out)
    assert set(df.loc[df["label"] == "pain", "label_index"]) == {0}
    assert (out / "manifest" / "_classes.json").read_text() == '["pain", "neutral"]'
