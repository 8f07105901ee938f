"""Explicit, versioned Arrow schemas of every table the pipeline writes.

In: a table name (and, for embeddings, the vector width and dtype). Out: a
``pyarrow.Schema`` whose metadata carries ``autt.table`` and ``autt.schema_version``.
Writers never infer a schema: they cast to one of these and fail on a mismatch.
Key columns are named the same in every table: ``sample_id``, ``video_id``,
``subject_id``, ``label``, ``status``, ``error``.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.results import RESULT_TABLES
from schemas.tables import (
    EMBEDDINGS_VERSION,
    TABLES,
    TEXT_FEATURES_VERSION,
    embeddings_schema,
    text_features_schema,
)

__all__ = ["EMBEDDINGS_VERSION", "TEXT_FEATURES_VERSION", "TABLES", "embeddings_schema",
           "text_features_schema", "get", "check", "SchemaError"]


class SchemaError(ValueError):
    """A table does not conform to its declared schema."""


def get(name: str) -> pa.Schema:
    """The schema of a fixed-width table (everything but embeddings)."""
    known = {**TABLES, **RESULT_TABLES}
    if name not in known:
        raise KeyError(f"unknown table {name!r}; known: {sorted(known)}")
    return known[name]


def check(table: pa.Table, schema: pa.Schema) -> None:
    """Raise SchemaError naming the first column that differs from ``schema``."""
    got = [f.name for f in table.schema]
    want = [f.name for f in schema]
    if got != want:
        raise SchemaError(f"columns {got} != declared {want}")
    for field in schema:
        actual = table.schema.field(field.name)
        if actual.type != field.type:
            raise SchemaError(f"column {field.name!r} has type {actual.type}, declared {field.type}")
        if not field.nullable and table.column(field.name).null_count:
            raise SchemaError(f"column {field.name!r} is declared non-null but has nulls")
