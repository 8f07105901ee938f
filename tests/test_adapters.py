"""Dataset adapters on tiny generated trees: one real 4-frame clip copied around, frame
folders of tiny JPEGs. Checks samples, labels, windows, chunks, media, unparsed rows."""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import av
import fsspec
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.ingest.adapters import ADAPTERS, COLUMNS, frame_number, scan

S1, S2, S3 = "071309_w_21", "081014_w_27", "101609_m_36"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(4):
            img = np.full((32, 32, 3), 60 * i, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    with av.open(str(path)) as check:
        assert sum(1 for _ in check.decode(video=0)) == 4
    return path


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 90)).save(buf, format="JPEG")
    return buf.getvalue()


def put(clip: Path, root: Path, *rels: str) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, root / rel)


def frames(jpeg: bytes, folder: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(jpeg)


def by_id(df: pd.DataFrame) -> dict[str, dict]:
    assert tuple(df.columns) == COLUMNS
    assert df["sample_id"].is_unique and list(df["sample_id"]) == sorted(df["sample_id"])
    return {r["sample_id"]: r for r in df.to_dict("records")}


def unparsed(df: pd.DataFrame) -> list[str]:
    bad = df[df["status"] == "unparsed"]
    assert bad["error"].map(lambda e: isinstance(e, str) and e != "").all()
    assert (df.loc[df["status"] == "ok", "error"].isna()).all()
    return sorted(bad["error"])


def has(errors: list[str], *parts: str) -> bool:
    return any(all(p in e for p in parts) for e in errors)


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


# ---- BAH -------------------------------------------------------------------------------

A, B = "82711_Question_3_2023-05-01_Video", "82687_Question_1_2023-06-02_Video"
SEGMENTS = f"""video,segment_id,label,num_frames,start_frame,end_frame
{A}.mp4,1,1,250,0,249
{A}.mp4,2,0,50,300,350
{B},1,0,100,10,109
99999_Question_1_2023-01-01_Video.mp4,4,1,10,0,9
{B}.mp4,2,2,10,0,9
{B}.mp4,3,0,70,0,9
"""


def test_bah_segments_to_chunks(tmp_path, clip):
    put(clip, tmp_path / "Videos", f"82711/Visite_1/{A}.mp4", f"82687/Visite_1/{B}.mp4",
        "82711/Visite_1/random.mp4", f"82687/{B}.mp4")
    (tmp_path / "segments.csv").write_text(SEGMENTS)
    rows = by_id(df := scan("bah", str(tmp_path)))
    ok = {sid: (r["start"], r["end"], r["label"]) for sid, r in rows.items() if r["status"] == "ok"}
    amb = "ambivalence"
    assert ok == {f"{A}-seg1-c000": (0, 99, amb), f"{A}-seg1-c001": (100, 199, amb),
                  f"{A}-seg1-c002": (200, 249, amb), f"{A}-seg2-c000": (300, 349, "neutral"),
                  f"{B}-seg1-c000": (10, 109, "neutral")}
    b1 = rows[f"{B}-seg1-c000"]
    assert (b1["subject_id"], b1["video_id"], b1["time_unit"], b1["media"]) == (
        "82687", B, "frame", "video")
    assert {rows[s]["time_unit"] for s in ok} == {"frame"}
    errors = unparsed(df)
    assert len(errors) == 5
    assert has(errors, "segment 4", "99999_Question_1_2023-01-01_Video", "does not exist")
    assert has(errors, "segments.csv line 6", "label 2")
    assert has(errors, "segments.csv line 7", "num_frames 70")
    assert has(errors, "82711/Visite_1/random.mp4", "does not match")
    assert has(errors, f"82687/{B}.mp4", "outside a visit folder")
    fewer = scan("bah", str(tmp_path / "Videos"), segments_path=str(tmp_path / "segments.csv"),
                 chunk_frames=60, min_chunk_frames=60, first_frame=0)
    # 60-frame chunks, a shorter remainder dropped (A seg2 has 50 frames: no chunk at all)
    assert sorted(fewer.loc[fewer["status"] == "ok", "end"]) == [59, 69, 119, 179, 239]
    shifted = scan("bah", str(tmp_path), first_frame=1, chunk_frames=300)
    one = by_id(shifted)[f"{B}-seg1-c000"]
    assert (one["start"], one["end"]) == (9.0, 108.0)  # 1-based CSV numbers -> indices
    assert f"{A}-seg1-c000" not in set(shifted["sample_id"])
    assert has(unparsed(shifted), "segments.csv line 2", "before frame 1")
    with pytest.raises(ValueError, match="bah.min_chunk_frames"):
        scan("bah", str(tmp_path), chunk_frames=10, min_chunk_frames=11)


def test_bah_faces(tmp_path, jpeg):
    numbers = [n for n in range(30) if not 12 <= n <= 15]  # no face found in 12..15
    frames(jpeg, tmp_path / "faces" / A, [f"{n:05d}.jpg" for n in numbers])
    frames(jpeg, tmp_path / "faces" / "leftovers", ["00001.jpg"])
    (tmp_path / "seg.csv").write_text(
        "video,segment_id,label,num_frames,start_frame,end_frame\n"
        f"{A},1,1,25,0,24\n{A},2,0,5,40,44\n{B},1,0,5,0,4\n")
    rows = by_id(df := scan("bah", str(tmp_path), faces_root="faces", chunk_frames=10))
    got = {s: (r["start"], r["end"]) for s, r in rows.items() if r["status"] == "ok"}
    assert got == {f"{A}-seg1-c000": (0, 9), f"{A}-seg1-c001": (10, 15), f"{A}-seg1-c002": (16, 20)}
    assert {rows[s]["media"] for s in got} == {"faces"}
    assert rows[f"{A}-seg1-c000"]["path"] == str(tmp_path / "faces" / A)
    errors = unparsed(df)
    assert has(errors, "segment 1", B, "does not exist") and has(errors, "leftovers/")
    empty = rows[f"{A}-seg2-c000"]  # no face in 40..44: that chunk's row, the others go on
    assert (empty["status"], empty["label"], empty["subject_id"]) == ("empty_window", "neutral",
                                                                      "82711")
    assert "seg.csv line 3" in empty["error"] and "no face frame numbered 40..44" in empty["error"]
    assert str(tmp_path / "faces" / A) in empty["error"]


# ---- pattern ---------------------------------------------------------------------------

def test_pattern_nested_and_flat(tmp_path, clip):
    put(clip, tmp_path / "n", "s1/neutral/a.mp4", "s1/pain/b.mp4", "s2/neutral/c.mp4",
        "s2/x.mp4", "s2/happy/d.mp4", "s2/neutral/deep/e.mp4")
    (tmp_path / "n" / "s1" / "neutral" / "readme.txt").write_text("ignored")
    df = scan("pattern", str(tmp_path / "n"), pattern="{subject}/{label}/{video}.mp4",
              classes=("neutral", "pain"))
    rows = by_id(df)
    assert {s: (r["subject_id"], r["label"]) for s, r in rows.items() if r["status"] == "ok"} == {
        "s1/neutral/a": ("s1", "neutral"), "s1/pain/b": ("s1", "pain"),
        "s2/neutral/c": ("s2", "neutral")}
    assert math.isnan(rows["s1/pain/b"]["start"]) and rows["s1/pain/b"]["time_unit"] == "s"
    errors = unparsed(df)
    assert len(errors) == 3 and has(errors, "s2/x.mp4", "does not match")
    assert has(errors, "s2/happy/d.mp4", "'happy'") and has(errors, "s2/neutral/deep/e.mp4")

    put(clip, tmp_path / "f", "s1_neutral_1.avi", "s1_neutral_1.mp4", "bad.avi",
        "s2_pain_x_2.avi")
    flat = scan("pattern", str(tmp_path / "f"), pattern="{subject}_{label}_{n}.avi")
    rows = by_id(flat)
    assert rows["s1_neutral_1"]["label"] == "neutral" and rows["s2_pain_x_2"]["label"] == "pain"
    assert rows["s2_pain_x_2"]["subject_id"] == "s2"
    assert has(unparsed(flat), "s1_neutral_1.mp4", "does not match") and has(
        unparsed(flat), "bad.avi")


def test_pattern_frames_and_validation(tmp_path, jpeg, clip):
    frames(jpeg, tmp_path / "p1" / "clipA", ["img_2.jpg", "img_10.jpg"])
    frames(jpeg, tmp_path / "p1" / "clipB", ["x.jpg"])
    (tmp_path / "p1" / "empty").mkdir()
    df = scan("pattern", str(tmp_path), pattern="{subject}/{clip}", media="faces")
    rows = by_id(df)
    assert rows["p1/clipA"]["status"] == "ok" and rows["p1/clipA"]["media"] == "faces"
    assert rows["p1/clipA"]["label"] is None and rows["p1/clipA"]["time_unit"] == "frame"
    assert has(unparsed(df), "p1/clipB/x.jpg") and has(unparsed(df), "p1/empty", "no frame")
    assert frame_number("img_10.jpg") == 10 and frame_number("x.jpg") is None

    put(clip, tmp_path / "r", "s1/s1_pos.mp4", "s1/s2_pos.mp4")
    same = scan("pattern", str(tmp_path / "r"), pattern="{subject}/{subject}_{label}.mp4")
    assert list(same["status"]) == ["ok", "unparsed"]
    for pattern, word in (("{label}/{video}.mp4", "subject"), ("{subject}{label}.mp4", "separated"),
                          ("{subject}/{lab el}.mp4", "identifier"), ("/{subject}.mp4", "relative"),
                          ("{subject}/x}.mp4", "brace")):
        with pytest.raises(ValueError, match=word):
            scan("pattern", str(tmp_path), pattern=pattern)
    with pytest.raises(ValueError, match="pattern.media"):
        scan("pattern", str(tmp_path), pattern="{subject}.mp4", media="audio")


# ---- per-sample problems are rows, never an aborted scan -------------------------------

def ms_frames(jpeg: bytes, folder: Path, last_ms: int) -> None:
    frames(jpeg, folder, [f"image{m}.jpg" for m in range(0, last_ms + 1, 40)])


def test_biovid_one_frame_window_is_legal_and_a_short_sample_is_a_row(tmp_path, jpeg):
    ms_frames(jpeg, tmp_path / S1 / f"{S1}-BL1-001", 5480)  # a whole 5.5 s sample
    ms_frames(jpeg, tmp_path / S1 / f"{S1}-PA4-002", 2040)  # ends on the window's first frame
    ms_frames(jpeg, tmp_path / S1 / f"{S1}-PA4-003", 2000)  # ends before the window
    ms_frames(jpeg, tmp_path / S2 / f"{S2}-BL1-001", 3000)  # shorter, but reaches into it
    rows = by_id(df := scan("biovid", str(tmp_path)))
    assert {s: (r["status"], r["start"], r["end"]) for s, r in rows.items()
            if r["status"] == "ok"} == {f"{S1}-BL1-001": ("ok", 51.0, 125.0),
                                        f"{S1}-PA4-002": ("ok", 51.0, 51.0),
                                        f"{S2}-BL1-001": ("ok", 51.0, 75.0)}
    short = rows[f"{S1}-PA4-003"]
    assert (short["status"], short["subject_id"], short["label"]) == ("empty_window", S1, "pain")
    assert short["error"] == (f"{S1}/{S1}-PA4-003: no frame between 2040 and 5000 ms (its 51 "
                              "frame(s) lie at 0..2000 ms)")
    # The manifest step once refused the one-frame window ('start 51.0 >= end 51.0') and
    # stopped the dataset; now every sample is a row and only the short one failed.
    from pipeline.ingest import manifest

    out, _ = manifest.normalise(df, classes=("neutral", "pain"), split=None)
    status = dict(zip(out["sample_id"], out["status"], strict=True))
    assert status == {f"{S1}-BL1-001": "ok", f"{S1}-PA4-002": "ok", f"{S1}-PA4-003": "empty_window",
                      f"{S2}-BL1-001": "ok"}
    one = out[out["sample_id"] == f"{S1}-PA4-002"].iloc[0]
    assert (one["start"], one["end"], one["error"]) == (51.0, 51.0, None)


def test_bah_one_face_chunk_is_legal(tmp_path, jpeg):
    frames(jpeg, tmp_path / "faces" / A, ["00003.jpg", "00020.jpg", "00021.jpg"])
    (tmp_path / "seg.csv").write_text("video,segment_id,label,num_frames,start_frame,end_frame\n"
                                      f"{A},1,1,30,0,29\n")
    rows = by_id(scan("bah", str(tmp_path), faces_root="faces", chunk_frames=10))
    assert {s: (r["status"], r["start"], r["end"]) for s, r in rows.items()
            if r["status"] == "ok"} == {
        f"{A}-seg1-c000": ("ok", 0.0, 0.0),  # one face frame: start == end, inclusive
        f"{A}-seg1-c002": ("ok", 1.0, 2.0)}
    assert rows[f"{A}-seg1-c001"]["status"] == "empty_window"  # 10..19: no face


@pytest.fixture
def unlistable(monkeypatch):
    """Folders whose name is in the returned set cannot be listed (PermissionError), as on a
    share with broken permissions (root ignores chmod, so the listing itself is patched)."""
    from pipeline.ingest.adapters import _common

    names: set[str] = set()
    real = _common.list_entries

    def listing(url: str):
        if Path(url).name in names:
            raise PermissionError(13, "Permission denied", url)
        return real(url)

    monkeypatch.setattr(_common, "list_entries", listing)
    return names


def test_unlistable_folders_are_rows_and_the_rest_goes_on(tmp_path, clip, jpeg, unlistable):
    ms_frames(jpeg, tmp_path / "bv" / S1 / f"{S1}-BL1-001", 5480)
    ms_frames(jpeg, tmp_path / "bv" / S1 / f"{S1}-PA4-001", 5480)
    put(clip, tmp_path / "bv", f"{S2}/{S2}-BL1-001.mp4", f"{S3}/{S3}-BL1-001.mp4")
    unlistable.update({f"{S1}-PA4-001", S2})
    rows = by_id(scan("biovid", str(tmp_path / "bv")))
    assert {s: r["status"] for s, r in rows.items()} == {
        f"{S1}-BL1-001": "ok", f"{S1}-PA4-001": "unreadable", f"unreadable:{S2}/": "unreadable",
        f"{S3}-BL1-001": "ok"}
    assert rows[f"{S1}-PA4-001"]["label"] == "pain"
    assert rows[f"{S1}-PA4-001"]["error"].startswith(
        f"{S1}/{S1}-PA4-001/: cannot list folder: PermissionError")
    assert rows[f"unreadable:{S2}/"]["error"].startswith(f"{S2}/: cannot list folder")

    frames(jpeg, tmp_path / "sid" / "2ea4" / "2ea4_Math", ["image_1.jpg"])
    frames(jpeg, tmp_path / "sid" / "2ea4" / "2ea4_Relax", ["image_1.jpg"])
    unlistable.add("2ea4_Relax")
    rows = by_id(scan("stressid", str(tmp_path / "sid"), unlabelled=True))
    assert {s: r["status"] for s, r in rows.items()} == {"2ea4_Math": "ok",
                                                          "2ea4_Relax": "unreadable"}

    put(clip, tmp_path / "pt", "s1/a/x.mp4", "s2/a/y.mp4")
    unlistable.add("s1")
    rows = by_id(scan("pattern", str(tmp_path / "pt"), pattern="{subject}/{label}/{v}.mp4"))
    assert {s: r["status"] for s, r in rows.items()} == {"s2/a/y": "ok",
                                                          "unreadable:s1/": "unreadable"}

    put(clip, tmp_path / "bah" / "Videos", f"82711/Visite_1/{A}.mp4", f"82687/Visite_1/{B}.mp4")
    (tmp_path / "bah" / "seg.csv").write_text(
        "video,segment_id,label,num_frames,start_frame,end_frame\n"
        f"{A},1,1,10,0,9\n{B},1,0,10,0,9\n")
    unlistable.add("82687")
    rows = by_id(scan("bah", str(tmp_path / "bah")))
    assert rows[f"{A}-seg1-c000"]["status"] == "ok"
    assert rows["unreadable:82687/"]["status"] == "unreadable"
    assert "does not exist" in rows[f"unparsed:{B}-seg1"]["error"]  # its video was not found
