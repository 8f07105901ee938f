"""`autt predict --model PATH --out OUT` and `autt import-reference CKPT --classes a,b --out DIR`.

predict — In: a checkpoint folder (this project's format) and a workspace with committed
embeddings and text features of the checkpoint's backbone. Out: CLIP-AU predictions and AU
activations of every ok sample of OUT, as one unit of work (``clip-au.<model>.predict``).
A checkpoint made for another backbone, class list or AU bank is refused, naming each
mismatch. import-reference — In: a checkpoint in the public reference code's format (read
with ``torch.load(weights_only=True)`` only). Out: the same weights in this format, with the
reference AU bank and the backbone the embed settings name.
"""

from __future__ import annotations

import dataclasses
import functools
import json

from jobs.runner import StageRun, run_shards
from pipeline import io
from pipeline.config import Config
from pipeline.model import data
from pipeline.model.units import Context, ModelSpec, PredictStage
from pipeline.planning import Fingerprint, plan
from pipeline.workspace import Workspace


class PredictError(Exception):
    """The checkpoint or the workspace cannot be used; the message says why."""


@dataclasses.dataclass
class ExternalModel:
    ws: Workspace
    info: object  # CheckpointInfo
    ctx: Context
    model_id: str
    weights_sha: str  # sha256 of model.safetensors, the model's input digest


def external_model(cfg: Config, model_path: str) -> ExternalModel:
    """A checkpoint made elsewhere, checked against the workspace (backbone cached, classes,
    AU bank); raises PredictError naming each mismatch."""
    from pipeline.model.checkpoint import CheckpointError, CheckpointMismatch, check_compatible, read_checkpoint

    ws = Workspace(cfg.run.out)
    try:
        info, _ = read_checkpoint(model_path)
    except CheckpointError as exc:
        raise PredictError(str(exc)) from exc
    if not ws.markers(data.embeddings_table(info.backbone_id)):
        raise PredictError(f"checkpoint does not fit this workspace: it was made for backbone "
                           f"{info.backbone_id!r}, and {ws.root} has no embeddings of it (embed with "
                           "that backbone first)")
    text = data.read_text_features(ws, info.backbone_id)
    classes = json.loads(io.read_text(ws.url("manifest", "_classes.json")))
    try:
        check_compatible(info, backbone_id=info.backbone_id, classes=classes, au_prompts=text.au_prompts)
    except CheckpointMismatch as exc:
        raise PredictError(str(exc)) from exc
    p = cfg.protocol
    # the digest of the weights the cache was made with (the checkpoint may say "unknown")
    cached = next(iter(ws.markers(data.text_table(info.backbone_id)).values()))["inputs"]["weights"]
    ctx = Context(info.backbone_id, cached, tuple(classes), text, p.clip_len, p.stride, p.min_face_frames)
    model_id = str(info.origin.get("model_id") or io.absolute(model_path).rstrip("/").rsplit("/", 1)[-1])
    meta = json.loads(io.read_text(io.join(model_path, "model.json")))
    return ExternalModel(ws, info, ctx, model_id, meta["weights"]["sha256"])


def run(cfg: Config, run_id: str, model_path: str) -> list[StageRun]:
    ext = external_model(cfg, model_path)
    ws, info, ctx, model_id, text, p = ext.ws, ext.info, ext.ctx, ext.model_id, ext.ctx.text, cfg.protocol
    subjects = tuple(sorted(data.subject_table(ws)["subject_id"].astype(str)))
    unit = f"clip-au.{model_id}.predict"
    digests, emb_hash = data.input_digests(ws, info.backbone_id)
    samples = data.sample_rows(ws, list(subjects))
    targets = data.digest_of([(s, digests.get(s)) for s in samples["sample_id"]])
    fp = Fingerprint(config={"clip_len": p.clip_len, "stride": p.stride, "min_face_frames": p.min_face_frames},
                     inputs={"model": ext.weights_sha, "text": text.digest,
                             "embeddings_config": emb_hash, "targets": targets})
    fps = {unit: {"predictions": fp, "au_activations": fp}}
    todo = plan(ws, "predictions", {unit: fp}, recompute=cfg.run.recompute, retry_failed=cfg.run.retry_failed,
                failure_statuses=frozenset({"failed"}), incremental=True)
    spec = ModelSpec(model_id, "external", 0, int(info.train_config.get("seed", 0) or 0), (), subjects)
    factory = functools.partial(PredictStage, {unit: spec}, ctx, {model_id: model_path})
    return [run_shards("predict", ws, factory, todo, fps, run_id, cfg.run, primary="predictions")]


def import_reference(cfg: Config, ckpt: str, out_dir: str) -> str:
    """Convert; returns a one-line summary."""
    from jobs.embed import driver_backbone
    from pipeline.model.checkpoint import CheckpointError
    from pipeline.model.checkpoint import import_reference as convert

    if not cfg.ingest.classes:
        raise PredictError("import-reference needs the class list: --classes neutral,pain (positive last)")
    bb = driver_backbone(cfg.embed)
    weights_file = io.is_local(cfg.embed.weights) and io.exists(cfg.embed.weights)
    try:
        info = convert(ckpt, list(cfg.ingest.classes), out_dir=out_dir, backbone_id=bb.backbone_id,
                       weights_digest=bb.weights_digest if weights_file else None)
    except CheckpointError as exc:
        raise PredictError(str(exc)) from exc
    return (f"imported {ckpt} -> {out_dir}: {info.head.n_aus} AUs ({info.au_bank.name} bank), classes "
            f"{list(info.classes)}, backbone {info.backbone_id} (weights digest {info.weights_digest[:16]}); "
            f"dropped {info.origin.get('dropped')}")
