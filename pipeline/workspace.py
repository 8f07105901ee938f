"""The workspace: one root (``--out``) reused across invocations, a folder per table.

In: a root URL. Out: the paths of every table part, done marker, error and statistics file,
and readers that return only finished data. Layout::

    OUT/runs/<run_id>/config.yaml         resolved config of each invocation
    OUT/<table>/part-<shard>.parquet      data of one shard (table: manifest, faces,
    OUT/<table>/_done/<shard>.json        embeddings/<backbone id>, ...) and its done marker
    OUT/manifest/_plan/<batch>.parquet    ingest batches: which sample is in which shard
    OUT/errors/<table>/part-<shard>.parquet   failed rows of that shard
    OUT/stats/<table>/part-<shard>.parquet    per-shard statistics

A shard's data counts only once its done marker exists; the marker is written last.
"""

from __future__ import annotations

import datetime as _dt
import json
import secrets

import pyarrow as pa

from pipeline import io, parquet


def new_run_id() -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{now}-{secrets.token_hex(3)}"


class Workspace:
    def __init__(self, root: str):
        self.root = io.absolute(root) if io.is_local(root) else root.rstrip("/")

    def url(self, *parts: str) -> str:
        return io.join(self.root, *parts)

    # ---- table parts and markers
    def part_url(self, table: str, shard_id: str) -> str:
        return self.url(table, f"part-{shard_id}.parquet")

    def marker_url(self, table: str, shard_id: str) -> str:
        return self.url(table, "_done", f"{shard_id}.json")

    def errors_url(self, table: str, shard_id: str) -> str:
        return self.url("errors", table, f"part-{shard_id}.parquet")

    def stats_url(self, table: str, shard_id: str) -> str:
        return self.url("stats", table, f"part-{shard_id}.parquet")

    def read_marker(self, table: str, shard_id: str) -> dict | None:
        url = self.marker_url(table, shard_id)
        if not io.exists(url):
            return None
        return json.loads(io.read_text(url))

    def markers(self, table: str) -> dict[str, dict]:
        """Done markers of a table, by shard id."""
        folder = self.url(table, "_done")
        fs, path = io.fs_and_path(folder)
        if not fs.exists(path):
            return {}
        out = {}
        for p in sorted(fs.ls(path, detail=False)):
            name = p.rstrip("/").rsplit("/", 1)[-1]
            if name.endswith(".json") and not name.startswith(io.TMP_PREFIX):
                with fs.open(p, "rb") as f:
                    out[name[: -len(".json")]] = json.loads(f.read().decode())
        return out

    def write_marker(self, table: str, shard_id: str, marker: dict) -> None:
        io.write_text_atomic(self.marker_url(table, shard_id), json.dumps(marker, indent=1))

    def tables(self) -> list[str]:
        """Every table folder holding done markers (nested ones like embeddings/<id> too)."""
        fs, path = io.fs_and_path(self.root)
        if not fs.exists(path):
            return []
        found = []
        for p in fs.find(path, withdirs=True, maxdepth=4):
            if p.rstrip("/").endswith("/_done"):
                rel = p.rstrip("/")[len(path.rstrip("/")) + 1 : -len("/_done")]
                if not rel.startswith(("errors", "stats")):
                    found.append(rel)
        return sorted(found)

    # ---- readers (finished shards only)
    def read_table(self, table: str, schema: pa.Schema | None = None,
                   columns: list[str] | None = None, shards: list[str] | None = None) -> pa.Table:
        """All done parts of ``table`` concatenated (optionally only some shards)."""
        done = self.markers(table)
        ids = sorted(done) if shards is None else [s for s in shards if s in done]
        parts = [parquet.read(self.part_url(table, s), columns=columns) for s in ids]
        return _concat(parts, schema, columns)

    def read_side_table(self, kind: str, table: str, schema: pa.Schema) -> pa.Table:
        """The errors or stats rows of the done shards of ``table``."""
        done = self.markers(table)
        urls = [self.errors_url(table, s) if kind == "errors" else self.stats_url(table, s)
                for s in sorted(done)]
        return _concat([parquet.read(u) for u in urls if io.exists(u)], schema, None)


def _concat(parts: list[pa.Table], schema: pa.Schema | None, columns: list[str] | None) -> pa.Table:
    if not parts:
        if schema is None:
            raise FileNotFoundError("no finished parts and no schema to build an empty table")
        empty = schema.empty_table()
        return empty.select(columns) if columns else empty
    parts = [p.replace_schema_metadata(None) for p in parts]
    table = pa.concat_tables(parts)
    if schema is not None:
        meta = schema.metadata
        table = table.replace_schema_metadata(meta)
    return table
