"""Summaries over target subjects, and over folds and seeds.

In: the ``subject_metrics`` table and the scored rows it came from (for the pooled figure),
plus a ``BootstrapConfig``. Out: the ``method_summary`` table (per run key and metric: mean
and sample standard deviation over the subjects with a defined value, the pooled figure over
all target samples, and a bootstrap confidence interval of the mean, subjects resampled with
``scipy.stats.bootstrap``) and the ``method_overall`` table (per method: mean and standard
deviation of those subject means over the runs, i.e. folds and seeds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import bootstrap

from pipeline.results.join import RUN_KEY, typed_frame
from pipeline.results.metrics import score_rows
from schemas.results import METHOD_OVERALL, METHOD_SUMMARY, METRICS

CI_METHODS = ("percentile", "basic", "BCa")


@dataclass(frozen=True)
class BootstrapConfig:
    n_resamples: int = 9999     # bootstrap resamples of the target subjects
    level: float = 0.95         # confidence level of the interval
    method: str = "percentile"  # scipy.stats.bootstrap method: percentile | basic | BCa
    seed: int = 0               # seed of numpy's default_rng, the same for every group

    def __post_init__(self) -> None:
        if self.method not in CI_METHODS:
            raise ValueError(f"bootstrap method {self.method!r} is not one of {CI_METHODS}")
        if not 0 < self.level < 1:
            raise ValueError(f"bootstrap confidence level must lie in (0, 1), got {self.level}")
        if self.n_resamples < 1:
            raise ValueError(f"bootstrap n_resamples must be positive, got {self.n_resamples}")


DEFAULT_BOOTSTRAP = BootstrapConfig()


def bootstrap_ci(values, cfg: BootstrapConfig = DEFAULT_BOOTSTRAP) -> tuple[float, float]:
    """The CI of the mean of ``values`` (NaN ones dropped), resampling them with
    ``scipy.stats.bootstrap`` and ``numpy.random.default_rng(cfg.seed)``. Fewer than two
    values: (NaN, NaN); values all equal: that value at both ends (the distribution of the
    resampled mean is a point)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    if np.ptp(v) == 0:
        return float(v[0]), float(v[0])
    res = bootstrap((v,), np.mean, n_resamples=cfg.n_resamples, confidence_level=cfg.level,
                    method=cfg.method, vectorized=True, rng=np.random.default_rng(cfg.seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _std(v: np.ndarray) -> float:
    return float(np.std(v, ddof=1)) if len(v) >= 2 else float("nan")


def _key_mask(frame: pd.DataFrame, names: list[str], values: tuple) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for name, value in zip(names, values):
        mask &= frame[name].isna() if pd.isna(value) else frame[name] == value
    return mask.fillna(False).astype(bool)


def method_summary(subjects: pd.DataFrame, rows: pd.DataFrame, n_classes: int,
                   cfg: BootstrapConfig = DEFAULT_BOOTSTRAP) -> pd.DataFrame:
    """The ``method_summary`` table from one level's ``subject_metrics`` and scored rows."""
    final = rows[rows["step"].isna()]
    records = []
    for key, g in subjects.groupby(["level", *RUN_KEY], dropna=False, sort=True):
        pooled = score_rows(final[_key_mask(final, RUN_KEY, key[1:])], n_classes)
        for metric in METRICS:
            values = g[metric].to_numpy(dtype=np.float64)
            used = values[~np.isnan(values)]
            low, high = bootstrap_ci(used, cfg)
            records.append({
                "level": key[0], **dict(zip(RUN_KEY, key[1:])), "metric": metric,
                "n_subjects": len(values), "n_subjects_used": len(used),
                "mean": float(np.mean(used)) if len(used) else float("nan"), "std": _std(used),
                "pooled": pooled[metric], "n_samples_pooled": pooled["n_samples"],
                "ci_low": low, "ci_high": high, "ci_level": cfg.level, "ci_method": cfg.method,
                "ci_resamples": cfg.n_resamples, "ci_seed": cfg.seed,
            })
    return typed_frame(records, METHOD_SUMMARY)


def method_overall(summary: pd.DataFrame) -> pd.DataFrame:
    """The ``method_overall`` table: per (level, backbone, method, metric), the mean and
    sample standard deviation of the runs' subject means (runs whose mean is defined)."""
    records = []
    keys = ["level", "backbone_id", "method", "metric"]
    for key, g in summary.groupby(keys, dropna=False, sort=True):
        means = g["mean"].to_numpy(dtype=np.float64)
        defined = g[~np.isnan(means)]
        used = means[~np.isnan(means)]
        records.append({
            **dict(zip(keys, key)), "n_runs": len(used),
            "model_ids": sorted(str(m) for m in defined["model_id"].dropna().unique()),
            "mean": float(np.mean(used)) if len(used) else float("nan"), "std": _std(used),
        })
    frame = typed_frame(records, METHOD_OVERALL)
    order = {m: i for i, m in enumerate(METRICS)}
    return frame.sort_values(["level", "backbone_id", "method", "metric"], key=lambda s: s.map(order)
                             if s.name == "metric" else s, kind="stable").reset_index(drop=True)
