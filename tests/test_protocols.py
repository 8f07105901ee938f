"""The shipped protocol configs load and name the papers' target subjects (method.md)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import load_config

TARGETS = {
    "biovid": {"081014_w_27", "101609_m_36", "112009_w_43", "091809_w_43", "071309_w_21",
               "073114_m_25", "080314_w_25", "073109_w_28", "100909_w_65", "081609_w_40"},
    "stressid": {"kycf", "uymz", "h8s1", "ctzy", "p9i3", "7h5u", "g7r2", "b9w0", "r3zm", "x1q3"},
    "bah": {"82711", "82687", "82585", "82592", "82598", "82632", "82681", "82683", "82708",
            "82714"},
}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_protocol_names_the_papers_subjects_and_schedule(name):
    cfg = load_config(name, ["root=/data/x"])
    assert set(cfg.protocol.target_subjects) == TARGETS[name]
    assert len(cfg.protocol.target_subjects) == 10
    assert cfg.ingest.dataset == name and cfg.ingest.root == "/data/x"
    assert cfg.embed.model == "ViT-B-32"
    assert cfg.protocol.clip_len == 20 and cfg.train.seeds == (1999,)
    if name == "stressid":
        assert (cfg.protocol.stride, cfg.protocol.window, cfg.train.epochs) == (1, 6, 20)
        assert cfg.ingest.classes == ("neutral", "stress") and cfg.ingest.stress_threshold == 5
    else:
        assert (cfg.protocol.stride, cfg.protocol.window, cfg.train.epochs) == (2, 16, 10)
    if name == "biovid":
        assert cfg.ingest.window == (2.04, 5.0) and cfg.ingest.biovid_codes == ("BL1", "PA4")
        assert cfg.ingest.classes == ("neutral", "pain")
    if name == "bah":
        assert cfg.ingest.chunk_frames == 100


# Each protocol's frame sampling (method.md), checked on the frames it would keep.
SAMPLED = {
    # BioVid: 25 fps container time (float32, as decoders give it), window 2.04-5.00 s:
    # every frame of it, 75 frames 40 ms apart
    "biovid": (np.float32(np.arange(138) * 0.04), 2.04, 5.0, "s", list(range(51, 126))),
    "biovid-reference": (np.float32(np.arange(138) * 0.04), 2.04, 5.0, "s",
                         list(range(51, 126))),
    # StressID: a task video at 30 fps, every 5th frame
    "stressid": (np.arange(300) / 30.0, None, None, "s", list(range(0, 300, 5))),
    # BAH: one 100-frame chunk (frames 200..299) of a longer video, every frame
    "bah": (np.arange(1000) / 30.0, 200, 299, "frame", list(range(200, 300))),
}


@pytest.mark.parametrize("name", sorted(SAMPLED))
def test_protocol_chooses_its_papers_frame_sampling(name):
    from pipeline.faces.decode import expected_frames, sample_indices

    faces = load_config(name, ["root=/data/x"]).faces
    ts, start, end, unit, want = SAMPLED[name]
    got = sample_indices(np.asarray(ts, np.float64), start, end, unit, faces)
    assert got.tolist() == want
    fps = 1 / float(ts[1] - ts[0])
    assert expected_frames(len(ts), fps, start, end, unit, faces) == len(want)
    assert load_config(None, []).faces.sampling == "all"  # the global default is unchanged
