"""Dataset adapters on tiny generated trees (tests/adapter_trees.py): BioVid and StressID
layouts. Checks samples, labels, windows, media, unparsed rows."""

from __future__ import annotations

import math
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from pipeline.ingest.adapters import ADAPTERS, scan
from tests.adapter_trees import S1, S2, S3, by_id, frames, has, put, unparsed

# ---- BioVid ----------------------------------------------------------------------------

def test_biovid_videos(tmp_path, clip):
    v = tmp_path / "biovid" / "video"
    put(clip, v, f"{S1}/{S1}-BL1-001.mp4", f"{S1}/{S1}-PA4-001.mp4", f"{S1}/{S1}-PA1-001.mp4",
        f"{S2}/{S2}-BL1-007.mp4", f"{S1}/foo.mp4", f"{S1}/{S2}-BL1-002.mp4",
        f"{S1}/{S1}-PA9-001.mp4", "stray.mp4", "not_a_subject/x.mp4")
    (v / S1 / "notes.txt").write_text("not a sample")
    df = scan("biovid", str(tmp_path / "biovid"))
    pd.testing.assert_frame_equal(df, scan("biovid", str(v)))  # dataset folder or video/
    rows = by_id(df)
    ok = df[df["status"] == "ok"]
    assert sorted(ok["sample_id"]) == [f"{S1}-BL1-001", f"{S1}-PA4-001", f"{S2}-BL1-007"]
    assert rows[f"{S1}-BL1-001"]["label"] == "neutral" and rows[f"{S1}-PA4-001"]["label"] == "pain"
    assert set(ok["subject_id"]) == {S1, S2} and set(ok["media"]) == {"video"}
    assert (ok["start"] == 2.04).all() and (ok["end"] == 5.0).all()
    assert set(ok["time_unit"]) == {"s"}
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in ok["path"])
    errors = unparsed(df)
    assert len(errors) == 5  # PA1 is deselected, not an error; notes.txt is not a video
    assert has(errors, f"{S1}/foo.mp4", "does not match")
    assert has(errors, f"{S1}/{S1}-PA9-001.mp4")
    assert has(errors, f"{S2}-BL1-002.mp4", f"folder {S1}")
    assert has(errors, "stray.mp4", "outside") and has(errors, "not_a_subject/")
    assert df.loc[df["status"] == "unparsed", "label"].isna().all()


def test_biovid_frames_window_as_positions(tmp_path, jpeg):
    ms = [0, 40, 960, *range(2000, 5041, 40)]  # numeric order differs from name order
    frames(jpeg, tmp_path / S1 / f"{S1}-PA4-003", [f"image{m}.jpg" for m in ms])
    frames(jpeg, tmp_path / S1 / f"{S1}-BL1-004", ["frame_01.jpg", "image40.jpg"])
    frames(jpeg, tmp_path / S1 / f"{S1}-BL1-005", ["image0.jpg", "image40.jpg"])
    rows = by_id(df := scan("biovid", str(tmp_path)))
    r = rows[f"{S1}-PA4-003"]
    assert (r["media"], r["time_unit"], r["status"]) == ("frames", "frame", "ok")
    assert r["label"] == "pain"
    assert (r["start"], r["end"]) == (4.0, 78.0)  # 2040 ms .. 5000 ms inclusive: 75 frames
    assert Path(r["path"]) == tmp_path / S1 / f"{S1}-PA4-003"
    assert unparsed(df) == [f"{S1}/{S1}-BL1-004/frame_01.jpg: frame file name does not match "
                            r"image(\d+)\.(?:jpe?g|png)"]
    short = rows[f"{S1}-BL1-005"]  # frames at 0 and 40 ms only: the sample's row, not an abort
    assert (short["status"], short["label"], short["media"]) == ("empty_window", "neutral", "frames")
    assert f"{S1}-BL1-005: no frame between 2040 and 5000 ms" in short["error"]
    faces = by_id(scan("biovid", str(tmp_path), window=(0.0, 1.0), folder_media="faces"))
    assert (faces[f"{S1}-PA4-003"]["start"], faces[f"{S1}-PA4-003"]["end"]) == (0.0, 2.0)
    assert faces[f"{S1}-BL1-005"]["media"] == "faces" and faces[f"{S1}-BL1-005"]["end"] == 1.0


def test_biovid_options_and_registry(tmp_path, clip):
    put(clip, tmp_path, f"{S1}/{S1}-PA1-001.mp4", f"{S1}/{S1}-PA4-001.mp4")
    df = scan("biovid", str(tmp_path), classes=["PA1", "PA4"], names=["low", "high"])
    assert dict(zip(df["sample_id"], df["label"], strict=True)) == {
        f"{S1}-PA1-001": "low", f"{S1}-PA4-001": "high"}
    for bad, word in ((dict(classes=("BL1", "PA7")), "biovid.classes"),
                      (dict(classes=("BL1", "BL1")), "biovid.classes"),
                      (dict(names=("a",)), "biovid.names"),
                      (dict(window=(5.0, 2.0)), "biovid.window"),
                      (dict(window=("a", 2.0)), "biovid.window")):
        with pytest.raises(ValueError, match=word):
            scan("biovid", str(tmp_path), **bad)
    with pytest.raises(TypeError, match="windw"):
        scan("biovid", str(tmp_path), windw=(1, 2))
    with pytest.raises(ValueError, match="affectnet.*bah, biovid, pattern, stressid"):
        scan("affectnet", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        scan("biovid", str(tmp_path / "nowhere"))
    assert set(ADAPTERS) == {"bah", "biovid", "pattern", "stressid"}


def test_rescan_after_adding_a_subject_adds_only_its_samples(tmp_path, clip):
    put(clip, tmp_path, f"{S1}/{S1}-BL1-001.mp4", f"{S2}/{S2}-PA4-002.mp4", f"{S2}/bad.mp4")
    before = scan("biovid", str(tmp_path))
    put(clip, tmp_path, f"{S3}/{S3}-BL1-001.mp4", f"{S3}/{S3}-PA4-001.mp4")
    after = scan("biovid", str(tmp_path))
    old = after[after["sample_id"].isin(before["sample_id"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, before)
    new = after[~after["sample_id"].isin(before["sample_id"])]
    assert sorted(new["sample_id"]) == [f"{S3}-BL1-001", f"{S3}-PA4-001"]
    assert set(new["subject_id"]) == {S3}


def test_biovid_on_an_fsspec_url():
    fs = fsspec.filesystem("memory")
    for name in (f"{S1}-BL1-001.mp4", f"{S1}-PA4-001.mp4", "oops.mp4"):
        fs.pipe(f"/bv/video/{S1}/{name}", b"not decoded by the adapter")
    try:
        df = scan("biovid", "memory://bv")
    finally:
        fs.rm("/bv", recursive=True)
    assert list(df["status"]) == ["ok", "ok", "unparsed"]
    assert df["path"].str.startswith("memory://").all()


# ---- StressID --------------------------------------------------------------------------

WIDE = """Tasks;2ea4;kycf
Math_relax;3;4
Math_stress;7;5
Math_valence;5;5
Relax_stress;2;
Breathing_stress;x;4,5
"""


def stressid_tree(root: Path, clip: Path, jpeg: bytes) -> None:
    put(clip, root / "Videos", "2ea4/2ea4_Math.mp4", "2ea4/2ea4_Relax.mp4",
        "2ea4/2ea4_Breathing.mov", "2ea4/2ea4_Dancing.mp4", "kycf/kycf_Math.avi",
        "kycf/kycf_Relax.mp4", "zz99/zz99_Math.mp4")
    frames(jpeg, root / "Videos" / "kycf" / "kycf_Breathing", ["image_5.jpg", "image_105.jpg"])
    (root / "Videos" / "kycf" / "kycf_Stroop").mkdir()


def test_stressid_wide_self_assessments(tmp_path, clip, jpeg):
    stressid_tree(tmp_path, clip, jpeg)
    (tmp_path / "self_assessments.csv").write_text(WIDE)
    df = scan("stressid", str(tmp_path))
    labels = {sid: r["label"] for sid, r in by_id(df).items() if r["status"] == "ok"}
    assert labels == {"2ea4_Math": "stress", "2ea4_Relax": "neutral", "kycf_Math": "stress",
                      "kycf_Relax": None, "kycf_Breathing": "neutral", "zz99_Math": None}
    rows = by_id(df)
    assert rows["kycf_Breathing"]["media"] == "frames" and math.isnan(rows["kycf_Breathing"]["end"])
    assert rows["kycf_Math"]["subject_id"] == "kycf" and rows["kycf_Math"]["media"] == "video"
    errors = unparsed(df)
    assert len(errors) == 3
    assert has(errors, "2ea4/2ea4_Dancing.mp4", "unknown task 'Dancing'")
    assert has(errors, "self_assessments.csv", "'x'", "2ea4", "Breathing")
    assert has(errors, "kycf/kycf_Stroop", "no frame images")
    strict = by_id(scan("stressid", str(tmp_path / "Videos"), threshold=6,
                        labels_path=str(tmp_path / "self_assessments.csv")))
    assert strict["kycf_Math"]["label"] == "neutral" and strict["2ea4_Math"]["label"] == "stress"


def test_stressid_long_table_and_unlabelled(tmp_path, clip, jpeg):
    stressid_tree(tmp_path, clip, jpeg)
    (tmp_path / "labels.csv").write_text(
        "subject/task,binary-stress,affect3-class\n2ea4_Math,1,2\n2ea4_Relax,0,0\n"
        "2ea4_Breathing,2,1\nkycf_Math,,1\nkycf_Relax,0,0\n")
    rows = by_id(df := scan("stressid", str(tmp_path)))
    assert rows["2ea4_Math"]["label"] == "stress" and rows["2ea4_Relax"]["label"] == "neutral"
    assert rows["kycf_Math"]["label"] is None and rows["kycf_Math"]["status"] == "ok"
    assert has(unparsed(df), "labels.csv", "'2'", "2ea4", "Breathing", "0 or 1")
    other = by_id(scan("stressid", str(tmp_path), label_column="affect3-class"))
    assert "2ea4_Math" not in other and "unparsed:2ea4/2ea4_Math.mp4" in other
    assert other["kycf_Math"]["label"] == "stress"
    with pytest.raises(ValueError, match="stressid.label_column 'nope'"):
        scan("stressid", str(tmp_path), label_column="nope")
    (tmp_path / "labels.csv").unlink()
    with pytest.raises(FileNotFoundError, match="self_assessments.csv"):
        scan("stressid", str(tmp_path))
    none = scan("stressid", str(tmp_path), unlabelled=True)
    assert none["label"].isna().all() and (none["status"] == "ok").sum() == 7


def test_stressid_duplicate_and_bad_names(tmp_path, clip):
    put(clip, tmp_path, "2ea4/2ea4_Math.mp4", "2ea4/2ea4_Math.avi", "2ea4/kycf_Relax.mp4",
        "2ea4/Math.mp4", "Subject01/x.mp4")
    df = scan("stressid", str(tmp_path), unlabelled=True)
    assert (df["status"] == "unparsed").all()
    errors = unparsed(df)
    assert sum("duplicate sample_id '2ea4_Math'" in e for e in errors) == 2
    assert has(errors, "2ea4/kycf_Relax.mp4", "folder 2ea4")
    assert has(errors, "2ea4/Math.mp4", "does not match") and has(errors, "Subject01/")
