"""The shipped protocol configs load and name the papers' target subjects (method.md)."""

from __future__ import annotations

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
