"""Append-only ingest batches and their fixed shards.

In: validated input rows (``manifest.normalise``) and the workspace. Out: the batch plans
under ``OUT/manifest/_plan/``: every sample is assigned once, to batch ``bNNNN`` and shard
``bNNNN-sKKKK`` (``shard_size`` samples in sample_id order). Re-ingesting the same samples
assigns nothing; new samples form a new batch, so existing shards never change membership.
A sample whose row changed (label, path, role, ...) is refused, naming it, unless
``recompute`` (then its row is updated in place and its shard is redone). Each plan file
carries the run metadata every Parquet file carries (schema version, run id, config hash,
code version), plus its batch and the class list.
"""

from __future__ import annotations

import json
import logging

import pandas as pd
import pyarrow as pa

import pipeline
from pipeline import io, parquet
from pipeline.ingest.manifest import INPUT_COLUMNS
from pipeline.workspace import Workspace
from schemas import get

log = logging.getLogger(__name__)
PLAN_DIR = ("manifest", "_plan")
COMPARED = ("video_id", "subject_id", "label", "role", "path", "media", "start", "end",
            "time_unit", "status", "error")


class SampleChanged(RuntimeError):
    """Samples already ingested arrive with different values."""


def read_plans(ws: Workspace) -> pd.DataFrame:
    folder = ws.url(*PLAN_DIR)
    frames = [parquet.read(io.join(folder, n)).to_pandas() for n in io.listdir(folder)
              if n.endswith(".parquet")]
    if not frames:
        return pd.DataFrame(columns=[*INPUT_COLUMNS, "label_index", "batch", "shard_id"])
    return pd.concat(frames, ignore_index=True)


def assign(ws: Workspace, rows: pd.DataFrame, classes: tuple[str, ...], shard_size: int, *,
           recompute: bool, run_id: str, config_hash: str) -> dict:
    """Record new samples as a new batch; return counts {new, known, changed, absent}.

    ``config_hash``: the ingest stage's (``config.config_hash`` of its fingerprint config),
    recorded in the plan files' metadata like in the shards' files."""
    meta = {"run_id": run_id, "config_hash": config_hash}
    plans = read_plans(ws)
    known = plans.set_index("sample_id") if len(plans) else None
    known_ids = set(plans["sample_id"].tolist())
    is_known = pd.Series([s in known_ids for s in rows["sample_id"].tolist()], index=rows.index,
                         dtype=bool)
    changed = _changed(rows[is_known], known) if known is not None else {}
    if changed and not recompute:
        ids = sorted(changed)
        detail = "; ".join(f"{s}: {', '.join(changed[s])}" for s in ids[:5])
        raise SampleChanged(f"{len(ids)} already-ingested sample(s) changed ({detail}"
                            f"{' ...' if len(ids) > 5 else ''}). Rerun with --recompute to update "
                            "them, or give them new sample_ids.")
    if changed:
        _rewrite(ws, plans, rows.set_index("sample_id").loc[sorted(changed)], classes, meta)
    new = rows[~is_known].sort_values("sample_id")
    if len(new):
        batch = int(plans["batch"].max()) + 1 if len(plans) else 0
        new = new.assign(batch=batch, shard_id=[f"b{batch:04d}-s{i // shard_size:04d}"
                                                for i in range(len(new))])
        _write_plan(ws, batch, new, classes, meta)
    given = set(rows["sample_id"].tolist())
    absent = sum(s not in given for s in known_ids)
    if absent:
        log.warning("%d sample(s) in the workspace are not in this manifest; they are kept", absent)
    return {"new": len(new), "known": int(is_known.sum()), "changed": len(changed), "absent": absent}


def _changed(rows: pd.DataFrame, known: pd.DataFrame) -> dict[str, list[str]]:
    """Per already-known sample whose row differs, what changed (column by column over the
    whole frame, not row by row: a rerun of 100,000 samples compares in well under a second)."""
    old = known.reindex(rows["sample_id"])
    new = rows.set_index("sample_id")
    differs = pd.DataFrame(False, index=new.index, columns=list(COMPARED))
    for c in COMPARED:
        a, b = old[c], new[c]
        both_na = a.isna().to_numpy() & b.isna().to_numpy()
        one_na = a.isna().to_numpy() ^ b.isna().to_numpy()
        neq = (a.astype(object).to_numpy() != b.astype(object).to_numpy()) & ~both_na
        differs[c] = one_na | neq
    out = {}
    for sample in new.index[differs.any(axis=1).to_numpy()]:
        cols = [c for c in COMPARED if differs.at[sample, c]]
        out[sample] = [f"{c} {old.at[sample, c]!r} -> {new.at[sample, c]!r}" for c in cols]
    return out


def _write_plan(ws: Workspace, batch: int, df: pd.DataFrame, classes, meta: dict) -> None:
    """Write batch ``batch``'s plan; ``meta`` holds its run id and config hash. The shards'
    input digests (as the ingest stage will load them) go in the footer too, so that
    planning never re-reads the rows."""
    idx = {c: i for i, c in enumerate(classes)}
    df = df.assign(label_index=[idx.get(v) if v is not None else None for v in df["label"]])
    cols = {c: df[c].tolist() for c in (*INPUT_COLUMNS, "label_index", "batch", "shard_id")}
    schema = get("manifest")
    table = parquet.to_table(cols, schema)
    name = f"b{batch:04d}"
    parquet.write(ws.url(*PLAN_DIR, f"{name}.parquet"), parquet.with_run_metadata(
        table, schema_version=schema.metadata[b"autt.schema_version"].decode(),
        code_version=pipeline.__version__, stage="ingest", batch=name,
        classes=",".join(classes), shard_digests=json.dumps(_digests(table.to_pandas())), **meta))


def _rewrite(ws: Workspace, plans: pd.DataFrame, updates: pd.DataFrame, classes, meta) -> None:
    plans = plans.set_index("sample_id")
    for col in COMPARED:
        plans.loc[updates.index, col] = updates[col]
    plans = plans.reset_index()
    for batch in sorted(plans.loc[plans["sample_id"].isin(updates.index), "batch"].unique()):
        _write_plan(ws, int(batch), plans[plans["batch"] == batch], classes, meta)


def shard_digests(ws: Workspace) -> dict[str, str]:
    """Per shard, the digest of its planned rows, read from each batch plan's metadata
    (written with the plan): planning costs one small footer read per batch."""
    folder = ws.url(*PLAN_DIR)
    out: dict[str, str] = {}
    for name in io.listdir(folder):
        if name.endswith(".parquet"):
            url = io.join(folder, name)
            stored = parquet.metadata(url).get("autt.shard_digests")
            out.update(json.loads(stored) if stored else _digests(parquet.read(url).to_pandas()))
    return out


def _digests(df: pd.DataFrame) -> dict[str, str]:
    return {str(shard): rows_digest(rows.reset_index(drop=True))
            for shard, rows in df.groupby("shard_id", sort=True)}


def rows_digest(rows: pd.DataFrame) -> str:
    return parquet.digest(pa.Table.from_pandas(rows, preserve_index=False))


def shard_rows(ws: Workspace, shard_id: str) -> pd.DataFrame:
    batch = shard_id.split("-")[0]
    df = parquet.read(ws.url(*PLAN_DIR, f"{batch}.parquet")).to_pandas()
    return df[df["shard_id"] == shard_id].reset_index(drop=True)


def shard_ids(ws: Workspace) -> list[str]:
    plans = read_plans(ws)
    return sorted(plans["shard_id"].unique()) if len(plans) else []
