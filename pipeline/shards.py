"""Units of work (ingest shards, and the units built on them): fingerprinted, resumable,
idempotent, committed atomically.

In: a stage object (see :class:`ShardStage`), a workspace, unit ids and their fingerprints.
Out: per unit and output table, one attempt's data part, error rows and statistics row,
then a done marker that names those files and carries the fingerprint (the commit point).

Rules (decided by ``pipeline.planning`` from the markers; this module carries them out):
a unit whose marker has the same fingerprint is skipped; one whose config or inputs
changed is refused (``StageChanged`` names what changed) unless ``recompute``; a done unit
with failed rows is re-run for those samples only when ``retry_failed``, and a unit whose
inputs changed because upstream rows were retried is redone (incremental stages redo only
the samples whose input rows changed). A code version change alone is reported and the
unit is kept (use ``recompute`` to redo it). What to redo is decided only from committed
state: the markers and the files they name, never files of an unfinished attempt.
"""

from __future__ import annotations

import datetime as _dt
import logging
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa

from pipeline import faults, parquet
from pipeline.planning import Fingerprint
from pipeline.workspace import Workspace, new_attempt
from schemas import check

log = logging.getLogger(__name__)


# A stage may return, beside its tables, failed items that have no row in them (e.g. a
# sample whose media could not be re-read): columns of the errors table, as a list charged
# to the stage's primary table, or as {table: list} (its status counts, errors, retries).
ERRORS_KEY = "_errors"
# A stage may also return, per output table, a digest of each sample's input rows
# ({table: {sample_id: digest}}); the marker keeps them, so that an incremental rerun
# redoes exactly the samples whose input rows changed.
INPUT_SAMPLES_KEY = "_input_samples"
# A stage may also return files beside a table's rows ({table: {name: writer}}): each
# ``writer(url)`` writes one file or folder at ``url``, under this attempt's name, and the
# marker names it like the table's parts (e.g. a trained model's checkpoint folder).
FILES_KEY = "_files"


class StrictAbort(RuntimeError):
    """--strict: a sample failed; nothing of its unit is committed."""


class MixedNumerics(RuntimeError):
    """A unit would add vectors computed another way (device, precision) to a table."""


class ShardStage(Protocol):
    """What :func:`execute` needs from a stage (tests call it without Ray)."""

    name: str  # stage name in stats and errors, e.g. "faces"
    outputs: tuple[str, ...]  # tables written, committed in this order; outputs[0] is primary
    failure_statuses: frozenset[str]  # statuses that count as failed (go to errors/)

    def schema(self, table: str) -> pa.Schema: ...
    def load(self, ws: Workspace, shard_id: str) -> dict[str, np.ndarray]: ...
    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, dict | pa.Table]: ...

    # Optional:
    # ``metadata(table) -> dict[str, str]``: extra Parquet metadata for a table;
    # ``redo(ws, shard_id, rows, committed, mode) -> set[str]``: the samples a ``retry`` or
    #     ``delta`` attempt redoes, from the committed markers (default: the failed samples
    #     of the primary table's committed errors file);
    # ``view_digests(table, data) -> dict[str, str]``: digests of views of the output that
    #     downstream stages fingerprint on (kept in the marker, so planning reads no part);
    # ``numerics(table) -> str | None``: how the table's vectors were computed.


def local_node_id() -> str:
    """The node id recorded for work done outside Ray: stable for a machine (its host name)."""
    return f"local:{socket.gethostname()}"


@dataclass
class _Open:
    """One unit between loading its inputs and committing its outputs."""

    shard_id: str
    mode: str
    started: _dt.datetime
    attempt: str
    seconds: dict
    committed: dict
    rows: dict
    rows_in: int
    kept: dict
    redo: set | None


def _open(ws: Workspace, stage: ShardStage, shard_id: str, mode: str) -> _Open:
    """Clear what earlier attempts left, then load the unit's inputs (only the samples to
    redo in ``retry``/``delta`` modes, the others kept as committed)."""
    faults.maybe_fail("shard_start", f"{stage.name}/{shard_id}")
    started = _dt.datetime.now(_dt.timezone.utc)
    t = time.perf_counter()
    committed = {table: ws.read_marker(table, shard_id) for table in stage.outputs}
    for table in stage.outputs:
        ws.remove_orphans(table, shard_id, keep=committed[table])
    rows = stage.load(ws, shard_id)
    rows_in = len(rows["sample_id"])  # every stage's input has one
    kept: dict[str, pa.Table] = {}
    redo: set[str] | None = None
    if mode in ("retry", "delta"):
        redo = _redo_set(ws, stage, shard_id, rows, committed, mode)
        rows, kept = _split(ws, stage, shard_id, rows, committed, redo)
    return _Open(shard_id, mode, started, new_attempt(), {"load": time.perf_counter() - t},
                 committed, rows, rows_in, kept, redo)


def execute(ws: Workspace, stage: ShardStage, shard_id: str, fingerprints: dict[str, Fingerprint],
            mode: str, run_id: str, strict: bool = False, node_id: str | None = None) -> dict:
    """Run one unit end to end and commit it. Returns the summary recorded in its markers.

    ``fingerprints`` maps each output table to its fingerprint. In ``retry`` and ``delta``
    modes only the samples named by ``redo`` (from committed state) are processed again;
    the other samples' rows are kept as committed. Every table's files are written under
    this attempt's names first; the markers come last, in ``stage.outputs`` order.
    ``strict``: a failed sample aborts the unit (``StrictAbort``) before anything commits.
    ``node_id``: where this runs, for the statistics (the caller knows; default
    :func:`local_node_id`).
    """
    unit = _open(ws, stage, shard_id, mode)
    t = time.perf_counter()
    produced = stage(unit.rows)
    unit.seconds["process"] = time.perf_counter() - t
    return _close(ws, stage, unit, produced, fingerprints, run_id, strict, node_id)


def execute_group(ws: Workspace, stage: ShardStage, shard_ids: list[str],
                  fingerprints: dict[str, dict[str, Fingerprint]], modes: dict[str, str],
                  run_id: str, strict: bool = False,
                  node_id: str | None = None) -> dict[str, dict | Exception]:
    """Several units a stage computes together (``stage.batch(list of rows)`` -> list of
    outputs, e.g. several subjects through one forward). Each unit still loads, writes and
    commits on its own, exactly as ``execute`` does; per unit: its summary, or the exception
    that stopped it. If the shared computation raises, every unit is computed on its own,
    so a bad unit fails alone. A stage without ``batch`` runs its units one by one."""
    out: dict[str, dict | Exception] = {}
    if not hasattr(stage, "batch") or len(shard_ids) == 1:
        for u in shard_ids:
            try:
                out[u] = execute(ws, stage, u, fingerprints[u], modes[u], run_id, strict, node_id)
            except Exception as exc:  # noqa: BLE001  (reported per unit by the caller)
                out[u] = exc
        return out
    opened: list[_Open] = []
    for u in shard_ids:
        try:
            opened.append(_open(ws, stage, u, modes[u]))
        except Exception as exc:  # noqa: BLE001
            out[u] = exc
    t = time.perf_counter()
    try:
        together = stage.batch([unit.rows for unit in opened]) if opened else []
    except Exception as exc:  # noqa: BLE001  (one at a time below)
        log.warning("%s: units %s computed together failed (%s: %s); computing them one by one",
                    stage.name, ", ".join(u.shard_id for u in opened), type(exc).__name__, exc)
        together = None
    share = (time.perf_counter() - t) / max(1, len(opened))
    for i, unit in enumerate(opened):
        try:
            if together is None:
                t = time.perf_counter()
                produced = stage(unit.rows)
                unit.seconds["process"] = time.perf_counter() - t
            else:
                produced, unit.seconds["process"] = together[i], share
            out[unit.shard_id] = _close(ws, stage, unit, produced, fingerprints[unit.shard_id],
                                        run_id, strict, node_id)
        except Exception as exc:  # noqa: BLE001
            out[unit.shard_id] = exc
    return {u: out[u] for u in shard_ids}


def _close(ws: Workspace, stage: ShardStage, unit: _Open, produced: dict,
           fingerprints: dict[str, Fingerprint], run_id: str, strict: bool,
           node_id: str | None = None) -> dict:
    """Write every table of the unit under its attempt's names, then commit them at once."""
    node_id = node_id or local_node_id()
    shard_id, mode, seconds, committed = unit.shard_id, unit.mode, unit.seconds, unit.committed
    rows, rows_in, kept, redo = unit.rows, unit.rows_in, unit.kept, unit.redo
    started, attempt, where = unit.started, unit.attempt, f"{stage.name}/{shard_id}"
    extra_errors = produced.pop(ERRORS_KEY, None) or []
    if not isinstance(extra_errors, dict):
        extra_errors = {stage.outputs[0]: extra_errors}
    input_samples = produced.pop(INPUT_SAMPLES_KEY, None) or {}
    extra_files = produced.pop(FILES_KEY, None) or {}
    if strict:
        _abort_on_failure(stage, produced, extra_errors)

    t = time.perf_counter()
    summaries = {}
    produced_digests: dict[str, str] = {}
    for table in stage.outputs:
        schema = stage.schema(table)
        data = _as_table(produced[table], schema)
        if table in kept:
            data = pa.concat_tables([kept[table].cast(schema), data])
            data = data.take(_sort_keys(data))
        counts = Counter(data.column("status").to_pylist()) if "status" in schema.names else Counter()
        extra = extra_errors.get(table, [])
        counts.update(e["status"] for e in extra)
        out_digest = parquet.digest(data)
        produced_digests[table] = out_digest
        fp = resolve(fingerprints[table], produced_digests)
        numerics = stage.numerics(table) if hasattr(stage, "numerics") else None
        if fp.numerics is not None and numerics is not None and numerics not in fp.numerics:
            raise MixedNumerics(
                f"{table}: unit {shard_id} would compute its vectors as {numerics}, but the table's "
                f"done units were computed as {', '.join(fp.numerics)}; set "
                "embed.mixed_numerics=true to allow mixing them, or use --recompute")
        meta = {"schema_version": (schema.metadata or {}).get(b"autt.schema_version", b"?").decode(),
                "run_id": run_id, "config_hash": fp.config_hash, "code_version": fp.code_version,
                "shard_id": shard_id, "stage": stage.name, "attempt": attempt,
                **(stage.metadata(table) if hasattr(stage, "metadata") else {})}
        files = ws.attempt_files(table, shard_id, attempt)
        for name, writer in extra_files.get(table, {}).items():
            files[name] = f"{table}/{shard_id}.{attempt}/{name}"
            writer(ws.url(*files[name].split("/")))
        parquet.write(ws.url(*files["data"].split("/")), parquet.with_run_metadata(data, **meta))
        _write_errors(ws, stage, files["errors"], shard_id, data, extra, run_id, meta)
        _write_stats(ws, stage, files["stats"], shard_id, rows_in, data, counts, seconds, started,
                     fp, run_id, meta, node_id)
        samples = _merge_samples(committed[table], input_samples.get(table), redo)
        summaries[table] = {
            "rows": data.num_rows, "status_counts": dict(counts), "output_digest": out_digest,
            "files": files, "attempt": attempt, "fp": fp,
            **({"view_digests": stage.view_digests(table, data)} if hasattr(stage, "view_digests")
               else {}),
            **({"numerics": numerics} if numerics is not None else {}),
            **({"input_samples": samples} if samples is not None else {})}
    seconds["write"] = time.perf_counter() - t
    faults.maybe_fail("before_done", where)
    entries = {}
    for table, s in summaries.items():
        fp = s.pop("fp")
        entries[table] = {
            "table": table, "shard_id": shard_id, "stage": stage.name, "mode": mode,
            "fingerprint": fp.value, "config_hash": fp.config_hash, "config": fp.config,
            "inputs": fp.inputs, "code_version": fp.code_version, "run_id": run_id,
            "rows_in": rows_in, "processed": len(rows["sample_id"]), "seconds": seconds,
            "failure_statuses": sorted(stage.failure_statuses),
            "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(), **s}
    ws.commit(shard_id, entries, previous=committed)  # every table of the unit at once
    return {"shard_id": shard_id, "rows_in": rows_in, "processed": len(rows["sample_id"]),
            "seconds": seconds, "mode": mode, "node_id": node_id,
            "tables": {t: {"rows": s["rows"], "status_counts": s["status_counts"]}
                       for t, s in summaries.items()}}


def resolve(fp: Fingerprint, produced: dict[str, str]) -> Fingerprint:
    """Replace ``@table`` inputs by the digest of that table as written in this run (a
    fused shard fingerprints its embeddings on the faces it has just produced)."""
    if not any(str(v).startswith("@") for v in fp.inputs.values()):
        return fp
    inputs = {k: produced[v[1:]] if str(v).startswith("@") else v for k, v in fp.inputs.items()}
    return Fingerprint(config=fp.config, inputs=inputs, code_version=fp.code_version,
                       numerics=fp.numerics)


def _as_table(data, schema: pa.Schema) -> pa.Table:
    """Every output is checked against its declared schema, however the stage built it."""
    if isinstance(data, pa.Table):
        data = data.replace_schema_metadata(schema.metadata)
    else:
        data = parquet.to_table(data, schema)
    check(data, schema)
    return data


def _abort_on_failure(stage: ShardStage, produced: dict, extra: dict[str, list[dict]]) -> None:
    for table in stage.outputs:
        data = produced[table]
        cols = data.select([c for c in ("sample_id", "status", "error") if c in data.column_names]
                           ).to_pydict() if isinstance(data, pa.Table) else data
        statuses = list(cols.get("status", []))
        for i, status in enumerate(statuses):
            if status in stage.failure_statuses:
                error = cols.get("error", [None] * len(statuses))[i]
                raise StrictAbort(f"--strict: sample {cols['sample_id'][i]!r} is {status}: {error}")
        for item in extra.get(table, []):
            raise StrictAbort(f"--strict: sample {item.get('sample_id')!r} is {item['status']}: "
                              f"{item.get('error')}")


def failed_samples(ws: Workspace, table: str, shard_id: str, marker: dict | None) -> set[str]:
    """Samples with failed rows in a committed unit's errors file."""
    if not marker:
        return set()
    errs = parquet.read(ws.files(table, shard_id, marker)["errors"], columns=["sample_id"])
    return set(errs.column("sample_id").to_pylist())


def _redo_set(ws, stage, shard_id, rows, committed, mode) -> set[str]:
    if hasattr(stage, "redo"):
        return set(stage.redo(ws, shard_id, rows, committed, mode))
    primary = stage.outputs[0]
    return failed_samples(ws, primary, shard_id, committed[primary])


def _split(ws, stage, shard_id, rows: dict, committed: dict, redo: set[str]):
    """Rows of the samples to redo, and every table's committed rows of the other samples."""
    mask = np.isin(np.asarray(rows["sample_id"], dtype=object), sorted(redo))
    retry_rows = {k: np.asarray(v)[mask] if len(v) == len(mask) else v for k, v in rows.items()}
    kept = {}
    for table in stage.outputs:
        if committed[table] is None:
            continue
        t = parquet.read(ws.files(table, shard_id, committed[table])["data"]
                         ).replace_schema_metadata(None)
        keep_mask = ~np.isin(np.asarray(t.column("sample_id").to_pylist(), dtype=object),
                             sorted(redo))
        kept[table] = t.filter(pa.array(keep_mask))
    return retry_rows, kept


def _merge_samples(marker: dict | None, new: dict | None, redo: set[str] | None) -> dict | None:
    """Per-sample input digests after this attempt: the kept samples' committed digests
    plus the redone samples' new ones."""
    if new is None:
        return None
    if redo is None or not marker or "input_samples" not in marker:
        return dict(sorted(new.items()))
    merged = {s: d for s, d in marker["input_samples"].items() if s not in redo}
    merged.update(new)
    return dict(sorted(merged.items()))


def _sort_keys(table: pa.Table) -> pa.Array:
    if "sample_id" not in table.schema.names:  # a per-unit table: one row, nothing to order
        return pa.array(range(table.num_rows), pa.int64())
    keys = [("sample_id", "ascending")]
    if "frame_index" in table.schema.names:
        keys.append(("frame_index", "ascending"))
    return pa.compute.sort_indices(table, sort_keys=keys)


def _write_errors(ws, stage, rel: str, shard_id, data: pa.Table, extra: list[dict], run_id: str,
                  meta: dict) -> None:
    """The unit's failed rows: rows of ``data`` with a failure status, plus ``extra`` items
    (in a retry, ``data`` holds the kept rows too, so their failures stay recorded). A
    per-unit table (no ``sample_id``) adds none: its samples' rows say it already."""
    from schemas import get

    schema = get("errors")
    if "status" in data.schema.names and "sample_id" in data.schema.names:
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
    parquet.write(ws.url(*rel.split("/")),
                  parquet.with_run_metadata(parquet.to_table(cols, schema), **meta))


def _write_stats(ws, stage, rel: str, shard_id, rows_in, data, counts, seconds, started, fp, run_id,
                 meta, node_id: str) -> None:
    from schemas import get

    row = {"stage": [stage.name], "shard_id": [shard_id], "run_id": [run_id],
           "rows_in": [rows_in], "rows_out": [data.num_rows],
           "status_counts": [list(counts.items())], "seconds": [list(seconds.items())],
           "started_at": [started], "host": [socket.gethostname()], "fingerprint": [fp.value],
           "node_id": [node_id]}
    parquet.write(ws.url(*rel.split("/")),
                  parquet.with_run_metadata(parquet.to_table(row, get("stats")), **meta))
