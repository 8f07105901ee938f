"""The ingest stage: probe every sample of one shard into manifest rows.

In: the shard's planned input rows (``batches.shard_rows``) and the class list. Out: MANIFEST
rows with the probe columns filled and a per-sample ``status`` (ok, missing, empty_file,
unreadable, bad_row, unparsed, empty_window). A bad file is a row, never an exception
(``strict`` makes it a :class:`SampleFault` naming the sample).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline import faults, parquet
from pipeline.ingest import batches
from pipeline.ingest.config import IngestConfig
from pipeline.ingest.probe import probe, window_problem
from pipeline.workspace import Workspace
from schemas import get

FAILED = frozenset({"missing", "empty_file", "unreadable", "bad_row", "unparsed", "empty_window"})
# The manifest columns that say what a sample's media is (not its label or role): the face
# stage depends on these alone, so a relabelled sample does not redo its faces.
MEDIA_COLUMNS = ["sample_id", "video_id", "subject_id", "path", "media", "start", "end",
                 "time_unit", "num_frames", "shard_id", "status"]


def media_view(table: pa.Table) -> pa.Table:
    """The ok rows of a manifest part, restricted to MEDIA_COLUMNS."""
    t = table.select(MEDIA_COLUMNS)
    return t.filter(pa.compute.equal(t.column("status"), "ok")).replace_schema_metadata(None)
PROBE_COLUMNS = ("media", "num_frames", "fps", "width", "height", "size_bytes", "status", "error")


def fingerprint_config(cfg: IngestConfig, classes: tuple[str, ...]) -> dict:
    """The settings that change what an ingest shard writes (paths and sizes do not)."""
    return {"classes": list(classes), "probe": cfg.probe, "media": cfg.media}


class SampleFault(RuntimeError):
    """A per-sample fault under --strict."""


class IngestStage:
    name = "ingest"
    outputs = ("manifest",)
    failure_statuses = FAILED

    def __init__(self, cfg: IngestConfig, classes: tuple[str, ...], num_threads: int | None = None,
                 strict: bool = False):
        self.cfg = cfg
        self.classes = tuple(classes)  # label_index is the label's position here
        del num_threads  # probing runs no torch; the argument is part of the stage protocol
        self.strict = strict  # abort on the first bad sample instead of writing its row

    def schema(self, table: str) -> pa.Schema:
        return get("manifest")

    def view_digests(self, table: str, data: pa.Table) -> dict[str, str]:
        """The digest the face stage fingerprints on, kept in the marker so that planning
        downstream reads no manifest part."""
        return {"media": parquet.digest(media_view(data))}

    def load(self, ws: Workspace, shard_id: str) -> dict[str, np.ndarray]:
        df = batches.shard_rows(ws, shard_id)
        return {c: df[c].to_numpy(dtype=object) for c in df.columns}

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, dict]:
        out = {k: list(v) for k, v in rows.items()}
        n = len(out["sample_id"])
        for col in PROBE_COLUMNS:
            out.setdefault(col, [None] * n)
        index = {c: i for i, c in enumerate(self.classes)}
        out["label_index"] = [index.get(v) if isinstance(v, str) else None for v in out["label"]]
        for i in range(n):
            if i == n // 2:
                faults.maybe_fail("mid_shard", f"{self.name}/{out['shard_id'][i]}")
            if out["status"][i] != "ok":
                continue  # rows that failed to parse stay as they are
            result = probe(out["path"][i], out["media"][i], read_header=self.cfg.probe)
            if result["status"] == "ok":
                problem = window_problem(out["path"][i], out["start"][i], out["end"][i],
                                         out["time_unit"][i], result["num_frames"])
                if problem is not None:
                    result = {**result, "status": "empty_window", "error": problem}
            if self.strict and result["status"] != "ok":
                raise SampleFault(f"--strict: sample {out['sample_id'][i]!r} is "
                                  f"{result['status']}: {result['error']}")
            for col in PROBE_COLUMNS:
                out[col][i] = result[col]
        return {"manifest": out}
