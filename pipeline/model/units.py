"""CLIP-AU's units of work, as stages that ``pipeline.shards.execute`` runs and commits.

In: a workspace holding committed embeddings and text features, unit specs built by the
training job. Out (each unit committed at once, like a shard):
- ``TrainStage``, one unit per model (a fold and a seed): a MODELS row and the checkpoint
  folder (model.safetensors + model.json) beside it. It reads the fold's source subjects'
  labelled sequences only.
- ``PredictStage``, one unit per model: CLIP-AU's PREDICTIONS and per-frame AU_ACTIVATIONS
  for the fold's target samples. It reads no label.
- ``BaselineStage``, one unit per fold: zero-shot, positive-negative prompts and the AU
  linear probe (fitted on the fold's source samples) for the same target samples.
A target sample with fewer face frames than ``min_face_frames`` gets a prediction row with
status ``insufficient_faces`` (never a silent gap).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline import faults
from pipeline.model import baselines as bl
from pipeline.model.clips import clip_indices, gather_clips
from pipeline.model.data import Sequences, TextFeatures, labelled_rows, read_sequences, sample_rows
from pipeline.shards import FILES_KEY
from pipeline.workspace import Workspace
from schemas import get


@dataclass(frozen=True)
class ModelSpec:
    model_id: str
    split: str
    fold: int
    seed: int
    source: tuple[str, ...]  # subjects that train it
    targets: tuple[str, ...]  # subjects it predicts (and that adapt with it)


@dataclass(frozen=True)
class Context:
    """What every unit of one backbone shares."""

    backbone_id: str
    weights_digest: str
    classes: tuple[str, ...]
    text: TextFeatures
    clip_len: int
    stride: int
    min_face_frames: int


Reader = Callable[[Workspace, list[str], set[str] | None], Sequences]


def _reader(ctx: Context, preloaded: Sequences | None) -> Reader:
    if preloaded is not None:  # e.g. put in Ray's object store once for every unit
        return lambda ws, subjects, samples: Sequences(
            {s: preloaded.frames[s] for s in (samples or preloaded.frames) if s in preloaded.frames},
            {s: preloaded.vectors[s] for s in (samples or preloaded.vectors) if s in preloaded.vectors})
    return lambda ws, subjects, samples: read_sequences(ws, ctx.backbone_id, subjects, samples)


def _column(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


class TrainStage:
    name = "train"
    outputs = ("models",)
    failure_statuses: frozenset[str] = frozenset()

    def __init__(self, specs: dict[str, ModelSpec], ctx: Context, settings: dict, au_bank,
                 num_threads: int | None = None, preloaded: Sequences | None = None,
                 progress: Callable[[str], None] | None = None):
        self.specs, self.ctx, self.settings, self.au_bank = specs, ctx, settings, au_bank
        self.read = _reader(ctx, preloaded)
        self.num_threads, self.progress = num_threads, progress

    def schema(self, table: str) -> pa.Schema:
        return get(table)

    def load(self, ws: Workspace, unit: str) -> dict[str, np.ndarray]:
        spec = self.specs[unit]
        rows = labelled_rows(ws, list(spec.source))
        seqs = self.read(ws, list(spec.source), set(rows["sample_id"]))
        keep = [s in seqs.vectors and len(seqs.vectors[s]) >= self.ctx.min_face_frames
                for s in rows["sample_id"]]
        rows = rows[keep]
        return {"sample_id": rows["sample_id"].to_numpy(dtype=object),
                "subject_id": rows["subject_id"].to_numpy(dtype=object),
                "label_index": rows["label_index"].to_numpy(dtype=np.int64),
                "_seq": _column([seqs.vectors[s] for s in rows["sample_id"]]),
                "_unit": _column([unit] * len(rows))}

    def __call__(self, rows: dict[str, np.ndarray]) -> dict:
        import torch

        from pipeline.model.checkpoint import CheckpointInfo, save_checkpoint
        from pipeline.model.train import TrainConfig, train_head

        unit = str(rows["_unit"][0]) if len(rows["_unit"]) else next(iter(self.specs))
        spec = self.specs[unit]
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        cfg = TrainConfig(**{**self.settings, "seed": spec.seed, "clip_len": self.ctx.clip_len,
                             "stride": self.ctx.stride})
        say = self.progress or (lambda text: None)
        t0 = time.perf_counter()
        result = train_head(list(rows["_seq"]), rows["label_index"], rows["subject_id"],
                            self.ctx.text.au, len(self.ctx.classes), cfg,
                            progress=lambda e, loss, f1: say(f"[train {unit}] epoch {e}/{cfg.epochs} "
                                                             f"loss {loss:.4f} val F1 {f1:.3f}"))
        seconds = time.perf_counter() - t0
        info = CheckpointInfo(head=result.head_config, classes=self.ctx.classes, au_bank=self.au_bank,
                              backbone_id=self.ctx.backbone_id, weights_digest=self.ctx.weights_digest,
                              metrics=result.metrics, curve=tuple(result.curve),
                              train_config=cfg.to_dict(),
                              origin={"kind": "trained", "model_id": unit, "split": spec.split,
                                      "fold": spec.fold, "source_subjects": list(spec.source)})
        m = result.metrics
        row = {"model_id": [unit], "backbone_id": [self.ctx.backbone_id],
               "weights_digest": [self.ctx.weights_digest], "split": [spec.split], "fold": [spec.fold],
               "seed": [spec.seed], "classes": [list(self.ctx.classes)],
               "source_subjects": [list(spec.source)], "val_subjects": [list(m["val_subjects"])],
               "target_subjects": [list(spec.targets)], "n_train": [m["n_train"]],
               "n_val": [m["n_val"]], "best_epoch": [m["best_epoch"]], "val_f1": [m["val_f1"]],
               "val_acc": [m["val_acc"]], "train_seconds": [seconds], "status": ["ok"],
               "error": [None]}
        state = result.state_dict
        return {"models": row,
                FILES_KEY: {"models": {"checkpoint": lambda url: save_checkpoint(url, state, info)}}}


class _TargetStage:
    """Shared by the units that score a fold's target samples (no labels read)."""

    failure_statuses: frozenset[str] = frozenset({"failed"})

    def __init__(self, units: dict[str, ModelSpec], ctx: Context, num_threads: int | None = None):
        self.units, self.ctx, self.num_threads = units, ctx, num_threads

    def schema(self, table: str) -> pa.Schema:
        return get(table)

    def load(self, ws: Workspace, unit: str) -> dict[str, np.ndarray]:
        spec = self.units[unit]
        rows = sample_rows(ws, list(spec.targets))
        seqs = read_sequences(ws, self.ctx.backbone_id, list(spec.targets), set(rows["sample_id"]))
        cols = {c: rows[c].to_numpy(dtype=object) for c in ("sample_id", "video_id", "subject_id")}
        cols["_seq"] = _column([seqs.vectors.get(s) for s in rows["sample_id"]])
        cols["_frames"] = _column([seqs.frames.get(s) for s in rows["sample_id"]])
        cols["_unit"] = _column([unit] * len(rows))
        return cols

    def redo(self, ws, unit, rows, committed, mode) -> set[str]:
        return set(rows["sample_id"])  # cheap: a changed input redoes the whole unit

    def source_clips(self, ws: Workspace, source) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The evaluation clips of ``source`` subjects' labelled samples with enough face
        frames, with their subject ids and class indices (labels of source subjects only);
        None when there is none."""
        rows = labelled_rows(ws, list(source))
        seqs = read_sequences(ws, self.ctx.backbone_id, list(source), set(rows["sample_id"]))
        keep = [s in seqs.vectors and len(seqs.vectors[s]) >= self.ctx.min_face_frames
                for s in rows["sample_id"]]
        rows = rows[keep]
        vecs = [seqs.vectors[s].astype(np.float32) for s in rows["sample_id"]]
        if not vecs:
            return None
        idx = clip_indices(np.array([len(v) for v in vecs]), self.ctx.clip_len, self.ctx.stride)
        return gather_clips(vecs, idx), rows["subject_id"].to_numpy(), rows["label_index"].to_numpy()

    def _begin(self, rows: dict) -> tuple[str, ModelSpec, np.ndarray, np.ndarray]:
        """The unit these rows belong to, its spec, and per sample its face frames and
        whether that is enough; torch threads set to the worker's."""
        import torch

        unit = str(rows["_unit"][0]) if len(rows["_unit"]) else next(iter(self.units))
        faults.maybe_fail("mid_shard", f"{self.name}/{unit}")  # inputs loaded, nothing computed
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        return (unit, self.units[unit], *self._split(rows))

    def _split(self, rows: dict) -> tuple[np.ndarray, np.ndarray]:
        n_faces = np.array([0 if s is None else len(s) for s in rows["_seq"]], dtype=np.int64)
        return n_faces, n_faces >= self.ctx.min_face_frames

    def _clips(self, rows: dict, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seqs = [rows["_seq"][i].astype(np.float32) for i in np.flatnonzero(ok)]
        idx = clip_indices(np.array([len(s) for s in seqs], dtype=np.int64), self.ctx.clip_len,
                           self.ctx.stride)
        return (gather_clips(seqs, idx) if seqs else
                np.zeros((0, self.ctx.clip_len, self.ctx.text.au.shape[1]), np.float32)), idx

    def _rows(self, rows, unit, method, model_id, fold, seed, probs_ok, ok, n_faces, au=None) -> dict:
        n = len(rows["sample_id"])
        probs = [None] * n
        aus = [None] * n
        status = ["insufficient_faces"] * n
        error = [f"{k} face frame(s), fewer than protocol.min_face_frames={self.ctx.min_face_frames}"
                 for k in n_faces]
        for j, i in enumerate(np.flatnonzero(ok)):
            probs[i] = probs_ok[j].astype(np.float32)
            aus[i] = None if au is None else au[j].astype(np.float32)
            status[i], error[i] = "ok", None
        pred = [None if p is None else int(np.argmax(p)) for p in probs]
        return {"sample_id": rows["sample_id"], "video_id": rows["video_id"],
                "subject_id": rows["subject_id"], "unit_id": [unit] * n, "model_id": [model_id] * n,
                "method": [method] * n, "fold": [fold] * n, "seed": [seed] * n, "step": [None] * n,
                "backbone_id": [self.ctx.backbone_id] * n, "probs": probs, "pred": pred,
                "pred_label": [None if p is None else self.ctx.classes[p] for p in pred],
                "au_scores": aus, "window_start": [None] * n, "n_face_frames": n_faces,
                "status": status, "error": error}


class PredictStage(_TargetStage):
    """CLIP-AU on the evaluation clips of a fold's target samples."""

    name = "predict"
    outputs = ("predictions", "au_activations")

    def __init__(self, units: dict[str, ModelSpec], ctx: Context, checkpoints: dict[str, str],
                 num_threads: int | None = None):
        super().__init__(units, ctx, num_threads)
        self.checkpoints = checkpoints  # model id -> checkpoint folder URL

    def __call__(self, rows: dict[str, np.ndarray]) -> dict:
        from pipeline.model.checkpoint import load_checkpoint
        from pipeline.model.train import predict

        unit, spec, n_faces, ok = self._begin(rows)
        head, _ = load_checkpoint(self.checkpoints[spec.model_id])
        seqs = [rows["_seq"][i].astype(np.float32) for i in np.flatnonzero(ok)]
        if seqs:
            out = predict(head, seqs, self.ctx.text.au, self.ctx.clip_len, self.ctx.stride)
            probs, au_sim, frame_au, frame_pos = out.probs, out.au_sim, out.frame_au, out.frame_index
        else:
            probs = au_sim = frame_au = frame_pos = np.zeros((0, 0))
        preds = self._rows(rows, unit, "clip-au", spec.model_id, spec.fold, spec.seed, probs, ok,
                           n_faces, au_sim)
        act: dict[str, list] = {k: [] for k in ("sample_id", "video_id", "subject_id", "unit_id",
                                                "model_id", "method", "clip_pos", "frame_index",
                                                "activations")}
        for j, i in enumerate(np.flatnonzero(ok)):
            frames = rows["_frames"][i]
            for t in range(frame_au.shape[1]):
                for key, value in (("sample_id", rows["sample_id"][i]), ("video_id", rows["video_id"][i]),
                                   ("subject_id", rows["subject_id"][i]), ("unit_id", unit),
                                   ("model_id", spec.model_id), ("method", "clip-au"), ("clip_pos", t),
                                   ("frame_index", int(frames[frame_pos[j, t]])),
                                   ("activations", frame_au[j, t].astype(np.float32))):
                    act[key].append(value)
        return {"predictions": preds, "au_activations": act}


class BaselineStage(_TargetStage):
    """Zero-shot CLIP, positive-negative prompts and the AU linear probe, per fold."""

    name = "baselines"
    outputs = ("predictions",)

    def __call__(self, rows: dict[str, np.ndarray]) -> dict:
        unit, spec, n_faces, ok = self._begin(rows)
        clips, _ = self._clips(rows, ok)
        feats = bl.clip_features(clips)
        text = self.ctx.text
        out: dict[str, list] = {}
        results = [("zero-shot", bl.softmax(bl.zero_shot_logits(feats, text.classes)), None),
                   ("pn-prompts", bl.softmax(bl.pos_neg_logits(feats, text.classes, text.classes_neg)),
                    None)]
        au_cos = bl.cosines(feats, text.au)
        probe = self.probe(spec)
        no_probe = None
        if probe is not None:
            results.append(("au-probe", bl.au_probe_proba(probe, au_cos, len(self.ctx.classes)), None))
        else:
            no_probe = "the AU probe needs source clips of at least 2 classes with enough face frames"
            results.append(("au-probe", np.zeros((int(ok.sum()), len(self.ctx.classes))), no_probe))
        for method, probs, failure in results:
            part = self._rows(rows, unit, method, None, spec.fold, None, probs, ok, n_faces)
            if failure is not None:  # every row of the method failed, with the reason
                part.update(probs=[None] * len(part["probs"]), pred=[None] * len(part["pred"]),
                            pred_label=[None] * len(part["pred"]),
                            status=["failed" if st == "ok" else st for st in part["status"]],
                            error=[failure if st == "ok" else e
                                   for st, e in zip(part["status"], part["error"])])
            for k, v in part.items():
                out.setdefault(k, []).extend(list(v))
        return {"predictions": out}

    def load(self, ws: Workspace, unit: str) -> dict[str, np.ndarray]:
        rows = super().load(ws, unit)
        self._probe_data = self._source_au_cosines(ws, self.units[unit])  # used by __call__ next
        return rows

    def probe(self, spec: ModelSpec):
        """The AU probe fitted on the fold's source samples (None: fewer than 2 classes)."""
        data = getattr(self, "_probe_data", None)
        if data is None or len(np.unique(data[1])) < 2:
            return None
        return bl.fit_au_probe(*data)

    def _source_au_cosines(self, ws: Workspace, spec: ModelSpec):
        """AU cosines of the fold's source evaluation clips and their labels (labels of
        source subjects only)."""
        source = self.source_clips(ws, spec.source) if spec.source else None
        if source is None:
            return None
        clips, _, labels = source
        return bl.cosines(bl.clip_features(clips), self.ctx.text.au), labels
