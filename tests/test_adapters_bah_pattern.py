"""Dataset adapters on tiny generated trees (tests/adapter_trees.py): BAH segments and
faces, the generic pattern adapter, and per-sample problems as rows (never an aborted
scan)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline.ingest.adapters import frame_number, scan
from tests.adapter_trees import S1, S2, S3, by_id, frames, has, ms_frames, put, unparsed

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
