"""Frame sources and sampling policies of the face stage (no detection here)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import pipeline  # noqa: F401  (torchvision fix before anything imports it)
from pipeline.faces.config import FacesConfig
from pipeline.faces.decode import (
    DECODE_ERRORS,
    FolderSource,
    ImageSource,
    VideoSource,
    apply_policy,
    list_frame_files,
    natural_key,
    open_source,
    read_with_pyav,
    sample_indices,
    window_positions,
)
from tests.media import needs_shared_faces, shared_faces_dir

FACES = shared_faces_dir()
needs_shared = needs_shared_faces()


def test_natural_sort_puts_image_105_after_image_5(tmp_path):
    names = ["image_105.jpg", "image_5.jpg", "image_40.jpg", "image_1.jpg", "notes.txt",
             ".hidden.jpg", "image_10.PNG"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    got = list_frame_files(str(tmp_path), (".jpg", ".png"))
    assert got == ["image_1.jpg", "image_5.jpg", "image_10.PNG", "image_40.jpg", "image_105.jpg"]
    assert sorted(["a10b2", "a10b10", "a9"], key=natural_key) == ["a9", "a10b2", "a10b10"]


def test_window_is_inclusive_in_seconds_and_frames():
    ts = np.arange(140) * 0.04  # 25 fps
    # the BioVid window 2.04 .. 5.00 s keeps 75 frames (both ends included)
    win = window_positions(ts, 2.04, 5.0, "s")
    assert len(win) == 75 and win[0] == 51 and win[-1] == 125
    assert list(window_positions(ts, 10, 12, "frame")) == [10, 11, 12]
    assert len(window_positions(ts, None, None, "s")) == 140
    assert list(window_positions(ts, None, 1, "frame")) == [0, 1]
    with pytest.raises(ValueError, match="'min'"):
        window_positions(ts, 0, 1, "min")


def test_sampling_policies():
    ts = np.arange(100) / 25.0
    pos = np.arange(10, 60)
    assert list(apply_policy(pos, ts, FacesConfig())) == list(pos)  # default: all
    assert list(apply_policy(pos, ts, FacesConfig(sampling="every_k", every_k=3)))[:3] == [
        10, 13, 16]
    picked = apply_policy(pos, ts, FacesConfig(sampling="count", num_frames=5))
    assert list(picked) == [10, 22, 34, 47, 59]
    few = apply_policy(pos[:3], ts, FacesConfig(sampling="count", num_frames=5))
    assert list(few) == [10, 11, 12]  # never repeats frames
    # fps: 5 fps out of 25 fps is every 5th frame, on the timestamps
    assert list(apply_policy(pos, ts, FacesConfig(sampling="fps", target_fps=5.0))) == list(
        range(10, 60, 5))
    # variable frame rate: ticks follow time, not frame counts
    vfr = np.concatenate([np.arange(0, 1, 0.1), 1 + np.arange(0, 1, 0.02)])
    got = apply_policy(np.arange(len(vfr)), vfr, FacesConfig(sampling="fps", target_fps=5.0))
    assert np.allclose(np.diff(vfr[got]), 0.2, atol=1e-6)
    assert list(sample_indices(ts, 1.0, 1.2, "s", FacesConfig(sampling="every_k",
                                                              every_k=2))) == [25, 27, 29]


def test_config_rejects_bad_values_naming_the_field():
    with pytest.raises(ValueError, match=r"faces\.min_prob .*1\.5"):
        FacesConfig(min_prob=1.5)
    with pytest.raises(ValueError, match=r"faces\.sampling"):
        FacesConfig(sampling="some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"faces\.smooth must be odd"):
        FacesConfig(smooth=4)
    with pytest.raises(ValueError, match=r"faces\.every_k"):
        FacesConfig(every_k=0)


def test_folder_source_sorts_numerically_and_reports_bad_frames(tmp_path):
    for k in (5, 105, 40):
        Image.fromarray(np.full((8, 10, 3), k, np.uint8)).save(tmp_path / f"image_{k}.png")
    (tmp_path / "image_70.png").write_bytes(b"not a png")
    src = open_source(str(tmp_path), "frames", FacesConfig(folder_fps=20.0))
    assert isinstance(src, FolderSource)
    assert np.allclose(src.timestamps, [0.0, 0.05, 0.1, 0.15])
    frames = src.read([0, 1, 2, 3])
    assert [int(f[0, 0, 0]) for f in (frames[0], frames[1], frames[3])] == [5, 40, 105]
    assert isinstance(frames[2], str) and "image_70.png" in frames[2]


def test_single_image_is_a_one_frame_sample(tmp_path):
    path = tmp_path / "face.jpg"
    Image.fromarray(np.zeros((6, 4, 3), np.uint8)).save(path)
    src = open_source(str(path), "video", FacesConfig())
    assert isinstance(src, ImageSource) and len(src) == 1 and src.timestamps[0] == 0.0
    assert src.read([0])[0].shape == (6, 4, 3)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DECODE_ERRORS):
        open_source(str(tmp_path / "bad.jpg"), "frames", FacesConfig())


def test_unopenable_media_raise_decode_errors(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    os.mkdir(tmp_path / "nothing")
    for path, media in [(tmp_path / "empty.mp4", "video"), (tmp_path / "missing.mp4", "video"),
                        (tmp_path / "nothing", "frames"), (tmp_path / "empty.mp4", "tape")]:
        with pytest.raises(DECODE_ERRORS):
            open_source(str(path), media, FacesConfig())


@needs_shared
def test_video_timestamps_come_from_the_container():
    src = open_source(str(FACES / "face_noface.mov"), "video", FacesConfig())
    assert isinstance(src, VideoSource) and len(src) == 169
    # variable frame rate: frame 72 starts at 2.400 s, not 72 / average fps = 2.73 s
    assert src.timestamps[72] == pytest.approx(2.4, abs=1e-3)
    gaps = np.diff(src.timestamps)
    assert gaps.min() < 0.02 and gaps.max() > 0.04
    picked = sample_indices(src.timestamps, 2.0, 2.1, "s", FacesConfig())
    assert list(picked) == [60, 61, 62, 63]
    frames = list(src.chunks(picked, 3))
    assert [len(c) for c in frames] == [3, 1] and frames[0][0].shape == (540, 960, 3)


@needs_shared
@pytest.mark.parametrize("name", ["single_face.mp4", "face_noface.mov", "no_face.mp4"])
def test_pyav_fallback_gives_decords_pixels(name):
    # the fallback for chunks with a corrupt frame must not change the good frames
    # (no_face.mp4 has an edit list: its 3 first packets show no frame, and decord counts
    # them at the end, repeating the frame before; PyAV was 3 frames off, the first lost)
    src = VideoSource(str(FACES / name))
    idx = [0, 7, 8, 40, *range(len(src) - 4, len(src))]
    want = src.read(idx)
    got = read_with_pyav(str(FACES / name), idx)
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def _size_changing_video(path, tmp_path) -> None:
    """32 frames of a face in one h264 stream that changes size: 16 at 192x192, then 16 at
    96x96; every frame a keyframe, so a broken packet breaks its own frame alone."""
    import fractions

    import av

    from tests.test_faces_stage import _astronaut_frames

    frames = _astronaut_frames(32)
    parts = []
    for k, side in enumerate((192, 96)):
        part = tmp_path / f"part{k}.h264"
        with av.open(str(part), "w", format="h264") as out:
            stream = out.add_stream("libx264", rate=25)
            stream.width = stream.height = side
            stream.pix_fmt = "yuv420p"
            stream.options = {"x264-params": "keyint=1"}
            for img in frames[16 * k: 16 * (k + 1)]:
                small = np.asarray(Image.fromarray(img).resize((side, side), Image.BICUBIC))
                out.mux(stream.encode(av.VideoFrame.from_ndarray(small, format="rgb24")))
            out.mux(stream.encode())
        parts.append(part.read_bytes())
    joined = tmp_path / "joined.h264"
    joined.write_bytes(b"".join(parts))
    step = fractions.Fraction(1, 25)
    with av.open(str(joined), format="h264") as src, av.open(str(path), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0], rate=25)
        stream.time_base = step
        count = 0
        for packet in src.demux(src.streams.video[0]):
            if packet.size:
                packet.stream, packet.time_base = stream, step
                packet.pts = packet.dts = count
                packet.duration, count = 1, count + 1
                dst.mux(packet)


def test_a_broken_frame_of_a_stream_that_changes_size_leaves_the_others_at_its_size(tmp_path):
    """decord scales every frame to the first one's size; where a broken packet sends a chunk
    to PyAV, its frames are scaled the same way (the same pixels: ``recrop``, which reads
    decord's frames, then makes the stage's crops again) instead of coming at their own
    size."""
    import av
    from decord import VideoReader
    from decord._ffi.base import DECORDError

    good, bad = tmp_path / "good.mp4", tmp_path / "bad.mp4"
    _size_changing_video(good, tmp_path)
    with av.open(str(good)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    assert len(packets) == 32
    pos, size = packets[20]
    data = bytearray(good.read_bytes())
    data[pos + 4: pos + size] = b"\xff" * (size - 4)
    bad.write_bytes(bytes(data))
    with pytest.raises(DECORDError):  # the fallback is needed
        VideoReader(str(bad)).get_batch(list(range(16, 32)))

    ref = VideoSource(str(good)).read(range(16, 32))
    source = VideoSource(str(bad))
    got = source.read(range(16, 32))
    assert source.frame_shape == (192, 192) and ref.shape == (16, 192, 192, 3)
    assert [i for i, f in enumerate(got) if isinstance(f, str)] == [4]
    for i, frame in enumerate(got):
        if i != 4:  # bicubic (reformat's) was 2-3 grey levels off on average
            assert frame.shape == (192, 192, 3) and np.array_equal(frame, ref[i]), i

    from pipeline.faces.stage import FaceStage, recrop
    from tests.test_faces_stage import manifest

    cfg = FacesConfig(detect_size=160, chunk_frames=8)
    out = FaceStage(cfg, num_threads=1)(manifest({"sample_id": "v", "path": str(bad)}))
    assert list(out["status"]).count("bad_frame") == 1 and "no_face" not in out["status"]
    assert np.array_equal(recrop({"path": str(bad), "media": "video"}, out, cfg),
                          out["crop_pixels"])
