"""Metrics against values worked out by hand: per subject, a one-class subject (NaN, counted,
left out of the means), the pooled figure, trajectories, segments, the bootstrap interval
against a direct resampling loop, stage statistics, and the label join's refusals."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.results import join, metrics, stats, summary
from tests.test_results_synth import stage_stats_rows

NAN = float("nan")
CLASSES = ["neutral", "pain"]
# Per subject: labels, predictions, probability of pain (the positive class).
HAND = {
    "A": ([0, 0, 1, 1], [0, 1, 1, 1], [0.2, 0.8, 0.7, 0.9]),
    "B": ([0, 1], [1, 1], [0.6, 0.9]),
    "C": ([1, 1, 1], [1, 0, 1], [0.7, 0.3, 0.8]),   # one class only
}


def hand_inputs(steps: dict[int, list[int]] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Manifest and clip-au predictions of HAND, plus a B sample with too few faces, an
    unlabelled C sample and a source sample; ``steps`` adds clip-autt rows of subject A."""
    man, preds = [], []

    def pred(sid, subject, method, p_pain, pred_idx, step=None, status="ok"):
        ok = status == "ok"
        preds.append({"sample_id": sid, "video_id": sid, "subject_id": subject, "backbone_id": "bb",
                      "method": method, "model_id": "m1", "fold": 0, "seed": 1, "step": step,
                      "probs": [1 - p_pain, p_pain] if ok else None, "pred": pred_idx if ok else None,
                      "status": status, "error": None if ok else "2 faces"})

    for subject, (labels, preds_, probs) in HAND.items():
        for i, (y, p, q) in enumerate(zip(labels, preds_, probs)):
            sid = f"{subject}{i}"
            man.append({"sample_id": sid, "video_id": sid, "subject_id": subject, "label": CLASSES[y],
                        "role": "target"})
            pred(sid, subject, "clip-au", q, p)
    man += [{"sample_id": "B9", "video_id": "B9", "subject_id": "B", "label": "pain", "role": "target"},
            {"sample_id": "C9", "video_id": "C9", "subject_id": "C", "label": None, "role": "target"},
            {"sample_id": "S0", "video_id": "S0", "subject_id": "S", "label": "pain", "role": "source"}]
    pred("B9", "B", "clip-au", 0.5, 0, status="insufficient_faces")
    pred("C9", "C", "clip-au", 0.9, 1)
    pred("S0", "S", "clip-au", 0.9, 1)
    for step, step_preds in (steps or {}).items():
        for i, p in enumerate(step_preds):
            pred(f"A{i}", "A", "clip-autt", 0.9 if p else 0.1, p, step=step)
    return pd.DataFrame(man), pd.DataFrame(preds)


def by_subject(frame: pd.DataFrame) -> dict[str, pd.Series]:
    return {row["subject_id"]: row for _, row in frame.iterrows()}


def test_score_by_hand_two_classes():
    probs = np.array([[0.8, 0.2], [0.2, 0.8], [0.3, 0.7], [0.1, 0.9]])
    got = metrics.score([0, 0, 1, 1], [0, 1, 1, 1], probs, 2)
    # recall 1/2 and 2/2; F1 of neutral: P 1, R 1/2 -> 2/3; of pain: P 2/3, R 1 -> 4/5;
    # AUC: pain scores (0.7, 0.9) above neutral (0.2, 0.8) in 3 of 4 pairs.
    assert got == pytest.approx({"n_samples": 4, "n_classes": 2, "accuracy": 0.75, "uar": 0.75,
                                 "f1": (2 / 3 + 4 / 5) / 2, "auc": 0.75})


def test_score_one_class_is_nan_but_has_accuracy():
    got = metrics.score([1, 1, 1], [1, 0, 1], np.array([[0.3, 0.7], [0.7, 0.3], [0.2, 0.8]]), 2)
    assert got["n_classes"] == 1 and got["n_samples"] == 3
    assert got["accuracy"] == pytest.approx(2 / 3)
    assert all(math.isnan(got[m]) for m in ("uar", "f1", "auc"))


def test_score_averages_over_the_classes_present():
    """Three classes, the positive one (index 2) absent from the labels but predicted once."""
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1], [0.1, 0.7, 0.2]])
    got = metrics.score([0, 0, 1, 1], [0, 2, 1, 1], probs, 3)
    # recall: 1/2, 2/2; F1: neutral P 1 R 1/2 -> 2/3, class 1 P 1 R 1 -> 1; AUC undefined.
    assert got["uar"] == pytest.approx(0.75) and got["f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert got["accuracy"] == pytest.approx(0.75) and math.isnan(got["auc"])


def test_subject_metrics_count_every_row_and_score_ok_labelled_ones():
    man, preds = hand_inputs()
    rows, left_out = join.join_labels(preds, man, CLASSES)
    assert left_out == 1  # the source sample
    subj = by_subject(metrics.subject_metrics(rows, 2))
    assert sorted(subj) == ["A", "B", "C"]
    b, c = subj["B"], subj["C"]
    assert (b["n_rows"], b["n_samples"], b["status_counts"]) == (3, 2, {"insufficient_faces": 1, "ok": 2})
    # B: labels (0, 1), both predicted 1: recall 0 and 1; F1 0 and 2/3; AUC 1.
    assert (b["accuracy"], b["uar"], b["f1"], b["auc"]) == pytest.approx((0.5, 0.5, 1 / 3, 1.0))
    assert (c["n_rows"], c["n_unlabelled"], c["n_samples"], c["n_classes"]) == (4, 1, 3, 1)
    assert c["accuracy"] == pytest.approx(2 / 3) and all(math.isnan(c[m]) for m in ("uar", "f1", "auc"))


def test_method_summary_leaves_one_class_subjects_out_of_means_but_counts_them():
    man, preds = hand_inputs()
    rows, _ = join.join_labels(preds, man, CLASSES)
    subjects = metrics.subject_metrics(rows, 2)
    got = summary.method_summary(subjects, rows, 2, summary.BootstrapConfig(n_resamples=500, seed=1))
    got = got.set_index("metric")
    acc, uar, auc = got.loc["accuracy"], got.loc["uar"], got.loc["auc"]
    accs = [0.75, 0.5, 2 / 3]
    assert (acc["n_subjects"], acc["n_subjects_used"]) == (3, 3)
    assert acc["mean"] == pytest.approx(sum(accs) / 3)
    assert acc["std"] == pytest.approx(math.sqrt(sum((a - sum(accs) / 3) ** 2 for a in accs) / 2))
    assert (uar["n_subjects"], uar["n_subjects_used"]) == (3, 2)
    assert uar["mean"] == pytest.approx((0.75 + 0.5) / 2)
    # Pooled over the 9 scored samples: 6 right; recall of neutral 1/3, of pain 5/6; AUC: of the
    # 18 (pain, neutral) pairs, 13 ordered right and one tie -> 13.5 / 18.
    assert (acc["pooled"], acc["n_samples_pooled"]) == (pytest.approx(6 / 9), 9)
    assert uar["pooled"] == pytest.approx((1 / 3 + 5 / 6) / 2)
    assert auc["pooled"] == pytest.approx(13.5 / 18)
    assert (uar["ci_method"], uar["ci_resamples"], uar["ci_seed"]) == ("percentile", 500, 1)
    # Two values: the resampled mean takes 0.5, 0.625 or 0.75; the interval spans the extremes.
    assert (uar["ci_low"], uar["ci_high"]) == pytest.approx((0.5, 0.75))


def test_bootstrap_matches_a_direct_resampling_loop():
    values = np.array([0.61, 0.72, 0.55, 0.90, 0.48, 0.67, 0.75, 0.81, 0.58, 0.70])
    cfg = summary.BootstrapConfig(n_resamples=2000, level=0.9, seed=3)
    rng = np.random.default_rng(3)
    means = values[rng.integers(0, len(values), size=(2000, len(values)))].mean(axis=1)
    np.testing.assert_allclose(summary.bootstrap_ci(values, cfg), np.percentile(means, [5, 95]), rtol=1e-12)
    assert summary.bootstrap_ci(values, cfg) != summary.bootstrap_ci(values, summary.BootstrapConfig(seed=4))


def test_bootstrap_by_enumeration_and_edge_cases():
    # 27 equally likely resamples of 3 values: P(mean = 0.5) = P(mean = 1) = 1/27 > 2.5 %.
    assert summary.bootstrap_ci([0.5, 0.75, 1.0, NAN]) == (0.5, 1.0)
    assert summary.bootstrap_ci([0.8, 0.8, 0.8]) == (0.8, 0.8)
    assert all(math.isnan(x) for x in summary.bootstrap_ci([0.8, NAN]))
    with pytest.raises(ValueError, match="'jackknife'"):
        summary.BootstrapConfig(method="jackknife")


def test_trajectories_score_each_step():
    man, preds = hand_inputs(steps={0: [0, 0, 0, 0], 1: [0, 0, 1, 1], 2: [0, 1, 1, 1]})
    rows, _ = join.join_labels(preds, man, CLASSES)
    traj = metrics.trajectories(rows, 2)
    assert set(traj["method"]) == {"clip-autt"} and set(traj["subject_id"]) == {"A"}
    assert traj["step"].tolist() == [0, 1, 2]
    assert traj["accuracy"].tolist() == pytest.approx([0.5, 1.0, 0.75])
    assert traj["uar"].tolist() == pytest.approx([0.5, 1.0, 0.75])
    # the final rows' table holds no step rows
    assert set(metrics.subject_metrics(rows, 2)["method"]) == {"clip-au"}


def test_segments_average_their_ok_chunks():
    man, preds = hand_inputs()
    rows, _ = join.join_labels(preds, man, CLASSES)
    mapping = pd.DataFrame({"sample_id": man["sample_id"], "segment_id": ["s"] * len(man)})
    # segments are keyed by video_id: put A0/A1 (neutral) and B1/B9 (pain) into one video each
    rows.loc[rows["sample_id"].isin(["A0", "A1"]), "video_id"] = "vA"
    rows.loc[rows["sample_id"].isin(["B1", "B9"]), "video_id"] = "vB"
    rows.loc[rows["sample_id"].isin(["A2", "A3"]), ["video_id", "status"]] = ["vF", "failed"]
    seg = join.segment_rows(rows, mapping, CLASSES).set_index("video_id")
    a = seg.loc["vA"]
    assert (a["n_chunks"], a["n_chunks_ok"], a["label"]) == (2, 2, "neutral")
    np.testing.assert_allclose(a["probs"], [0.5, 0.5])  # mean of (0.8, 0.2) and (0.2, 0.8)
    assert a["pred"] == 0 and bool(a["correct"])          # a tie goes to the first class
    b = seg.loc["vB"]
    assert (b["n_chunks"], b["n_chunks_ok"], b["status"]) == (2, 1, "ok")
    np.testing.assert_allclose(b["probs"], [0.1, 0.9])
    f = seg.loc["vF"]
    assert (f["n_chunks"], f["n_chunks_ok"], f["status"], f["probs"]) == (2, 0, "failed", None)
    assert pd.isna(f["pred"]) and pd.isna(f["correct"]) and "none of its 2 chunk(s)" in f["error"]
    assert pd.isna(seg.loc["C9", "label"]) and pd.isna(seg.loc["C9", "correct"])
    rows.loc[rows["sample_id"] == "A1", "label"] = "pain"
    with pytest.raises(ValueError, match="mixes labels"):
        join.segment_rows(rows, mapping, CLASSES)
    with pytest.raises(ValueError, match="no segment"):
        join.segment_rows(rows, mapping.iloc[1:], CLASSES)


@pytest.mark.parametrize("change, message", [
    (lambda m, p: p.__setitem__("sample_id", p["sample_id"].replace("A0", "Z0")), "not in the manifest"),
    (lambda m, p: p.__setitem__("subject_id", p["subject_id"].replace("A", "B")), "manifest says 'A'"),
    (lambda m, p: p.__setitem__("method", p["method"].replace("clip-au", "clip-xx")), "clip-xx"),
    (lambda m, p: p.__setitem__("status", p["status"].replace("ok", "done")), "done"),
    (lambda m, p: m.__setitem__("label", m["label"].replace("pain", "Pain")), "'Pain'"),
    (lambda m, p: p.__setitem__("probs", [[0.2, 0.3, 0.5]] * len(p)), "2 finite values"),
    (lambda m, p: p.__setitem__("pred", p["pred"].replace(1, 2)), "pred in 0..1"),
    (lambda m, p: p.__setitem__("seed", 1), None),  # fine
])
def test_join_refuses_inconsistent_inputs(change, message):
    man, preds = hand_inputs()
    change(man, preds)
    if message is None:
        join.join_labels(preds, man, CLASSES)
        return
    with pytest.raises(ValueError, match=message):
        join.join_labels(preds, man, CLASSES)


def test_join_refuses_a_repeated_prediction_and_a_bad_class_list():
    man, preds = hand_inputs()
    with pytest.raises(ValueError, match="repeated"):
        join.join_labels(pd.concat([preds, preds.iloc[:1]]), man, CLASSES)
    with pytest.raises(ValueError, match="at least 2 distinct"):
        join.join_labels(preds, man, ["pain", "pain"])


def test_stage_stats_use_each_shards_latest_execution():
    got = stats.stage_stats(stage_stats_rows()).set_index("stage")
    assert list(got.index) == ["ingest", "faces", "embed"]
    faces = got.loc["faces"]
    assert (faces["n_units"], faces["rows_in"], faces["rows_out"]) == (1, 40, 1600)
    assert faces["status_counts"] == {"no_face": 80, "ok": 1520}
    assert (faces["seconds"], faces["seconds_per_unit"], faces["seconds_per_row"]) == (80.0, 80.0, 2.0)
    assert faces["phase_seconds"] == {"decode": 20.0, "detect": 60.0} and faces["run_ids"] == ["run-b"]


def test_stage_stats_count_units_per_node_from_each_shards_latest_execution():
    rows = stage_stats_rows()
    rows["node_id"] = ["n1", "n1", "n2", None]  # the faces retry ran on n2; embed is from v1
    got = stats.stage_stats(rows).set_index("stage")
    assert got.loc["ingest", "units_per_node"] == {"n1": 1}
    assert got.loc["faces", "units_per_node"] == {"n2": 1}
    assert got.loc["embed", "units_per_node"] == {"unknown": 1}
    assert stats.stage_stats(stage_stats_rows()).loc[0, "units_per_node"] == {"unknown": 1}  # no column
