"""The workspace: one root (``--out``) reused across invocations, a folder per table.

In: a root URL. Out: the paths of every table part, done marker, error and statistics file,
and readers that return only committed data. Layout::

    OUT/runs/<run_id>/config.yaml                  resolved config of each invocation
    OUT/<table>/part-<unit>.<attempt>.parquet      data of one unit of work (a shard, a model,
    OUT/<table>/_done/<unit>.json                  ...) and its done marker (table: manifest,
                                                   faces, embeddings/<backbone id>, ...)
    OUT/manifest/_plan/<batch>.parquet             ingest batches: which sample is in which shard
    OUT/errors/<table>/part-<unit>.<attempt>.parquet   failed rows of that unit
    OUT/stats/<table>/part-<unit>.<attempt>.parquet    its statistics

Every attempt at a unit writes files named by the attempt; the done marker, written last
and atomically, names the files that count. A reader (and every decision about what to do)
goes through the markers only, so the files of an unfinished attempt are never read and a
committed attempt's files are never overwritten. Superseded files are removed after the
marker that replaces them is written.
"""

from __future__ import annotations

import datetime as _dt
import json
import secrets

import pyarrow as pa

from pipeline import io, parquet

SIDE = ("errors", "stats")  # side tables written beside every table's data
NESTED = ("embeddings", "text_features")  # tables named per backbone: <name>/<backbone id>


def new_run_id() -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{now}-{secrets.token_hex(3)}"


def new_attempt() -> str:
    """A unique, sortable name for one attempt at a unit of work."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    return f"a{now}{secrets.token_hex(2)}"


class Workspace:
    def __init__(self, root: str):
        self.root = io.absolute(root) if io.is_local(root) else root.rstrip("/")

    def url(self, *parts: str) -> str:
        return io.join(self.root, *parts)

    # ---- where an attempt writes, and where a committed unit's files are
    def attempt_files(self, table: str, unit: str, attempt: str) -> dict[str, str]:
        """Names (relative to the root) of the data, errors and stats files of one attempt."""
        name = f"part-{unit}.{attempt}.parquet"
        return {"data": f"{table}/{name}", "errors": f"errors/{table}/{name}",
                "stats": f"stats/{table}/{name}"}

    def files(self, table: str, unit: str, marker: dict | None = None) -> dict[str, str]:
        """URLs of the committed data, errors and stats files of a done unit."""
        marker = self.read_marker(table, unit) if marker is None else marker
        if marker is None:
            raise FileNotFoundError(f"{table}: unit {unit!r} is not done in {self.root}")
        return {kind: self.url(*rel.split("/")) for kind, rel in marker["files"].items()}

    def part_url(self, table: str, unit: str) -> str:
        return self.files(table, unit)["data"]

    def errors_url(self, table: str, unit: str) -> str:
        return self.files(table, unit)["errors"]

    def stats_url(self, table: str, unit: str) -> str:
        return self.files(table, unit)["stats"]

    def marker_url(self, table: str, unit: str) -> str:
        return self.url(table, "_done", f"{unit}.json")

    # ---- markers
    # A unit's done marker lives in its primary (first) output table's ``_done`` folder and
    # carries the entries of its other tables under "tables": that one file is the commit
    # point of the whole unit. Each other table's ``_done/<unit>.json`` holds only a pointer
    # to it ({"commit": <primary table>}), so every table of a unit flips at once.
    def _read_raw(self, table: str, unit: str) -> dict | None:
        url = self.marker_url(table, unit)
        try:
            return json.loads(io.read_text(url))
        except FileNotFoundError:
            return None

    def read_marker(self, table: str, unit: str) -> dict | None:
        """The committed entry of ``table`` for ``unit`` (None: not done)."""
        raw = self._read_raw(table, unit)
        if raw is None or "commit" not in raw:
            return raw
        record = self._read_raw(raw["commit"], unit)
        return (record or {}).get("tables", {}).get(table)

    def _markers_raw(self, table: str) -> dict[str, dict]:
        fs, path = io.fs_and_path(self.url(table, "_done"))
        if not fs.exists(path):
            return {}
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
        wanted = [f"{path}/{n}" for n in sorted(names)
                  if n.endswith(".json") and not n.startswith(io.TMP_PREFIX)]
        if not wanted:
            return {}
        data = fs.cat(wanted)  # concurrent on object stores
        if isinstance(data, bytes):  # fsspec returns bytes, not a dict, for one path
            data = {wanted[0]: data}
        return {p.rsplit("/", 1)[-1][: -len(".json")]: json.loads(data[p].decode())
                for p in wanted}

    def markers(self, table: str) -> dict[str, dict]:
        """Committed entries of a table, by unit id: one fresh listing and one batched read
        (plus one for the primary table of units committed elsewhere)."""
        raw = self._markers_raw(table)
        primaries = {m["commit"] for m in raw.values() if "commit" in m}
        records = {p: self._markers_raw(p) for p in primaries}
        out = {}
        for unit, m in raw.items():
            if "commit" in m:
                m = records[m["commit"]].get(unit, {}).get("tables", {}).get(table)
            if m is not None:
                out[unit] = m
        return out

    def commit(self, unit: str, entries: dict[str, dict], previous: dict[str, dict | None]) -> None:
        """Commit one unit's tables at once: pointers for the other tables first, then the
        primary table's marker (the commit point), then remove the files of the attempts
        it replaces. ``entries``: table -> marker, primary first."""
        primary, *others = list(entries)
        for table in others:
            pointer = {"commit": primary, "unit": unit}
            if self._read_raw(table, unit) != pointer:
                io.write_text_atomic(self.marker_url(table, unit), json.dumps(pointer))
        record = {**entries[primary], **({"tables": {t: entries[t] for t in others}} if others else {})}
        io.write_text_atomic(self.marker_url(primary, unit), json.dumps(record, indent=1))
        io.remove(self.failure_url(primary, unit))  # an earlier failure is over
        keep = {rel for e in entries.values() for rel in e["files"].values()}
        for old in previous.values():
            for rel in (old or {}).get("files", {}).values():
                if rel not in keep:
                    io.remove(self.url(*rel.split("/")))
                    folder = rel.rsplit("/", 1)[0]
                    if folder.rsplit("/", 1)[-1].startswith(f"{unit}.a"):  # an extra file's folder
                        io.remove(self.url(*folder.split("/")))

    def failure_url(self, table: str, unit: str) -> str:
        return self.url(table, "_failed", f"{unit}.json")

    def record_failure(self, table: str, unit: str, info: dict) -> None:
        """Note that the last attempt at ``unit`` failed (what `autt status` lists); the
        unit's next commit removes the note."""
        io.write_text_atomic(self.failure_url(table, unit), json.dumps(info, indent=1),
                             fault_hook=False)

    def failures(self, table: str) -> dict[str, dict]:
        """Units of ``table`` whose last attempt failed and that are not committed since."""
        folder = self.url(table, "_failed")
        out = {}
        for name in sorted(io.listdir(folder)) if io.isdir(folder) else []:
            if name.endswith(".json") and not name.startswith(io.TMP_PREFIX):
                out[name[:-len(".json")]] = json.loads(io.read_text(io.join(folder, name)))
        return out

    def remove_orphans(self, table: str, unit: str, keep: dict | None) -> None:
        """Remove files of earlier attempts at ``unit`` that no marker names (an attempt
        that died before its commit)."""
        named = set((keep or {}).get("files", {}).values())
        named |= {rel.rsplit("/", 1)[0] for rel in named}  # folders of extra files
        for folder in (table, f"errors/{table}", f"stats/{table}"):
            fs, path = io.fs_and_path(self.url(*folder.split("/")))
            found = fs.glob(f"{path}/part-{unit}.a*.parquet")
            if folder == table:
                found += [p for p in fs.glob(f"{path}/{unit}.a*") if fs.isdir(p)]
            for p in found:
                if f"{folder}/{p.rstrip('/').rsplit('/', 1)[-1]}" not in named:
                    fs.rm(p, recursive=True)

    def tables(self) -> list[str]:
        """Every table folder holding done markers (one level of nesting, like
        embeddings/<id>), found with a few listings, not a walk over every part."""
        found = []
        for name in io.listdir(self.root):
            if name in SIDE or name == "runs":
                continue
            if name in NESTED:
                found += [f"{name}/{sub}" for sub in io.listdir(self.url(name))
                          if io.exists(self.url(name, sub, "_done"))]
            elif io.exists(self.url(name, "_done")):
                found.append(name)
        return sorted(found)

    # ---- readers (committed units only)
    def read_table(self, table: str, schema: pa.Schema | None = None,
                   columns: list[str] | None = None, shards: list[str] | None = None,
                   filters=None) -> pa.Table:
        """All committed parts of ``table`` concatenated (optionally only some units, some
        columns, rows matching pyarrow ``filters``)."""
        done = self.markers(table)
        ids = sorted(done) if shards is None else [s for s in shards if s in done]
        parts = [parquet.read(self.files(table, s, done[s])["data"], columns=columns,
                              filters=filters) for s in ids]
        return _concat(parts, schema, columns)

    def read_side_table(self, kind: str, table: str, schema: pa.Schema) -> pa.Table:
        """The errors or stats rows of the committed units of ``table``. Parts written under
        an older version of ``schema`` read back with its newer (nullable) columns null."""
        done = self.markers(table)
        urls = [self.files(table, s, m)[kind] for s, m in sorted(done.items())]
        return _concat([_with_new_columns(parquet.read(u), schema) for u in urls], schema, None)


def _with_new_columns(part: pa.Table, schema: pa.Schema) -> pa.Table:
    """``part`` with every nullable column of ``schema`` it lacks added as nulls (a side
    table written before that column existed); anything else that differs is left for the
    concatenation to refuse."""
    for f in schema:
        if f.name not in part.schema.names and f.nullable:
            part = part.append_column(f, pa.nulls(part.num_rows, f.type))
    return part.select([n for n in schema.names if n in part.schema.names])


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
