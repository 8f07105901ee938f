"""Parquet in and out, always against an explicit schema.

In: column dicts (numpy arrays or lists) plus a declared ``pyarrow.Schema``.
Out: ``pa.Table`` objects and Parquet files that carry run metadata (schema version, run
id, config hash, code version). Nothing here infers a type: a value that does not fit its
declared column raises, naming the column.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import io


def _column(values, field: pa.Field) -> pa.Array:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.cast(field.type) if values.type != field.type else values
    t = field.type
    if pa.types.is_fixed_size_list(t):
        arr = np.asarray(values)
        if arr.dtype == object:  # rows that may be None
            return pa.array(list(values), type=t)
        width = t.list_size
        if arr.ndim != 2 or arr.shape[1] != width:
            raise ValueError(f"column {field.name!r}: expected shape (n, {width}), got {arr.shape}")
        flat = pa.array(arr.reshape(-1).astype(t.value_type.to_pandas_dtype()), type=t.value_type)
        # A row that is entirely NaN means "no value" (e.g. no box): store it as null.
        missing = np.isnan(arr).all(axis=1) if arr.dtype.kind == "f" and width else None
        if missing is not None and missing.any():
            return pa.FixedSizeListArray.from_arrays(flat, width, mask=pa.array(missing))
        return pa.FixedSizeListArray.from_arrays(flat, width)
    if isinstance(values, np.ndarray) and values.dtype != object:
        return pa.array(values, type=t, from_pandas=values.dtype.kind == "f")
    return pa.array(list(values), type=t, from_pandas=True)


def to_table(columns: Mapping[str, object], schema: pa.Schema) -> pa.Table:
    """Build a table with exactly ``schema``'s columns (extra keys are an error)."""
    extra = set(columns) - set(schema.names)
    if extra:
        raise ValueError(f"columns {sorted(extra)} are not in the {schema_name(schema)} schema")
    n = None
    arrays = []
    for field in schema:
        if field.name in columns:
            try:
                arr = _column(columns[field.name], field)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
                raise ValueError(f"column {field.name!r} does not fit {field.type}: {exc}") from exc
        else:
            if n is None:
                n = len(next(iter(columns.values()))) if columns else 0
            if not field.nullable:
                raise ValueError(f"required column {field.name!r} of the {schema_name(schema)} table "
                                 "is missing")
            arr = pa.nulls(n, type=field.type)
        if n is None:
            n = len(arr)
        elif len(arr) != n:
            raise ValueError(f"column {field.name!r} has {len(arr)} rows, expected {n}")
        arrays.append(arr)
    for field, arr in zip(schema, arrays):
        if not field.nullable and arr.null_count:
            raise ValueError(f"column {field.name!r} of the {schema_name(schema)} table is declared "
                             f"non-null but has {arr.null_count} null value(s)")
    table = pa.Table.from_arrays(arrays, schema=schema)
    table.validate()
    return table


def schema_name(schema: pa.Schema) -> str:
    meta = schema.metadata or {}
    return meta.get(b"autt.table", b"?").decode()


def with_run_metadata(table: pa.Table, **meta: str) -> pa.Table:
    """Attach run metadata (string values) to the table's schema metadata."""
    merged = dict(table.schema.metadata or {})
    for key, value in meta.items():
        merged[f"autt.{key}".encode()] = str(value).encode()
    return table.replace_schema_metadata(merged)


def write(url: str, table: pa.Table) -> None:
    """Write ``table`` to ``url`` atomically (temporary name, then rename)."""
    buf = _io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    io.write_bytes_atomic(url, buf.getvalue())


def read(url: str, columns: list[str] | None = None, filters=None) -> pa.Table:
    """One Parquet file, optionally projected to ``columns`` and filtered by pyarrow
    ``filters`` (e.g. ``[("subject_id", "in", [...])]``) while reading."""
    fs, path = io.fs_and_path(url)
    return io.retry(f"read {url}", pq.read_table, path, filesystem=fs, columns=columns,
                    filters=filters)


def metadata(url: str) -> dict[str, str]:
    fs, path = io.fs_and_path(url)
    with fs.open(path, "rb") as f:
        meta = pq.read_schema(f).metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items()}


def digest(table: pa.Table) -> str:
    """Content digest of a table's data (not its metadata): stable across runs."""
    h = hashlib.sha256()
    h.update(json.dumps(table.schema.names).encode())
    plain = table.replace_schema_metadata(None)
    for batch in plain.combine_chunks().to_batches():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()[:32]
