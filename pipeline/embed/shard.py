"""The embedding stage as shard work, standalone or fused with the face stage.

In: standalone (``EmbedShard``): the shard's faces rows with a face (ok/filled/carried) and their
manifest rows; crops come from stored PNGs, or are recomputed from the stored boxes
(``recrop``, no detection). Fused (``FusedShard``): the shard's manifest rows; faces are
found and embedded in one pass and crops are never written unless asked.
Out: EMBEDDINGS rows (keys + raw image-tower vector) in ``embeddings/<backbone id>``, and
for the fused pass also the FACES rows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from pipeline import parquet
from pipeline.embed.backbone import load_backbone
from pipeline.embed.config import EmbedConfig
from pipeline.embed.stage import CropStream, EmbedStage
from pipeline.faces.config import FacesConfig
from pipeline.faces.decode import expected_frames
from pipeline.faces.recrop import MediaError, recrop_chunks
from pipeline.faces.shard import (
    FAILED as FACE_FAILED,
)
from pipeline.faces.shard import WITH_FACE, columns, faces_metadata, manifest_input, unpng
from pipeline.faces.stage import FaceStage
from pipeline.faces.table import PngCrops, faces_table
from pipeline.ingest.stage import MEDIA_COLUMNS
from pipeline.shards import ERRORS_KEY, INPUT_SAMPLES_KEY, failed_samples
from pipeline.workspace import Workspace
from schemas import embeddings_schema, get

KEY_COLUMNS = ("sample_id", "video_id", "subject_id", "shard_id", "frame_index", "timestamp")
# Sampled frames (estimated from the probe) of one face stage call in a fused pass: bounds
# its per-call state (rows, detections); crops are never held beyond a chunk and a batch.
GROUP_FRAMES = 1024
UNKNOWN_FRAMES = 256  # assumed for a sample whose frame count the probe did not read


def table_name(backbone_id: str) -> str:
    return f"embeddings/{backbone_id}"


# The faces columns an embedding depends on: a sample whose rows differ here is re-embedded.
DIGEST_COLUMNS = ("frame_index", "source_frame", "timestamp", "box", "landmarks", "status")


def faces_input(ws: Workspace, shard_id: str, marker: dict | None = None) -> pa.Table:
    """The committed faces rows of a shard that have a face (ok, filled or carried)."""
    t = parquet.read(ws.files("faces", shard_id, marker)["data"])
    return with_face(t)


def with_face(t: pa.Table) -> pa.Table:
    return t.filter(pa.compute.is_in(t.column("status"), pa.array(WITH_FACE))
                    ).replace_schema_metadata(None)


def sample_digests(faces: pa.Table) -> dict[str, str]:
    """Per sample, a digest of its face rows' DIGEST_COLUMNS (rows with a face only), from
    the values alone, so that a table as produced and as read back give the same digests."""
    faces = with_face(faces)
    values = {c: faces.column(c).to_pylist() for c in ("sample_id", *DIGEST_COLUMNS)}
    rows: dict[str, list] = {}
    for i, sample in enumerate(values["sample_id"]):
        rows.setdefault(str(sample), []).append([_plain(values[c][i]) for c in DIGEST_COLUMNS])
    return {s: hashlib.sha256(json.dumps(r).encode()).hexdigest()[:16] for s, r in rows.items()}


def _plain(value):
    """JSON-able, type-independent form of a cell (float32 lists rounded the same way)."""
    if isinstance(value, list):
        return [None if v is None else float(np.float32(v)) for v in value]
    if isinstance(value, float):
        return float(np.float64(value))
    return value


def embedding_rows(faces: dict[str, np.ndarray], vectors: np.ndarray
                   ) -> tuple[dict[str, object], list[dict]]:
    """Embedding rows, and an ``embed_error`` item per sample with a non-finite vector
    (all of that sample's rows are withheld: a NaN or inf is never stored)."""
    bad = ~np.isfinite(vectors).all(axis=1) if len(vectors) else np.zeros(0, bool)
    errors: list[dict] = []
    if bad.any():
        bad_samples = sorted(set(np.asarray(faces["sample_id"])[bad].tolist()))
        for sample in bad_samples:
            i = int(np.flatnonzero(np.asarray(faces["sample_id"]) == sample)[0])
            n = int((np.asarray(faces["sample_id"])[bad] == sample).sum())
            errors.append({"sample_id": sample, "video_id": faces["video_id"][i],
                           "subject_id": faces["subject_id"][i], "status": "embed_error",
                           "error": f"{n} frame(s) gave a non-finite embedding (NaN or inf)"})
        keep = ~np.isin(np.asarray(faces["sample_id"], dtype=object), bad_samples)
        faces = {k: np.asarray(v)[keep] for k, v in faces.items()}
        vectors = vectors[keep]
    rows: dict[str, object] = {k: faces[k] for k in KEY_COLUMNS}
    rows["embedding"] = vectors
    return rows, errors


class _EmbedBase:
    failure_statuses = FACE_FAILED | {"embed_error"}

    def __init__(self, embed_cfg: EmbedConfig, faces_cfg: FacesConfig, num_threads: int | None):
        self.faces_cfg = faces_cfg
        self.embedder = EmbedStage(embed_cfg, num_threads, backbone=load_backbone(embed_cfg))
        self.table = table_name(self.embedder.backbone.backbone_id)
        self._schema = embeddings_schema(self.embedder.backbone.embed_dim, embed_cfg.dtype)

    def schema(self, table: str) -> pa.Schema:
        return self._schema if table == self.table else get(table)

    def numerics(self, table: str) -> str | None:
        """How the vectors are computed here: device and effective precision."""
        if table != self.table:
            return None
        bb = self.embedder.backbone
        precision = bb.precision if bb.device.type == "cuda" else "fp32"
        return f"{bb.device.type}/{precision}"

    def metadata(self, table: str) -> dict[str, str]:
        """Which backbone, weights and preprocessing made the vectors (embeddings only)."""
        if table == "faces":
            return faces_metadata(self.faces_cfg)
        bb = self.embedder.backbone
        return {"backbone_id": bb.backbone_id, "weights_digest": bb.weights_digest,
                "model": bb.arch, "preprocess": json.dumps(bb.preprocess_info()),
                "embedding_dtype": str(self._schema.field("embedding").type.value_type)}


class EmbedShard(_EmbedBase):
    name = "embed"

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.table,)

    def load(self, ws: Workspace, shard_id: str) -> dict[str, np.ndarray]:
        faces = faces_input(ws, shard_id)
        man = manifest_input(ws, shard_id).to_pandas().set_index("sample_id")
        cols = columns(faces)
        cols["_path"] = man.loc[cols["sample_id"], "path"].to_numpy(dtype=object)
        cols["_media"] = man.loc[cols["sample_id"], "media"].to_numpy(dtype=object)
        digests = sample_digests(faces)
        cols["_digest"] = np.array([digests[s] for s in cols["sample_id"]], dtype=object)
        return cols

    def redo(self, ws: Workspace, shard_id: str, rows: dict, committed: dict, mode: str) -> set[str]:
        """Samples whose committed face rows differ from those their vectors were made from
        (or that have none yet), plus, in a retry, those that failed to embed."""
        marker = committed[self.table]
        made_from = (marker or {}).get("input_samples", {})
        now = dict(zip(rows["sample_id"].tolist(), rows["_digest"].tolist()))
        stale = {s for s, d in now.items() if made_from.get(s) != d} | (set(made_from) - set(now))
        return stale | failed_samples(ws, self.table, shard_id, marker)

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, dict]:
        """Crops per sample (stored PNGs, else re-decoded and cropped from the stored boxes),
        ``chunk_frames`` at a time, embedded as they come (``CropStream``). A sample whose
        media can no longer be read gets an ``embed_error`` row and no vectors; the other
        samples are unaffected."""
        stream = CropStream(self.embedder)
        errors, failed = [], []
        for sample in dict.fromkeys(rows["sample_id"]):
            idx = np.flatnonzero(rows["sample_id"] == sample)
            try:
                for part, crops in self._crops(rows, idx):
                    stream(part, crops)
            except MediaError as exc:
                failed.append(sample)
                errors.append({"sample_id": sample, "video_id": rows["video_id"][idx[0]],
                               "subject_id": rows["subject_id"][idx[0]], "status": "embed_error",
                               "error": f"{rows['_path'][idx[0]]}: {exc}"})
        pos, vectors = stream.finish()
        keep = ~np.isin(rows["sample_id"][pos], np.asarray(failed, dtype=object))
        pos, vectors = pos[keep], vectors[keep]
        emb, errs = embedding_rows({k: rows[k][pos] for k in KEY_COLUMNS}, vectors)
        digests = dict(zip(rows["sample_id"].tolist(), rows["_digest"].tolist()))
        return {self.table: emb, ERRORS_KEY: errors + errs,
                INPUT_SAMPLES_KEY: {self.table: digests}}

    def _crops(self, rows: dict[str, np.ndarray], idx: np.ndarray
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(row positions, crops) of one sample's rows, ``chunk_frames`` at a time."""
        stored = rows["crop"][idx]
        step = self.faces_cfg.chunk_frames
        if all(c is not None for c in stored):
            for lo in range(0, len(idx), step):
                try:
                    crops = np.stack([unpng(c) for c in stored[lo: lo + step]])
                except (OSError, ValueError) as err:
                    raise MediaError(f"stored crop unreadable: {err}") from err
                yield idx[lo: lo + step], crops
            return
        sample_row = {"path": rows["_path"][idx[0]], "media": rows["_media"][idx[0]],
                      "sample_id": rows["sample_id"][idx[0]]}
        face = {k: rows[k][idx] for k in ("frame_index", "source_frame", "box", "landmarks",
                                          "status", "timestamp")}
        for part, crops in recrop_chunks(sample_row, face, self.faces_cfg):
            yield idx[part], crops


class FusedShard(_EmbedBase):
    """Faces and embeddings in one pass: crops stay in memory, GROUP_FRAMES at a time."""

    name = "faces+embed"

    def __init__(self, embed_cfg: EmbedConfig, faces_cfg: FacesConfig, num_threads: int | None):
        super().__init__(embed_cfg, faces_cfg, num_threads)
        self.faces = FaceStage(faces_cfg, num_threads)

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("faces", self.table)

    def load(self, ws: Workspace, shard_id: str) -> dict[str, np.ndarray]:
        """The shard's ok manifest rows (with ``fps``, for the frame estimate of groups)."""
        t = parquet.read(ws.files("manifest", shard_id)["data"], columns=[*MEDIA_COLUMNS, "fps"])
        return columns(t.filter(pa.compute.equal(t.column("status"), "ok")))

    def redo(self, ws: Workspace, shard_id: str, rows: dict, committed: dict, mode: str) -> set[str]:
        """Failed face samples (committed faces errors), plus samples whose embeddings are
        missing, stale against the committed faces, or failed: their faces are recomputed
        (identically) so that their crops are at hand."""
        redo = failed_samples(ws, "faces", shard_id, committed["faces"])
        emb = committed[self.table]
        if committed["faces"] is not None:
            now = sample_digests(faces_input(ws, shard_id, committed["faces"]))
            made_from = (emb or {}).get("input_samples", {})
            redo |= {s for s, d in now.items() if made_from.get(s) != d}
        return redo | failed_samples(ws, self.table, shard_id, emb)

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, dict]:
        """Faces of a group of samples, their crops embedded as the face stage makes them
        (``CropStream``): no crop of a ``no_face`` row and never a whole sample's crops."""
        face_parts, emb_parts, errors = [], [], []
        for idx in frame_groups(self.expected(rows)):
            stream = CropStream(self.embedder)
            pngs = PngCrops() if self.faces_cfg.store_crops else None
            out = self.faces.run({k: v[idx] for k, v in rows.items()}, _tee(stream, pngs))
            pos, vectors = stream.finish()
            keep = np.isin(out["status"][pos], WITH_FACE)  # a sample may fail after its crops
            pos, vectors = pos[keep], vectors[keep]
            if not np.array_equal(pos, np.flatnonzero(np.isin(out["status"], WITH_FACE))):
                raise RuntimeError("fused pass: the face rows and the embedded crops disagree")
            emb, errs = embedding_rows({k: out[k][pos] for k in KEY_COLUMNS}, vectors)
            emb_parts.append(emb)
            errors += errs
            face_parts.append(faces_table(out, pngs))
        faces = pa.concat_tables(face_parts)
        return {"faces": faces, self.table: _concat(emb_parts), ERRORS_KEY: {self.table: errors},
                INPUT_SAMPLES_KEY: {self.table: sample_digests(faces)}}

    def expected(self, rows: dict[str, np.ndarray]) -> list[int | None]:
        """Per sample, the frames the face stage will sample (estimated from the probe)."""
        n = len(rows["sample_id"])
        fps = rows.get("fps", np.full(n, None, dtype=object))
        return [expected_frames(rows["num_frames"][i], fps[i], rows["start"][i], rows["end"][i],
                                rows["time_unit"][i], self.faces_cfg) for i in range(n)]


def _tee(*sinks):
    """One crop sink feeding several (None entries skipped)."""
    live = [s for s in sinks if s is not None]

    def sink(positions: np.ndarray, crops: np.ndarray) -> None:
        for s in live:
            s(positions, crops)
    return sink


def frame_groups(num_frames, budget: int = GROUP_FRAMES) -> list[np.ndarray]:
    """Consecutive sample indices cut so that each group holds at most ``budget`` sampled
    frames (a sample over budget forms its own group; an unknown count counts as
    UNKNOWN_FRAMES). Always at least one (maybe empty) group."""
    groups: list[list[int]] = [[]]
    total = 0
    for i, n in enumerate(num_frames):
        n = UNKNOWN_FRAMES if n is None or not np.isfinite(float(n)) else int(n)
        if groups[-1] and total + n > budget:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += n
    return [np.asarray(g, dtype=np.int64) for g in groups]


def _concat(parts: list[dict]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
