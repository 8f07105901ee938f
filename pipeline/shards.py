"""Shards: fixed units of work, fingerprinted, resumable, idempotent.

In: a stage object (see :class:`ShardStage`), a workspace, shard ids and their
fingerprints. Out: per shard, Parquet parts of the stage's tables, its error rows, one
statistics row, and last a done marker carrying the fingerprint.

Rules: a shard whose marker has the same fingerprint is skipped; one whose config or
inputs changed is refused (``StageChanged`` names what changed) unless ``recompute``; a
done shard with failed rows is re-run for those samples only when ``retry_failed``. A code
version change alone is reported and the shard is kept (use ``recompute`` to redo it).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa

import pipeline
from pipeline import config as cfgmod
from pipeline import faults, parquet
from pipeline.workspace import Workspace
from schemas import check

log = logging.getLogger(__name__)
CODE_VERSION = pipeline.__version__


# A stage may return, beside its tables, failed items that have no row in them (e.g. a
# sample whose media could not be re-read): columns of the errors table, charged to the
# stage's primary table (its status counts, its errors file, its retries).
ERRORS_KEY = "_errors"


class StageChanged(RuntimeError):
    """Done shards were made with another config or other inputs."""


@dataclass(frozen=True)
class Fingerprint:
    config: dict  # the stage's own config section(s), as plain data
    inputs: dict  # input name -> content digest
    code_version: str = CODE_VERSION

    @property
    def config_hash(self) -> str:
        return cfgmod.config_hash(self.config)

    @property
    def value(self) -> str:
        payload = json.dumps([self.config_hash, sorted(self.inputs.items()), self.code_version])
        return hashlib.sha256(payload.encode()).hexdigest()[:24]


class ShardStage(Protocol):
    """What :func:`execute` needs from a stage (tests call it without Ray)."""

    name: str  # stage name in stats and errors, e.g. "faces"
    outputs: tuple[str, ...]  # tables written; outputs[0] is the one retries look at
    failure_statuses: frozenset[str]  # statuses that count as failed (go to errors/)

    def schema(self, table: str) -> pa.Schema: ...
    def load(self, ws: Workspace, shard_id: str) -> dict[str, np.ndarray]: ...
    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, dict | pa.Table]: ...

    # Optional: ``metadata(table) -> dict[str, str]``, extra Parquet metadata for a table.


@dataclass
class Plan:
    run: list[str] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    stale_code: list[str] = field(default_factory=list)

    def mode(self, shard_id: str) -> str:
        return "retry" if shard_id in self.retry else "full"

    @property
    def todo(self) -> list[str]:
        return sorted(self.run + self.retry)


def plan(ws: Workspace, table: str, fingerprints: dict[str, Fingerprint], *, recompute: bool,
         retry_failed: bool, failure_statuses: frozenset[str],
         config_only: frozenset[str] = frozenset(), done: dict[str, dict] | None = None) -> Plan:
    """Decide, for every shard, whether to run, retry or skip it; refuse on changes.

    ``config_only``: shards whose inputs are being remade in this same run (their marker is
    compared on config alone; they run). With ``retry_failed``, a shard whose inputs changed
    but whose config did not is redone (its upstream rows were just retried).
    ``done``: the table's markers when the caller has read them already (one read per table).
    """
    done = ws.markers(table) if done is None else done
    result = Plan()
    changes: dict[str, list[str]] = {}
    for shard_id, fp in sorted(fingerprints.items()):
        marker = done.get(shard_id)
        if marker is None:
            result.run.append(shard_id)
            continue
        why = describe_change(marker, fp, inputs=shard_id not in config_only)
        config_changed = marker["config_hash"] != fp.config_hash
        if why and not recompute and (config_changed or not retry_failed):
            changes[shard_id] = why
            continue
        if why or shard_id in config_only:
            result.run.append(shard_id)
            continue
        if marker["code_version"] != fp.code_version:
            result.stale_code.append(shard_id)
        failed = sum(n for s, n in marker.get("status_counts", {}).items() if s in failure_statuses)
        if retry_failed and failed:
            result.retry.append(shard_id)
        else:
            result.skip.append(shard_id)
    if changes:
        reasons = sorted({r for rs in changes.values() for r in rs})
        shards = sorted(changes)
        shown = ", ".join(shards[:5]) + (f" and {len(shards) - 5} more" if len(shards) > 5 else "")
        raise StageChanged(
            f"{table}: {len(shards)} done shard(s) ({shown}) were made differently: "
            + "; ".join(reasons) + ". Rerun with --recompute to redo them, or use another --out.")
    if result.stale_code:
        log.warning("%s: %d done shard(s) were made by code version %s (now %s); they are kept. "
                    "Use --recompute to redo them.", table, len(result.stale_code),
                    done[result.stale_code[0]]["code_version"], CODE_VERSION)
    return result


def describe_change(marker: dict, fp: Fingerprint, inputs: bool = True) -> list[str]:
    """What differs between a done marker and a new fingerprint (empty: nothing)."""
    why = []
    if marker["config_hash"] != fp.config_hash:
        changed = cfgmod.diff(marker.get("config", {}), fp.config)
        why.append("config changed (" + ", ".join(changed or ["config hash"]) + ")")
    old_inputs = marker.get("inputs", {}) if inputs else {}
    for name in sorted(set(old_inputs) | set(fp.inputs if inputs else {})):
        if old_inputs.get(name) != fp.inputs.get(name):
            why.append(f"input {name} changed")
    return why


def execute(ws: Workspace, stage: ShardStage, shard_id: str, fingerprints: dict[str, Fingerprint],
            mode: str, run_id: str) -> dict:
    """Run one shard end to end and commit it. Returns the summary recorded in its marker.

    ``fingerprints`` maps each output table to its fingerprint. In ``retry`` mode only the
    samples with failed rows in the primary table are processed again; the others' rows are
    kept as they were.
    """
    where = f"{stage.name}/{shard_id}"
    faults.maybe_fail("shard_start", where)
    started = _dt.datetime.now(_dt.timezone.utc)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    rows = stage.load(ws, shard_id)
    rows_in = len(rows["sample_id"])
    kept: dict[str, pa.Table] = {}
    if mode == "retry":
        rows, kept = _split_for_retry(ws, stage, shard_id, rows)
    seconds["load"] = time.perf_counter() - t

    t = time.perf_counter()
    produced = stage(rows)
    extra_errors = produced.pop(ERRORS_KEY, None) or []
    seconds["process"] = time.perf_counter() - t

    t = time.perf_counter()
    summaries = {}
    produced_digests: dict[str, str] = {}
    for table in stage.outputs:
        schema = stage.schema(table)
        data = produced[table]
        if isinstance(data, pa.Table):
            check(data, schema)  # a stage that builds its own table must match exactly
            data = data.replace_schema_metadata(schema.metadata)
        else:
            data = parquet.to_table(data, schema)
        if table in kept:
            data = pa.concat_tables([kept[table].cast(schema), data])
            order = _sort_keys(data)
            data = data.take(order)
        counts = Counter(data.column("status").to_pylist()) if "status" in schema.names else Counter()
        extra = extra_errors if table == stage.outputs[0] else []
        counts.update(e["status"] for e in extra)
        out_digest = parquet.digest(data)
        produced_digests[table] = out_digest
        fp = resolve(fingerprints[table], produced_digests)
        meta = {"schema_version": (schema.metadata or {}).get(b"autt.schema_version", b"?").decode(),
                "run_id": run_id, "config_hash": fp.config_hash, "code_version": fp.code_version,
                "shard_id": shard_id, "stage": stage.name,
                **(stage.metadata(table) if hasattr(stage, "metadata") else {})}
        parquet.write(ws.part_url(table, shard_id), parquet.with_run_metadata(data, **meta))
        _write_errors(ws, stage, table, shard_id, data, extra, run_id, meta)
        _write_stats(ws, stage, table, shard_id, rows_in, data, counts, seconds, started, fp, run_id,
                     meta)
        summaries[table] = {"rows": data.num_rows, "status_counts": dict(counts),
                            "output_digest": out_digest, "fp": fp}
    seconds["write"] = time.perf_counter() - t
    faults.maybe_fail("before_done", where)
    for table, s in summaries.items():
        fp = s.pop("fp")
        ws.write_marker(table, shard_id, {
            "table": table, "shard_id": shard_id, "stage": stage.name, "mode": mode,
            "fingerprint": fp.value, "config_hash": fp.config_hash, "config": fp.config,
            "inputs": fp.inputs, "code_version": fp.code_version, "run_id": run_id,
            "rows_in": rows_in, "processed": len(rows["sample_id"]), "seconds": seconds,
            "failure_statuses": sorted(stage.failure_statuses),
            "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(), **s})
    return {"shard_id": shard_id, "rows_in": rows_in, "processed": len(rows["sample_id"]),
            "seconds": seconds,
            "tables": {t: {"rows": s["rows"], "status_counts": s["status_counts"]}
                       for t, s in summaries.items()}}


def resolve(fp: Fingerprint, produced: dict[str, str]) -> Fingerprint:
    """Replace ``@table`` inputs by the digest of that table as written in this run (a
    fused shard fingerprints its embeddings on the faces it has just produced)."""
    if not any(str(v).startswith("@") for v in fp.inputs.values()):
        return fp
    inputs = {k: produced[v[1:]] if str(v).startswith("@") else v for k, v in fp.inputs.items()}
    return Fingerprint(config=fp.config, inputs=inputs, code_version=fp.code_version)


def _split_for_retry(ws: Workspace, stage: ShardStage, shard_id: str, rows: dict):
    """Rows of the failed samples (named by the primary table's errors file) to redo, and
    every table's rows of the other samples to keep."""
    primary = stage.outputs[0]
    errs = parquet.read(ws.errors_url(primary, shard_id), columns=["sample_id"])
    failed = sorted(set(errs.column("sample_id").to_pylist()))
    mask = np.isin(np.asarray(rows["sample_id"], dtype=object), failed)
    retry_rows = {k: np.asarray(v)[mask] if len(v) == len(mask) else v for k, v in rows.items()}
    kept = {}
    for table in stage.outputs:
        t = parquet.read(ws.part_url(table, shard_id)).replace_schema_metadata(None)
        keep_mask = ~np.isin(np.asarray(t.column("sample_id").to_pylist(), dtype=object), failed)
        kept[table] = t.filter(pa.array(keep_mask))
    return retry_rows, kept


def _sort_keys(table: pa.Table) -> pa.Array:
    keys = [("sample_id", "ascending")]
    if "frame_index" in table.schema.names:
        keys.append(("frame_index", "ascending"))
    return pa.compute.sort_indices(table, sort_keys=keys)


def _write_errors(ws, stage, table, shard_id, data: pa.Table, extra: list[dict], run_id: str,
                  meta: dict) -> None:
    """The shard's failed rows: rows of ``data`` with a failure status, plus ``extra`` items
    (in a retry, ``data`` holds the kept rows too, so their failures stay recorded)."""
    from schemas import get

    schema = get("errors")
    if "status" in data.schema.names:
        mask = pa.compute.is_in(data.column("status"),
                                value_set=pa.array(sorted(stage.failure_statuses), pa.string()))
        failed = data.filter(mask)
    else:
        failed = data.slice(0, 0)
    n = failed.num_rows
    cols = {f.name: failed.column(f.name).to_pylist() if f.name in failed.schema.names
            else [None] * n for f in schema}
    for item in extra:
        for f in schema:
            cols[f.name].append(item.get(f.name))
    total = n + len(extra)
    cols.update(stage=[stage.name] * total, shard_id=[shard_id] * total, run_id=[run_id] * total)
    parquet.write(ws.errors_url(table, shard_id),
                  parquet.with_run_metadata(parquet.to_table(cols, schema), **meta))


def _write_stats(ws, stage, table, shard_id, rows_in, data, counts, seconds, started, fp, run_id,
                 meta) -> None:
    from schemas import get

    row = {"stage": [stage.name], "shard_id": [shard_id], "run_id": [run_id],
           "rows_in": [rows_in], "rows_out": [data.num_rows],
           "status_counts": [list(counts.items())], "seconds": [list(seconds.items())],
           "started_at": [started], "host": [socket.gethostname()], "fingerprint": [fp.value]}
    parquet.write(ws.stats_url(table, shard_id),
                  parquet.with_run_metadata(parquet.to_table(row, get("stats")), **meta))
