"""The face stage as shard work: manifest part in, faces part out.

In: the ``ok`` manifest rows of one shard. Out: FACES rows (one per sampled frame; crops
as PNG bytes only when ``faces.store_crops``). ``FaceStage`` does the work and
``faces_table`` shapes it; this module only reads the shard's input.
"""

from __future__ import annotations

import io as _pyio
import json

import numpy as np
import pyarrow as pa

from pipeline import parquet
from pipeline.config import build, to_dict
from pipeline.faces.config import FacesConfig
from pipeline.faces.recrop import CROPPED
from pipeline.faces.stage import FaceStage
from pipeline.faces.table import PngCrops, faces_table
from pipeline.ingest.stage import MEDIA_COLUMNS, media_view
from pipeline.workspace import Workspace
from schemas import get

FAILED = frozenset({"decode_error", "detect_error", "bad_frame"})
# Face settings that change the pixels of a crop (and so the embeddings), not the rows.
CROP_KEYS = ("crop_size", "margin", "align", "aspect", "resample")
# Face settings that change neither rows nor crops (speed and memory only): not fingerprinted.
RUNTIME_KEYS = ("chunk_frames", "cache_mb", "detect_batch", "device", "prefetch")
# Keyframe settings: they change the rows in detect_mode='keyframe' only, so per-frame mode
# leaves them out and keeps the fingerprints of tables made before the option existed.
KEYFRAME_KEYS = ("detect_mode", "keyframe_every", "keyframe_iou", "keyframe_shrink")
# Settings that joined the fingerprint after tables were made without them, and the value
# those tables were made with: at that value a setting stays out of the fingerprint (older
# tables keep theirs), and a fingerprint without it reads back as that value.
LEGACY_VALUES = {"detect_mode": "every", "resample": "exact"}
WITH_FACE = CROPPED  # statuses with a face: ok | filled | carried


def manifest_input(ws: Workspace, shard_id: str, marker: dict | None = None) -> pa.Table:
    """The shard's ok manifest rows, restricted to the columns the face stage reads."""
    return media_view(parquet.read(ws.files("manifest", shard_id, marker)["data"],
                                   columns=MEDIA_COLUMNS))


def input_digest(ws: Workspace, shard_id: str, marker: dict) -> str:
    """The digest of the manifest rows a face shard reads: from the manifest marker (no
    part is read), or computed for a marker written before markers carried it."""
    known = marker.get("view_digests", {}).get("media")
    return known if known is not None else parquet.digest(manifest_input(ws, shard_id, marker))


def columns(table: pa.Table) -> dict[str, np.ndarray]:
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}


def faces_metadata(cfg: FacesConfig) -> dict[str, str]:
    """The declarative sampling policy and the rest of the face settings, for the Parquet
    metadata of every faces part (which frames were kept is then readable from the file)."""
    sampling = {k: getattr(cfg, k) for k in ("sampling", "every_k", "target_fps", "num_frames",
                                             "folder_fps")}
    return {"sampling": json.dumps(sampling), "faces_config": json.dumps(to_dict(cfg))}


def _legacy(values: dict) -> set[str]:
    """The keys of ``values`` left out of a fingerprint: at their legacy value, and the
    keyframe settings in per-frame mode."""
    skip = {k for k, v in LEGACY_VALUES.items() if values.get(k) == v}
    return skip | (set(KEYFRAME_KEYS) if values.get("detect_mode") == "every" else set())


def fingerprint_config(cfg: FacesConfig) -> dict:
    """The face settings that decide a faces shard's rows and crops."""
    values = to_dict(cfg)
    skip = set(RUNTIME_KEYS) | _legacy(values)
    return {"faces": {k: v for k, v in values.items() if k not in skip}}


def crop_fingerprint(cfg: FacesConfig) -> dict:
    """The face settings that decide a crop's pixels (part of the embeddings' fingerprint)."""
    values = {k: getattr(cfg, k) for k in CROP_KEYS}
    return {k: v for k, v in values.items() if k not in _legacy(values)}


def legacy_hint(done: dict[str, dict], wanted: dict) -> str:
    """Advice for a refusal to mix tables: the settings that keep using done faces shards
    made before settings of LEGACY_VALUES existed ('' when no done marker lacks a setting
    that the wanted fingerprint config ``wanted`` names)."""
    made = [m["config"].get("faces", {}) for m in done.values()]
    older = [k for k in LEGACY_VALUES if k in wanted.get("faces", {})
             and any(k not in faces for faces in made)]
    if not older:
        return ""
    keep = " ".join(f"faces.{k}={v}" for k, v in LEGACY_VALUES.items())
    return (f" (They were made before faces.{' and faces.'.join(older)} existed: "
            f"`{keep}` keeps using them as they are.)")


def config_of_fingerprint(faces: dict) -> FacesConfig:
    """The FacesConfig a faces shard was made with, from its fingerprint's ``faces``."""
    return build(FacesConfig, {**LEGACY_VALUES, **faces}, "faces")


def unpng(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(_pyio.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


class FacesShard:
    name = "faces"
    outputs = ("faces",)
    failure_statuses = FAILED

    def __init__(self, cfg: FacesConfig, num_threads: int | None = None):
        self.cfg = cfg
        self.stage = FaceStage(cfg, num_threads)

    def schema(self, table: str) -> pa.Schema:
        return get("faces")

    def load(self, ws: Workspace, shard_id: str) -> dict[str, np.ndarray]:
        return columns(manifest_input(ws, shard_id))

    def metadata(self, table: str) -> dict[str, str]:
        return faces_metadata(self.cfg)

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, dict]:
        # crops are made only to be stored, one PNG at a time (nothing else reads them here)
        pngs = PngCrops() if self.cfg.store_crops else None
        return {"faces": faces_table(self.stage.run(rows, pngs), pngs)}
