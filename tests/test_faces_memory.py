"""Memory per sample is bounded (issue 8, item 11): groups are sized on the frames that will
be sampled, crops exist only for rows with a face and only a chunk at a time, embeddings
are made a batch at a time, and long samples are never held whole, in the fused pass and
in the embed-only recrop path alike."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from pipeline.embed.config import EmbedConfig
from pipeline.embed.shard import FusedShard, frame_groups
from pipeline.embed.stage import CropStream, EmbedStage
from pipeline.faces.config import FacesConfig
from pipeline.faces.decode import expected_frames
from pipeline.faces.detect import downscale
from pipeline.faces.recrop import recrop_chunks
from pipeline.faces.shard import WITH_FACE
from pipeline.faces.stage import FaceStage
from tests.media import write_face_video
from tests.test_faces_stage import COLUMNS, one_thread  # noqa: F401  (autouse fixture)


def test_expected_frames_count_the_sampled_frames_not_the_file():
    all_, k5 = FacesConfig(), FacesConfig(sampling="every_k", every_k=5)
    # a 100-frame BAH chunk of a 30,000-frame video is 100 frames, not 30,000
    assert expected_frames(30_000, 30.0, 200, 299, "frame", all_) == 100
    assert expected_frames(30_000, 30.0, 200, 299, "frame", k5) == 20
    # a 2.04-5.00 s window at 25 fps: 75 frames; 10 with sampling=count
    assert expected_frames(138, 25.0, 2.04, 5.0, "s", all_) == 75
    assert expected_frames(138, 25.0, 2.04, 5.0, "s", FacesConfig(sampling="count",
                                                                  num_frames=10)) == 10
    # 10 minutes at 30 fps resampled to 5 fps
    assert expected_frames(18_000, 30.0, None, None, "s",
                           FacesConfig(sampling="fps", target_fps=5.0)) == 3000
    assert expected_frames(None, 30.0, None, None, "s", all_) is None  # not probed
    assert expected_frames(500, None, 1.0, 2.0, "s", all_) == 500  # no fps: the whole file


def test_fused_groups_are_sized_on_sampled_frames():
    cfg = FacesConfig()
    n = 12  # twelve 100-frame chunks of one 30,000-frame video
    rows = {"sample_id": np.arange(n), "num_frames": np.full(n, 30_000, dtype=object),
            "fps": np.full(n, 30.0), "start": np.arange(n) * 100.0,
            "end": np.arange(n) * 100.0 + 99, "time_unit": np.full(n, "frame", dtype=object)}
    expected = FusedShard.expected(types.SimpleNamespace(faces_cfg=cfg), rows)
    assert expected == [100] * n
    assert [len(g) for g in frame_groups(expected)] == [10, 2]  # not one sample per group


@pytest.fixture(scope="module")
def face_batch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mem")
    dark = folder / "dark.mp4"
    from pipeline.demo.synth import encode_mp4

    dark.write_bytes(encode_mp4(np.zeros((7, 160, 160, 3), np.uint8), fps=10))
    paths = {"face": write_face_video(folder / "face.mp4", n_frames=11), "dark": dark}
    rows = [{"sample_id": k, "path": str(p), "media": "video", "time_unit": "s",
             "shard_id": "s0"} for k, p in paths.items()]
    return {c: np.array([r.get(c) for r in rows], dtype=object) for c in COLUMNS}


def test_crops_stream_in_chunks_for_face_rows_only(face_batch):
    cfg = FacesConfig(chunk_frames=4, cache_mb=0)
    calls: list[tuple[np.ndarray, np.ndarray]] = []
    out = FaceStage(cfg, num_threads=1).run(face_batch, lambda p, c: calls.append((p, c)))
    assert "crop_pixels" not in out
    with_face = np.flatnonzero(np.isin(out["status"], WITH_FACE))
    assert len(with_face) == 11 and set(out["status"][out["sample_id"] == "dark"]) == {"no_face"}
    assert np.concatenate([p for p, _ in calls]).tolist() == with_face.tolist()
    assert max(len(c) for _, c in calls) <= 4  # never a whole sample's crops
    # the same crops as the collecting call, and as recropping from the stored rows
    dense = FaceStage(cfg, num_threads=1)(face_batch)["crop_pixels"]
    for pos, crops in calls:
        assert np.array_equal(dense[pos], crops)
    rows = {k: v[out["sample_id"] == "face"] for k, v in out.items()}
    chunks = list(recrop_chunks({"path": face_batch["path"][0], "media": "video"}, rows, cfg))
    assert [len(p) for p, _ in chunks] == [4, 4, 3]
    assert all(np.array_equal(dense[p], c) for p, c in chunks)


def test_downscale_in_steps_equals_one_call():
    frames = np.random.default_rng(0).integers(0, 255, (5, 90, 120, 3), dtype=np.uint8)
    whole = downscale(frames, (45, 60), torch.device("cpu"))
    stepped = downscale(frames, (45, 60), torch.device("cpu"), max_bytes=2 * 90 * 120 * 3 * 4)
    assert torch.equal(whole, stepped) and stepped.shape == (5, 45, 60, 3)


def test_crop_stream_holds_one_batch_and_matches_embedding_at_once():
    stage = EmbedStage(EmbedConfig(model="autt-tiny", weights="random", batch_size=4),
                       num_threads=1)
    crops = np.random.default_rng(1).integers(0, 255, (11, 32, 32, 3), dtype=np.uint8)
    seen: list[int] = []
    real = stage.embed
    stage.embed = lambda x: (seen.append(len(x)), real(x))[1]  # type: ignore[method-assign]
    stream = CropStream(stage)
    for lo, hi in ((0, 3), (3, 6), (6, 9), (9, 11)):
        stream(np.arange(lo, hi) + 100, crops[lo:hi])
    stream(np.zeros(0, np.int64), crops[:0])
    pos, vectors = stream.finish()
    assert pos.tolist() == list(range(100, 111)) and seen == [4, 4, 3]
    # batches of the same size as embedding all at once: the same arithmetic, bit for bit
    np.testing.assert_array_equal(vectors, real(crops))
