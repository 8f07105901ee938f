"""Small, realistic synthetic inputs for the results tests (imported by the other
tests/test_results_*.py), and checks that they fit the pipeline's own schemas.

A manifest of 2 source and 3 target subjects, classes ``neutral, pain``; each target subject
has 4 videos of 2 chunk samples each (one labelled segment per video, as in BAH), subject t3
holds only ``pain`` (the one-class case) and one unlabelled extra sample. Predictions of
``clip-au`` and ``clip-autt`` (two models: fold 0, seeds 1999 and 7; clip-autt with steps
0..10 and a final row), and ``zero-shot`` (no model, fold or seed), one sample with too few
faces. Per-frame AU activations of one sample, and stage statistics of three stages.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd

from pipeline import parquet
from pipeline.embed.prompts import AU_BANK
from schemas import get

CLASSES = ["neutral", "pain"]
TARGETS = ["t1", "t2", "t3"]
MODELS = {1999: "clipau-f0-s1999", 7: "clipau-f0-s7"}
AU_NAMES = [f"{phrase} ({code})" if code else phrase for phrase, code in AU_BANK]
LINEAGE = {"run_id": "run-synth", "config_hash": "cfg0123", "code_version": "0.1.0",
           "backbone_id": "autt-tiny", "weights_digest": None, "manifest_digest": "man4567"}


def manifest() -> pd.DataFrame:
    rows = []
    for subject in ["s1", "s2", *TARGETS]:
        role = "target" if subject in TARGETS else "source"
        for v in range(4):
            label = "pain" if subject == "t3" or v % 2 else "neutral"
            for c in range(2):
                rows.append({"sample_id": f"{subject}-v{v}-c{c}", "video_id": f"{subject}-v{v}",
                             "subject_id": subject, "label": label, "role": role})
    rows.append({"sample_id": "t3-x-c0", "video_id": "t3-x", "subject_id": "t3", "label": None,
                 "role": "target"})
    frame = pd.DataFrame(rows)
    frame["label_index"] = frame["label"].map({c: i for i, c in enumerate(CLASSES)})
    frame["path"] = "/data/" + frame["video_id"] + ".mp4"
    frame["media"] = "video"
    frame["batch"] = 1
    frame["shard_id"] = "b0001-s0000"
    frame["status"] = "ok"
    return frame


def segment_map(man: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each video is one labelled segment ``seg0`` of its chunk samples."""
    man = manifest() if man is None else man
    return pd.DataFrame({"sample_id": man["sample_id"], "segment_id": "seg0"})


def _probs(rng: np.random.Generator, label: str | None, strength: float) -> list[float]:
    sign = 1.0 if label == "pain" else -1.0
    p = 1.0 / (1.0 + np.exp(-(sign * strength + rng.normal(0.0, 1.0))))
    return [float(1.0 - p), float(p)]


def predictions(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    man = manifest()
    target = man[man["role"] == "target"]
    rows = []

    def add(sample, method, model_id, fold, model_seed, step, strength):
        probs = _probs(rng, sample.label, strength)
        status = "insufficient_faces" if sample.sample_id == "t2-v0-c1" else "ok"
        pred = int(np.argmax(probs))
        rows.append({
            "sample_id": sample.sample_id, "video_id": sample.video_id, "subject_id": sample.subject_id,
            "unit_id": f"{method}-{sample.subject_id}", "model_id": model_id, "method": method,
            "fold": fold, "seed": model_seed, "step": step, "backbone_id": "autt-tiny",
            "probs": probs if status == "ok" else None, "pred": pred if status == "ok" else None,
            "pred_label": CLASSES[pred] if status == "ok" else None,
            "window_start": 2 if method == "clip-autt" else None, "n_face_frames": 40, "status": status,
            "error": None if status == "ok" else "3 face frames < min_faces 8",
        })

    for sample in target.itertuples():
        add(sample, "zero-shot", None, None, None, None, 0.2)
        for model_seed, model_id in MODELS.items():
            add(sample, "clip-au", model_id, 0, model_seed, None, 0.7)
            for step in range(11):
                add(sample, "clip-autt", model_id, 0, model_seed, step, 0.7 + 0.06 * step)
            add(sample, "clip-autt", model_id, 0, model_seed, None, 1.3)
    return pd.DataFrame(rows)


def au_activations(sample_id: str = "t1-v1-c0", t: int = 20, seed: int = 0) -> pd.DataFrame:
    """Per-frame AU activations of one sample's evaluation clip (clip-au, one model)."""
    rng = np.random.default_rng(seed)
    k = len(AU_NAMES)
    base = rng.normal(1.0, 0.2, size=k)
    bump = np.exp(-0.5 * ((np.arange(t) - 10) / 3.0) ** 2)
    rows = []
    for pos in range(t):
        act = base + rng.normal(0, 0.05, size=k)
        act[[2, 6, 8]] += 0.8 * bump[pos]  # AU4, AU9, AU11 rise mid-clip
        rows.append({"sample_id": sample_id, "video_id": sample_id.rsplit("-", 1)[0], "subject_id": "t1",
                     "unit_id": "predict-t1", "model_id": MODELS[1999], "method": "clip-au",
                     "clip_pos": pos, "frame_index": 2 * pos, "activations": act.astype(np.float32).tolist()})
    return pd.DataFrame(rows)


def stage_stats_rows() -> pd.DataFrame:
    t0 = datetime(2026, 11, 2, 10, 0, tzinfo=timezone.utc)
    t1 = datetime(2026, 11, 2, 11, 0, tzinfo=timezone.utc)
    rows = [
        ("ingest", "b0001-s0000", "run-a", 41, 41, {"ok": 40, "missing": 1}, {"probe": 2.0}, t0),
        ("faces", "b0001-s0000", "run-a", 40, 1600, {"ok": 1500, "no_face": 90, "bad_frame": 10},
         {"decode": 30.0, "detect": 90.0}, t0),
        # a retry of the same shard: its latest execution counts
        ("faces", "b0001-s0000", "run-b", 40, 1600, {"ok": 1520, "no_face": 80},
         {"decode": 20.0, "detect": 60.0}, t1),
        ("embed", "b0001-s0000", "run-b", 1520, 1520, {"ok": 1520}, {"embed": 12.0}, t1),
    ]
    return pd.DataFrame([{"stage": s, "shard_id": sh, "run_id": r, "rows_in": a, "rows_out": b,
                          "status_counts": list(c.items()), "seconds": list(sec.items()),
                          "started_at": t, "host": "h", "fingerprint": "f"}
                         for s, sh, r, a, b, c, sec, t in rows])


def test_synthetic_inputs_fit_the_pipeline_schemas():
    for name, frame in [("manifest", manifest()), ("predictions", predictions()),
                        ("au_activations", au_activations()), ("stats", stage_stats_rows())]:
        schema = get(name)
        table = parquet.to_table({c: frame[c].tolist() for c in frame.columns}, schema)
        assert table.num_rows == len(frame) > 0


def test_synthetic_predictions_cover_the_cases():
    preds = predictions()
    autt = preds[preds["method"] == "clip-autt"]
    assert sorted(autt["step"].dropna().unique()) == list(range(11))
    assert set(preds["status"]) == {"ok", "insufficient_faces"}
    assert preds.equals(predictions()), "the synthetic predictions must be deterministic"
    assert set(manifest().query("subject_id == 't3'")["label"].dropna()) == {"pain"}
