"""The face stage end to end on real clips and built ones: statuses, timestamps, failures
as rows, one track per sample, and crops that ``recrop`` reproduces."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pipeline  # noqa: F401  (torchvision fix before facenet-pytorch)
from pipeline.faces.config import FacesConfig
from pipeline.faces.decode import VideoSource
from pipeline.faces.stage import OUTPUT_COLUMNS, FaceStage, recrop
from pipeline.faces.table import PngCrops, faces_table
from schemas.tables import FACES
from tests.media import needs_shared_faces, shared_faces_dir

SHARED = shared_faces_dir()
needs_shared = needs_shared_faces()
COLUMNS = ["sample_id", "video_id", "subject_id", "path", "media", "start", "end",
           "time_unit", "shard_id"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # other people's jobs share these 2 cores; two torch threads then run slower than one
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def manifest(*rows: dict) -> dict[str, np.ndarray]:
    base = {"video_id": None, "subject_id": "s1", "media": "video", "start": None,
            "end": None, "time_unit": "s", "shard_id": "shard-0"}
    full = [{**base, **r} for r in rows]
    return {c: np.array([r.get(c) for r in full], dtype=object) for c in COLUMNS}


def rows_of(out: dict[str, np.ndarray], sample_id: str) -> dict[str, np.ndarray]:
    m = out["sample_id"] == sample_id
    return {k: v[m] for k, v in out.items()}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """One batch over real clips plus a truncated and a zero-byte file."""
    if not SHARED.is_dir():
        pytest.skip("shared test media absent")
    tmp = tmp_path_factory.mktemp("clips")
    data = (SHARED / "single_face.mp4").read_bytes()
    (tmp / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp / "empty.mp4").write_bytes(b"")
    batch = manifest(
        {"sample_id": "single", "path": str(SHARED / "single_face.mp4")},
        {"sample_id": "truncated", "path": str(tmp / "truncated.mp4")},
        {"sample_id": "switch", "path": str(SHARED / "face_noface.mov"), "start": 2.1,
         "end": 2.7},
        {"sample_id": "empty", "path": str(tmp / "empty.mp4")},
        {"sample_id": "noface", "path": str(SHARED / "no_face.mp4"), "start": 0.0,
         "end": 1.5},
    )
    cfg = FacesConfig(sampling="every_k", every_k=3, detect_mode="every")  # MTCNN on each frame
    return batch, cfg, FaceStage(cfg, num_threads=1)(batch)


def test_output_columns_types_and_row_order(clips):
    batch, cfg, out = clips
    assert set(out) == set(OUTPUT_COLUMNS)
    assert set(OUTPUT_COLUMNS) == {f.name for f in FACES if f.name != "crop"} | {"crop_pixels"}
    n = len(out["sample_id"])
    assert all(len(v) == n for v in out.values())
    assert out["crop_pixels"].shape == (n, 224, 224, 3) and out["crop_pixels"].dtype == np.uint8
    order = [s for i, s in enumerate(out["sample_id"]) if i == 0 or out["sample_id"][i - 1] != s]
    assert order == ["single", "truncated", "switch", "empty", "noface"]
    for sid in order:
        fi = rows_of(out, sid)["frame_index"]
        assert list(fi) == ([-1] if len(fi) == 1 and fi[0] == -1 else list(range(len(fi))))
    pngs = PngCrops()
    with_crop = np.flatnonzero(np.isin(out["status"], ["ok", "filled"]))
    pngs(with_crop, out["crop_pixels"][with_crop])
    table = faces_table(out, pngs)
    assert table.schema.equals(FACES, check_metadata=True) and table.num_rows == n
    assert table.column("box").null_count == int((~np.isfinite(out["box"][:, 0])).sum())
    first = table.slice(0, 1).to_pylist()[0]
    assert first["crop"].startswith(b"\x89PNG") and first["status"] == "ok"


def test_every_sampled_frame_of_single_face_is_ok(clips):
    _, _, out = clips
    rows = rows_of(out, "single")
    assert list(rows["source_frame"]) == list(range(0, 72, 3))
    assert (rows["status"] == "ok").all() and (rows["prob"] >= 0.97).all()
    assert np.allclose(rows["timestamp"], rows["source_frame"] / 30.0, atol=1e-4)
    box = rows["box"]
    assert (box[:, 0] >= 0).all() and (box[:, 2] <= 640).all() and (box[:, 3] <= 360).all()
    assert (rows["crop_pixels"].reshape(len(box), -1).std(axis=1) > 20).all()


def test_failures_are_rows_and_the_rest_of_the_batch_finishes(clips):
    _, _, out = clips
    for sid in ("truncated", "empty"):
        rows = rows_of(out, sid)
        assert list(rows["status"]) == ["decode_error"] and rows["frame_index"][0] == -1
        assert rows["error"][0]  # the decoder's message, not an empty string
        assert rows["crop_pixels"].max() == 0 and rows["source_frame"][0] == -1
    assert (rows_of(out, "single")["status"] == "ok").all()


def test_no_face_video_gives_no_face_rows_not_missing_rows(clips):
    _, _, out = clips
    rows = rows_of(out, "noface")
    src = VideoSource(str(SHARED / "no_face.mp4"))
    window = np.flatnonzero((src.timestamps >= -1e-3) & (src.timestamps <= 1.5 + 1e-3))
    assert list(rows["source_frame"]) == list(window[::3])
    assert (rows["status"] == "no_face").all() and np.isnan(rows["box"]).all()
    assert rows["crop_pixels"].max() == 0 and all(e is None for e in rows["error"])


def test_face_to_no_face_switch_at_the_container_time(clips):
    _, _, out = clips
    rows = rows_of(out, "switch")
    src = VideoSource(str(SHARED / "face_noface.mov"))
    # timestamps are the container's, and the window was cut on them
    assert np.array_equal(rows["timestamp"], src.timestamps[rows["source_frame"]])
    assert rows["timestamp"][0] >= 2.1 - 1e-3 and rows["timestamp"][-1] <= 2.7 + 1e-3
    face = rows["status"] == "ok"
    assert face.any() and (~face).any()
    switch = int(np.argmin(face))
    assert face[:switch].all() and (rows["status"][switch:] == "no_face").all()
    # the picture turns to a title card at frame 72, 2.400 s; index / average fps would
    # put that frame at 2.73 s
    t_switch = (rows["timestamp"][switch - 1] + rows["timestamp"][switch]) / 2
    assert abs(t_switch - 2.4) < 0.06
    assert rows["source_frame"][switch - 1] < 72 <= rows["source_frame"][switch]
    fps = len(src) / (src.timestamps[-1] + src.timestamps[1])
    assert abs(rows["source_frame"][switch] / fps - t_switch) > 0.2


def test_recrop_equals_the_stage_crops(clips):
    batch, cfg, out = clips
    for i, sid in enumerate(batch["sample_id"]):
        rows = rows_of(out, sid)
        if rows["status"][0] == "decode_error":
            continue
        row = {c: batch[c][i] for c in COLUMNS}
        again = recrop(row, rows, cfg)
        assert np.array_equal(again, rows["crop_pixels"]), sid
        # the same from the Arrow table's representation (lists with None)
        table = faces_table(rows)
        stored = {c: table.column(c).to_numpy(zero_copy_only=False)
                  for c in ("status", "box", "landmarks", "source_frame")}
        assert np.array_equal(recrop(row, stored, cfg), rows["crop_pixels"]), sid


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.gop_size = 1  # every frame a keyframe: a broken packet breaks one frame
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())


def _astronaut_frames(n: int) -> list[np.ndarray]:
    from skimage import data

    img = data.astronaut()
    return [np.asarray(Image.fromarray(img[0:320, 50 + 2 * k: 370 + 2 * k]).resize(
        (192, 192), Image.BICUBIC)) for k in range(n)]


def broken_frame_video(tmp_path: Path) -> tuple[Path, Path]:
    """A 16-frame video of a face and a copy of it whose frame 8 has a broken packet."""
    import av

    good, bad = tmp_path / "good.mp4", tmp_path / "bad.mp4"
    _write_video(good, _astronaut_frames(16))
    with av.open(str(good)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    pos, size = packets[8]
    data = bytearray(good.read_bytes())
    data[pos + 4: pos + size] = b"\xff" * (size - 4)
    bad.write_bytes(bytes(data))
    return good, bad


def test_a_corrupt_frame_costs_that_frame_alone(tmp_path):
    from decord import VideoReader
    from decord._ffi.base import DECORDError

    good, bad = broken_frame_video(tmp_path)
    with pytest.raises(DECORDError):  # the fallback below really is needed
        VideoReader(str(bad)).get_batch(list(range(16)))

    ref = VideoSource(str(good)).read(range(16))
    got = VideoSource(str(bad)).read(range(16))
    assert [i for i, f in enumerate(got) if isinstance(f, str)] == [8]
    assert np.array_equal(got[7], ref[7]) and np.array_equal(got[9], ref[9])

    # chunks around the bad frame, crops from re-decoded frames, aligned on the landmarks
    cfg = FacesConfig(chunk_frames=6, cache_mb=0, align=True)
    out = FaceStage(cfg, num_threads=1)(manifest({"sample_id": "v", "path": str(bad)}))
    status = list(out["status"])
    assert status == ["ok"] * 8 + ["bad_frame"] + ["ok"] * 7
    assert "frame 8" in out["error"][8] and out["crop_pixels"][8].max() == 0
    assert np.isnan(out["box"][8]).all() and out["crop_pixels"][[7, 9]].std() > 20
    row = {"path": str(bad), "media": "video"}
    assert np.array_equal(recrop(row, out, cfg), out["crop_pixels"])


@needs_shared
def test_several_faces_keep_one_track(tmp_path):
    img = np.asarray(Image.open(SHARED / "multi_face.jpg").convert("RGB"))
    folder = tmp_path / "frames"
    folder.mkdir()
    shifts = [0, 6, 12, 18, 24]
    for k, dx in enumerate(shifts):  # the camera pans right: faces move left by dx
        Image.fromarray(img[:, dx: dx + 900]).save(folder / f"image_{k * 5}.png")
    stage = FaceStage(FacesConfig(), num_threads=1)
    first = stage.detect_frames([img[:, :900]])[0]
    assert len(first) >= 3
    out = stage(manifest({"sample_id": "m", "path": str(folder), "media": "frames"}))
    assert list(out["status"]) == ["ok"] * 5
    assert np.allclose(out["timestamp"], np.arange(5) / 25.0)
    centres = (out["box"][:, 0] + out["box"][:, 2]) / 2 + np.array(shifts)
    assert np.ptp(centres) < 4  # the same face in every frame
    best = np.argmax(first.probs * np.prod(first.boxes[:, 2:] - first.boxes[:, :2], axis=1))
    assert np.abs(out["box"][0] - first.boxes[best]).max() < 6
    # crops do not depend on whether frames were kept in memory or decoded again
    again = FaceStage(FacesConfig(cache_mb=0), num_threads=1)(
        manifest({"sample_id": "m", "path": str(folder), "media": "frames"}))
    assert np.array_equal(again["crop_pixels"], out["crop_pixels"])


@needs_shared
def test_pre_cropped_faces_skip_detection(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    people = sorted(p.name for p in (SHARED / "test_images_aligned").iterdir())
    for k, person in enumerate(people):
        shutil.copy(SHARED / "test_images_aligned" / person / "1.png", folder / f"{k}.png")
    cfg = FacesConfig(crop_size=96)
    batch = manifest({"sample_id": "f", "path": str(folder), "media": "faces",
                      "start": 1, "end": 3, "time_unit": "frame"})
    out = FaceStage(cfg, num_threads=1)(batch)
    assert list(out["source_frame"]) == [1, 2, 3] and list(out["status"]) == ["ok"] * 3
    assert (out["prob"] == 1.0).all() and np.isnan(out["landmarks"]).all()
    assert np.array_equal(out["box"], np.tile([0, 0, 160, 160], (3, 1)).astype(np.float32))
    ref = np.asarray(Image.open(folder / "2.png").convert("RGB").resize((96, 96),
                                                                         Image.BICUBIC))
    assert np.abs(out["crop_pixels"][1].astype(int) - ref).mean() < 2
    row = {"path": str(folder), "media": "faces"}
    assert np.array_equal(recrop(row, out, cfg), out["crop_pixels"])


def test_an_empty_batch_gives_empty_columns():
    out = FaceStage(FacesConfig(crop_size=32), num_threads=1)(manifest())
    assert set(out) == set(OUTPUT_COLUMNS) and all(len(v) == 0 for v in out.values())
    assert out["crop_pixels"].shape == (0, 32, 32, 3) and out["box"].shape == (0, 4)


def test_media_behind_a_url_are_opened_through_a_local_copy():
    import fsspec

    fs = fsspec.filesystem("memory")
    frames = _astronaut_frames(2)
    for k, img in enumerate(frames):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        fs.pipe(f"/faces-url-test/clip/{k}.png", buf.getvalue())
    url = "memory://faces-url-test/clip"
    cfg = FacesConfig(crop_size=64)
    out = FaceStage(cfg, num_threads=1)(manifest({"sample_id": "u", "path": url,
                                                  "media": "faces"}))
    assert list(out["status"]) == ["ok", "ok"] and out["crop_pixels"].std() > 20
    assert np.array_equal(recrop({"path": url, "media": "faces"}, out, cfg), out["crop_pixels"])
    fs.rm("/faces-url-test", recursive=True)
