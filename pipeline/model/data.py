"""What the modelling units read from the workspace: manifest rows, per-sample sequences of
cached frame embeddings, the text features, and per-sample input digests.

In: a Workspace and the backbone id the embed settings name. Out: pandas frames and numpy
arrays. Sequences are read from the one embeddings table of that backbone with column
projection and a filter on the subjects a unit needs (never whole tables), so memory is
bounded by the unit. Labels come only from ``labelled_rows`` and only for the subjects a
caller names: units that must not see labels call ``sample_rows``, which has no label column.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.workspace import Workspace

SAMPLE_COLUMNS = ["sample_id", "video_id", "subject_id", "role", "status"]


def embeddings_table(backbone_id: str) -> str:
    return f"embeddings/{backbone_id}"


def text_table(backbone_id: str) -> str:
    return f"text_features/{backbone_id}"


def sample_rows(ws: Workspace, subjects: list[str] | None = None) -> pd.DataFrame:
    """The ok manifest rows (no label column), optionally of some subjects only."""
    filters = [("status", "=", "ok")]
    if subjects is not None:
        filters.append(("subject_id", "in", list(subjects)))
    t = ws.read_table("manifest", columns=SAMPLE_COLUMNS, filters=filters)
    return t.to_pandas().sort_values("sample_id").reset_index(drop=True)


def labelled_rows(ws: Workspace, subjects: list[str]) -> pd.DataFrame:
    """The ok, labelled manifest rows of ``subjects`` with their class index."""
    t = ws.read_table("manifest", columns=[*SAMPLE_COLUMNS, "label_index"],
                      filters=[("status", "=", "ok"), ("subject_id", "in", list(subjects))])
    df = t.to_pandas()
    df = df[df["label_index"].notna()].copy()
    df["label_index"] = df["label_index"].astype(np.int64)
    return df.sort_values("sample_id").reset_index(drop=True)


def subject_table(ws: Workspace) -> pd.DataFrame:
    """Per subject: its role (source / target / null) and whether it has labelled samples."""
    t = ws.read_table("manifest", columns=["subject_id", "role", "label_index", "status"],
                      filters=[("status", "=", "ok")]).to_pandas()
    t["labelled"] = t["label_index"].notna()
    return (t.groupby("subject_id", sort=True)
            .agg(role=("role", "first"), labelled=("labelled", "any"), n=("labelled", "size"))
            .reset_index())


@dataclass
class Sequences:
    """Per sample, its face frames in order: frame indices and raw embeddings (float32)."""

    frames: dict[str, np.ndarray]  # sample_id -> [n] faces-table frame index
    vectors: dict[str, np.ndarray]  # sample_id -> [n, d]

    def __len__(self) -> int:
        return len(self.vectors)


def read_sequences(ws: Workspace, backbone_id: str, subjects: list[str],
                   samples: set[str] | None = None) -> Sequences:
    """The cached sequences of ``subjects`` (optionally only ``samples``)."""
    t = ws.read_table(embeddings_table(backbone_id), columns=["sample_id", "frame_index", "embedding"],
                      filters=[("subject_id", "in", list(subjects))])
    if samples is not None:
        t = t.filter(pc.is_in(t.column("sample_id"), pa.array(sorted(samples), pa.string())))
    t = t.sort_by([("sample_id", "ascending"), ("frame_index", "ascending")])
    frames, vectors = {}, {}
    if t.num_rows:
        ids = t.column("sample_id").to_numpy(zero_copy_only=False)
        emb = t.column("embedding").combine_chunks()
        width = emb.type.list_size
        flat = np.asarray(emb.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
        matrix = flat.reshape(-1, width)
        index = t.column("frame_index").to_numpy()
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        ends = np.r_[starts[1:], len(ids)]
        for a, b in zip(starts, ends):
            frames[str(ids[a])] = index[a:b]
            vectors[str(ids[a])] = matrix[a:b]
    return Sequences(frames, vectors)


@dataclass(frozen=True)
class TextFeatures:
    au: np.ndarray  # [K, d] raw AU prompt features, in bank order
    au_prompts: tuple[str, ...]
    au_names: tuple[str, ...]
    classes: np.ndarray  # [C, d] "... of {class}." features
    classes_neg: np.ndarray  # [C, d] "... of no {class}." features
    digest: str  # the committed table's output digest


def read_text_features(ws: Workspace, backbone_id: str) -> TextFeatures:
    table = text_table(backbone_id)
    markers = ws.markers(table)
    if not markers:
        raise FileNotFoundError(f"no text features for {backbone_id} in {ws.root}: run the "
                                "embeddings first (`autt embed`)")
    df = ws.read_table(table).to_pandas()

    def part(kind: str) -> pd.DataFrame:
        return df[df["kind"] == kind].sort_values("index")

    au = part("au")
    return TextFeatures(
        au=np.stack(au["feature"].to_numpy()).astype(np.float32),
        au_prompts=tuple(au["prompt"]), au_names=tuple(au["name"]),
        classes=np.stack(part("class")["feature"].to_numpy()).astype(np.float32),
        classes_neg=np.stack(part("class_neg")["feature"].to_numpy()).astype(np.float32),
        digest=next(iter(markers.values()))["output_digest"])


def input_digests(ws: Workspace, backbone_id: str) -> tuple[dict[str, str], str]:
    """Per sample, a digest of its cached embeddings (the faces rows they were made from),
    from the embeddings markers alone; and the embeddings' config hash."""
    markers = ws.markers(embeddings_table(backbone_id))
    out: dict[str, str] = {}
    for m in markers.values():
        out.update(m.get("input_samples", {}))
    hashes = sorted({m["config_hash"] for m in markers.values()})
    return out, ",".join(hashes)


def digest_of(items) -> str:
    """A short digest of JSON-able data (sorted where it is a dict)."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:24]
