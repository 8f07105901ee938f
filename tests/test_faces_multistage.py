"""Real MTCNN on real video through the multi-stage path (``faces``, then ``embed``, which
re-decodes and re-crops from the stored boxes a chunk at a time) against the fused pass
(crops embedded as they are made): same face rows, same crops, same embeddings."""

from __future__ import annotations

import numpy as np

import schemas
from jobs.cli import main as cli
from pipeline.faces.config import FacesConfig
from pipeline.faces.recrop import recrop
from pipeline.faces.shard import WITH_FACE, unpng
from pipeline.workspace import Workspace
from tests.media import needs_shared_faces, shared_faces_dir

# Small chunks and batches so that every sample spans several of each; no frame cache, so
# the fused pass re-decodes too.
SETTINGS = ["embed.model=autt-tiny", "embed.weights=random", "embed.dtype=float32",
            "embed.batch_size=4", "faces.chunk_frames=5", "faces.cache_mb=0",
            "faces.sampling=every_k", "faces.every_k=3"]
EMB = "embeddings/autt-tiny__random-s0"
# The crops are the same bytes on both paths (asserted); the vectors differ only by how
# crops were grouped into forward passes (which rows share a batch), float32 summation
# order: ~1e-6 of values of order 1 (measured here: 0.0, the batches happen to coincide).
ATOL = 1e-4


def run(out, *args) -> int:
    return cli([*args, "--out", str(out), "--executor", "local", "--quiet", *SETTINGS])


def sorted_rows(t):
    return t.sort_by([("sample_id", "ascending"), ("frame_index", "ascending")])


@needs_shared_faces()
def test_faces_then_recrop_embed_agrees_with_the_fused_pass(tmp_path):
    shared = shared_faces_dir()
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "sample_id,video_id,subject_id,label,path,start,end\n"
        f"single,single,s1,neutral,{shared / 'single_face.mp4'},,\n"
        f"switch,switch,s2,pain,{shared / 'face_noface.mov'},1.9,3.0\n")
    fused, split = tmp_path / "fused", tmp_path / "split"
    for out in (fused, split):
        assert run(out, "ingest", "--manifest", str(manifest), "--classes", "neutral,pain") == 0
    assert run(fused, "embed", "--fused", "faces.store_crops=true") == 0
    assert run(split, "faces") == 0
    assert run(split, "embed") == 0  # crops re-made from the stored boxes
    wf, ws = Workspace(str(fused)), Workspace(str(split))
    faces_f = sorted_rows(wf.read_table("faces", schemas.get("faces")))
    faces_s = sorted_rows(ws.read_table("faces", schemas.get("faces")))
    cols = ["sample_id", "frame_index", "source_frame", "timestamp", "box", "landmarks",
            "prob", "status"]
    assert faces_f.select(cols).equals(faces_s.select(cols))  # detection is deterministic
    status = faces_s.column("status").to_pylist()
    assert status.count("ok") + status.count("carried") >= 20 and status.count("no_face") >= 3

    # crops: the fused pass's (stored as PNG) equal the recrop from the split faces table
    cfg = FacesConfig(sampling="every_k", every_k=3, chunk_frames=5)
    d = faces_f.to_pydict()
    for sample, path in (("single", shared / "single_face.mp4"),
                         ("switch", shared / "face_noface.mov")):
        rows = [i for i, s in enumerate(d["sample_id"]) if s == sample]
        assert rows, sample
        stored = faces_s.take(rows).to_pydict()
        again = recrop({"path": str(path), "media": "video"},
                       {k: stored[k] for k in ("status", "box", "landmarks", "source_frame")},
                       cfg)
        for j, i in enumerate(rows):
            if d["crop"][i] is None:
                assert d["status"][i] not in WITH_FACE and again[j].max() == 0
            else:
                assert np.array_equal(unpng(d["crop"][i]), again[j])

    emb_f, emb_s = sorted_rows(wf.read_table(EMB)), sorted_rows(ws.read_table(EMB))
    keys = ["sample_id", "frame_index"]
    assert emb_f.select(keys).equals(emb_s.select(keys))
    assert emb_f.num_rows == sum(status.count(s) for s in WITH_FACE)
    a = np.stack(emb_f.column("embedding").to_numpy(zero_copy_only=False))
    b = np.stack(emb_s.column("embedding").to_numpy(zero_copy_only=False))
    assert np.isfinite(a).all() and np.abs(a).max() > 0.1
    np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)
