"""End to end: one `autt demo` run per test session (a real local Ray cluster, real MTCNN,
the tiny open_clip model), shared by every assertion below."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import schemas
from jobs.demo import DEMO_DEFAULTS
from pipeline import parquet
from pipeline.config import load_config
from pipeline.demo.config import DemoConfig
from pipeline.faces.shard import WITH_FACE
from pipeline.workspace import Workspace

pytestmark = pytest.mark.slow
EMB = "embeddings/autt-tiny__random-s0"
DEMO = DemoConfig()  # the demo's defaults: what `autt demo` makes
N_VIDEOS = DEMO.n_subjects * 2 * DEMO.videos_per_class
N_SHARDS = -(-N_VIDEOS // load_config(None, list(DEMO_DEFAULTS)).ingest.shard_size)
TARGETS = [f"s{i + 1:02d}" for i in range(DEMO.n_subjects - DEMO.n_target, DEMO.n_subjects)]
N_TARGET_VIDEOS = DEMO.n_target * 2 * DEMO.videos_per_class


def autt(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True,
                          text=True, env=env, timeout=900, check=False)


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("demo") / "out"
    result = autt("demo", "--out", str(out))
    assert result.returncode == 0, result.stderr[-4000:]
    return out, result


def test_demo_prints_progress_and_where_each_table_is(demo):
    out, result = demo
    assert f"[faces+embed] {N_SHARDS}/{N_SHARDS} shard" in result.stderr
    for table in ("manifest", "faces", EMB, "text_features/autt-tiny__random-s0"):
        assert f"{out / table}" in result.stdout


def test_every_table_conforms_to_its_schema_and_carries_metadata(demo):
    out, _ = demo
    ws = Workspace(str(out))
    expected = {"manifest": schemas.get("manifest"), "faces": schemas.get("faces"),
                EMB: schemas.embeddings_schema(32, "float16")}
    for table, schema in expected.items():
        markers = ws.markers(table)
        assert len(markers) == N_SHARDS
        for shard in markers:
            url = ws.part_url(table, shard)
            schemas.check(parquet.read(url), schema)
            meta = parquet.metadata(url)
            assert meta["autt.table"] == schema.metadata[b"autt.table"].decode()
            for key in ("schema_version", "run_id", "config_hash", "code_version"):
                assert meta[f"autt.{key}"]
            schemas.check(parquet.read(ws.stats_url(table, shard)), schemas.get("stats"))
            schemas.check(parquet.read(ws.errors_url(table, shard)), schemas.get("errors"))


def test_manifest_roles_labels_and_faces_found_in_every_frame(demo):
    out, _ = demo
    ws = Workspace(str(out))
    man = ws.read_table("manifest").to_pandas()
    assert len(man) == N_VIDEOS and set(man["status"]) == {"ok"}
    assert set(man["label"]) == {"neutral", "pain"}
    assert man.groupby("role")["subject_id"].nunique().to_dict() == {"source": DEMO.n_subjects - DEMO.n_target,
                                                                    "target": DEMO.n_target}
    faces = ws.read_table("faces").to_pandas()
    assert len(faces) == N_VIDEOS * DEMO.n_frames
    ok = faces["status"].isin(WITH_FACE)
    assert ok.mean() > 0.97
    boxes = np.stack(faces.loc[ok, "box"].to_numpy())
    assert (boxes[:, 2] - boxes[:, 0] > 40).all()
    ts = faces[faces["sample_id"] == faces["sample_id"].iloc[0]]["timestamp"].to_numpy()
    np.testing.assert_allclose(np.diff(ts), 1 / 20, atol=1e-3)  # 20 fps from the container
    meta = parquet.metadata(ws.part_url("faces", sorted(ws.markers("faces"))[0]))
    assert '"sampling": "all"' in meta["autt.sampling"]  # the policy is recorded in the output


def test_embeddings_one_per_face_frame_keys_in_the_row(demo):
    out, _ = demo
    ws = Workspace(str(out))
    faces = ws.read_table("faces").to_pandas()
    emb = ws.read_table(EMB)
    with_face = faces[faces["status"].isin(WITH_FACE)]
    got = sorted(zip(emb.column("sample_id").to_pylist(), emb.column("frame_index").to_pylist()))
    assert got == sorted(zip(with_face["sample_id"], with_face["frame_index"]))
    vec = np.stack(emb.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    assert vec.shape == (len(with_face), 32) and np.isfinite(vec).all()
    assert np.linalg.norm(vec, axis=1).std() > 0  # raw, not normalised
    meta = parquet.metadata(ws.part_url(EMB, sorted(ws.markers(EMB))[0]))
    assert meta["autt.stage"] == "faces+embed"
    assert meta["autt.backbone_id"] == "autt-tiny__random-s0"
    assert len(meta["autt.weights_digest"]) == 64
    assert '"size": 224' in meta["autt.preprocess"]


def test_text_features_are_float32_au_and_class_prompts(demo):
    out, _ = demo
    folder = out / "text_features" / "autt-tiny__random-s0"
    parts = list(folder.glob("part-*.parquet"))
    assert len(parts) == 1
    t = parquet.read(str(parts[0]))
    schemas.check(t, schemas.text_features_schema(32))
    kinds = t.column("kind").to_pylist()
    assert kinds.count("au") == 47 and kinds.count("class") == 2 and kinds.count("class_neg") == 2
    assert pa.types.is_float32(t.schema.field("feature").type.value_type)
    assert "a human face with inner eyebrows raised." in t.column("prompt").to_pylist()


def test_rerun_does_no_work_and_status_reports_it(demo):
    out, _ = demo
    before = {t: Workspace(str(out)).markers(t)
              for t in ("manifest", "faces", EMB, "models", "predictions", "au_activations", "adaptation",
                        "adapt_units")}
    again = autt("demo", "--out", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"[ingest] nothing to do ({N_SHARDS} shard(s) already done)" in again.stderr
    assert f"[faces+embed] nothing to do ({N_SHARDS} shard(s) already done)" in again.stderr
    assert "[train] nothing to do" in again.stderr and "[baselines] nothing to do" in again.stderr
    assert f"[adapt] nothing to do ({4 * DEMO.n_target} shard(s) already done)" in again.stderr
    assert {t: Workspace(str(out)).markers(t) for t in before} == before
    status = autt("status", "--out", str(out))
    assert status.returncode == 0
    lines = {line.split()[0]: line.split() for line in status.stdout.splitlines()[1:]}
    assert lines["faces"][1:6] == [str(N_SHARDS), "0", str(N_VIDEOS), str(N_VIDEOS * DEMO.n_frames), "0"]


def test_demo_trains_clip_au_and_predicts_every_target_sample_with_every_method(demo):
    out, result = demo
    ws = Workspace(str(out))
    models = ws.read_table("models").to_pandas()
    assert len(models) == 1 and models["status"].tolist() == ["ok"]
    assert sorted(models["target_subjects"][0]) == TARGETS
    preds = ws.read_table("predictions").to_pandas()
    man = ws.read_table("manifest").to_pandas()
    targets = set(man.loc[man["role"] == "target", "sample_id"])
    for method in ("clip-au", "zero-shot", "pn-prompts", "au-probe"):
        rows = preds[preds["method"] == method]
        assert set(rows["sample_id"]) == targets and (rows["status"] == "ok").all(), method
    assert "epoch 10/10" in result.stderr  # training shows its progress
    for table in ("models", "predictions", "au_activations"):
        for unit, marker in ws.markers(table).items():
            url = ws.files(table, unit, marker)["data"]
            schemas.check(parquet.read(url), schemas.get(table))


def test_clip_au_scores_clearly_above_chance_on_the_demo_targets(demo):
    """The trained head beats chance on the held-out target subjects' videos: accuracy of
    at least 0.75, which a coin reaches with p < 0.05 at the demo's number of videos."""
    from scipy.stats import binomtest

    out, _ = demo
    ws = Workspace(str(out))
    man = ws.read_table("manifest").to_pandas()
    preds = ws.read_table("predictions").to_pandas()
    rows = preds[preds["method"] == "clip-au"].merge(man[["sample_id", "label", "role"]],
                                                       on="sample_id")
    assert len(rows) == N_TARGET_VIDEOS and (rows["role"] == "target").all()
    hits = int((rows["pred_label"] == rows["label"]).sum())
    assert hits >= 0.75 * len(rows), f"CLIP-AU: {hits}/{len(rows)} target videos right"
    assert binomtest(hits, len(rows), 0.5, alternative="greater").pvalue < 0.05


def test_demo_ends_with_the_report(demo):
    import re

    import pandas as pd

    out, result = demo
    page = out / "report" / "index.html"
    assert f"report: {page}" in result.stdout
    html = page.read_text()
    images = re.findall(r'src="([^"]+)"', html)
    assert images and all((page.parent / src).is_file() for src in images)
    metrics = pd.read_parquet(out / "results" / "subject_metrics.parquet")
    assert {(m, s) for m, s in zip(metrics["method"], metrics["subject_id"])} >= {
        (m, s) for m in ("clip-au", "zero-shot", "pn-prompts", "au-probe", "clip-autt", "clip-au+windows",
                         "tta-cap-frozen", "tpt") for s in TARGETS}
    assert (out / "report" / "adaptation.png").is_file()  # the per-step trajectories


def test_demo_adapts_every_target_subject_with_every_method(demo):
    out, result = demo
    ws = Workspace(str(out))
    units = ws.read_table("adapt_units").to_pandas()
    assert len(units) == 4 * DEMO.n_target and (units["status"] == "ok").all()  # 4 methods
    assert set(units["subject_id"]) == set(TARGETS)
    rows = ws.read_table("adaptation").to_pandas()
    final = rows[rows["step"].isna()]
    man = ws.read_table("manifest").to_pandas()
    targets = set(man.loc[man["role"] == "target", "sample_id"])
    for method in ("clip-autt", "clip-au+windows", "tta-cap-frozen", "tpt"):
        got = final[final["method"] == method]
        assert set(got["sample_id"]) == targets and (got["status"] == "ok").all(), method
    steps = rows[(rows["method"] == "clip-autt") & rows["step"].notna()]
    assert sorted(steps["step"].unique()) == list(range(11))  # 10 updates: steps 0..10
    # adaptation shows progress on the driver (worker output through Ray is best effort)
    assert "[adapt] 8/8 shard " in result.stderr
