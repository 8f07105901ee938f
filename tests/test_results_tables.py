"""Every results table, built from the synthetic run, conforms to its schema, carries the
lineage, and reads back with plain pandas and pyarrow (and DuckDB where installed)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.results import tables
from schemas import check, get
from schemas.results import LINEAGE_KEYS, RESULT_TABLES
from tests import test_results_synth as synth


@pytest.fixture(scope="module")
def built() -> dict[str, pd.DataFrame]:
    return tables.build_tables(synth.manifest(), synth.predictions(), synth.CLASSES, synth.LINEAGE,
                               stage_stats=synth.stage_stats_rows(), segments=synth.segment_map())


@pytest.fixture(scope="module")
def written(built, tmp_path_factory) -> dict[str, str]:
    return tables.write_tables(built, str(tmp_path_factory.mktemp("results")), synth.LINEAGE)


def test_every_results_table_is_built_and_registered(built):
    assert sorted(built) == sorted(RESULT_TABLES)
    for name in RESULT_TABLES:
        assert get(name) is RESULT_TABLES[name]
        assert len(built[name]) > 0, name


@pytest.mark.parametrize("name", sorted(RESULT_TABLES))
def test_tables_read_back_with_pandas_and_pyarrow(name, written, built):
    path = written[name]
    table = pq.read_table(path)
    check(table, RESULT_TABLES[name])
    meta = table.schema.metadata
    assert meta[b"autt.table"] == name.encode() and meta[b"autt.run_id"] == b"run-synth"
    assert tables.read_lineage(path) == synth.LINEAGE
    frame = pd.read_parquet(path)
    assert list(frame.columns) == RESULT_TABLES[name].names and len(frame) == len(built[name])


def test_tables_read_with_duckdb(written):
    duckdb = pytest.importorskip("duckdb", reason="DuckDB is not installed in this environment")
    con = duckdb.connect()
    got = con.execute(f"SELECT method, avg(uar) FROM read_parquet('{written['subject_metrics']}') "
                      "WHERE level = 'sample' GROUP BY method ORDER BY method").fetchall()
    assert [m for m, _ in got] == ["clip-au", "clip-autt", "zero-shot"]


def test_one_class_subject_is_counted_and_stored_as_null(built, written):
    subj = built["subject_metrics"]
    t3 = subj[(subj["subject_id"] == "t3") & (subj["level"] == "sample")]
    assert len(t3) == 5 and (t3["n_classes"] == 1).all() and t3["uar"].isna().all()
    assert t3["accuracy"].notna().all()
    stored = pq.read_table(written["subject_metrics"]).column("uar")
    assert stored.null_count == subj["uar"].isna().sum() > 0   # null, not a NaN float
    summary = built["method_summary"]
    uar = summary[(summary["metric"] == "uar") & (summary["level"] == "sample")]
    assert (uar["n_subjects"] == 3).all() and (uar["n_subjects_used"] == 2).all()


def test_table_contents(built):
    samples = built["samples"]
    assert samples["label"].isna().sum() == 5      # the unlabelled extra sample, 5 runs
    assert samples["correct"].isna().sum() == 5 + 5  # and the sample with too few faces
    traj = built["trajectories"]
    sample_traj = traj[traj["level"] == "sample"]
    assert set(sample_traj["method"]) == {"clip-autt"}
    assert sorted(sample_traj["step"].unique()) == list(range(11))
    assert len(sample_traj) == 3 * 2 * 11
    seg = built["segments"]
    final = seg[seg["step"].isna()]
    assert len(final) == 13 * 5 and set(final["n_chunks"]) == {1, 2}
    assert final.loc[final["video_id"] == "t2-v0", "n_chunks_ok"].tolist() == [1] * 5
    overall = built["method_overall"]
    au = overall[(overall["method"] == "clip-au") & (overall["level"] == "sample")]
    assert au["n_runs"].tolist() == [2] * 4 and au["model_ids"].iloc[0] == sorted(synth.MODELS.values())
    zs = overall[(overall["method"] == "zero-shot") & (overall["level"] == "sample")]
    assert zs["n_runs"].tolist() == [1] * 4 and math.isnan(zs["std"].iloc[0])
    summary = built["run_summary"].iloc[0]
    assert (summary["n_target_subjects"], summary["n_labelled_target_samples"]) == (3, 24)
    assert summary["positive_class"] == "pain" and summary["n_non_target_rows"] == 0


def test_to_arrow_refuses_what_does_not_fit(built):
    with pytest.raises(KeyError, match="'nope'"):
        tables.to_arrow(built["samples"], "nope", synth.LINEAGE)
    with pytest.raises(ValueError, match="lacks \\['manifest_digest'\\]"):
        tables.to_arrow(built["samples"], "samples", {k: "x" for k in LINEAGE_KEYS[:-1]})
    with pytest.raises(ValueError, match="columns"):
        tables.to_arrow(built["samples"].drop(columns=["pred"]), "samples", synth.LINEAGE)
    bad = built["samples"].copy()
    bad["pred"] = bad["pred"].astype("float64") + 0.5
    with pytest.raises(ValueError, match="'pred'"):
        tables.to_arrow(bad, "samples", synth.LINEAGE)
    bad = built["samples"].copy()
    bad.loc[0, "method"] = None
    with pytest.raises(ValueError, match="'method'"):
        tables.to_arrow(bad, "samples", synth.LINEAGE)


def test_pyarrow_tables_as_read_from_the_workspace_give_the_same_tables(built):
    """The integrator passes tables read from Parquet (typed, nullable ints, map columns)."""
    from pipeline import parquet

    def arrow(frame, name):
        return parquet.to_table({c: frame[c].tolist() for c in frame.columns}, get(name))

    got = tables.build_tables(arrow(synth.manifest(), "manifest"), arrow(synth.predictions(), "predictions"),
                              synth.CLASSES, synth.LINEAGE, segments=pa_table(synth.segment_map()),
                              stage_stats=arrow(synth.stage_stats_rows(), "stats"))
    for name in RESULT_TABLES:
        a = tables.to_arrow(got[name], name, synth.LINEAGE)
        b = tables.to_arrow(built[name], name, synth.LINEAGE)
        if "probs" in a.column_names:  # stored as float32 in the predictions table
            for x, y in zip(a.column("probs").to_pylist(), b.column("probs").to_pylist()):
                assert (x is None and y is None) or np.allclose(x, y, rtol=1e-6), (name, x, y)
            a, b = a.drop_columns(["probs"]), b.drop_columns(["probs"])
        assert a.equals(b), name


def pa_table(frame: pd.DataFrame):
    import pyarrow as pa

    return pa.Table.from_pandas(frame, preserve_index=False)
