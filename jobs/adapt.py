"""`autt adapt`: every target subject adapted, without labels, by every adaptation method.

In: a workspace with committed embeddings, text features and CLIP-AU models (`autt train`),
or one checkpoint given with ``--model`` (e.g. an imported reference checkpoint), which then
adapts the target subjects of the fixed split. Out: OUT/adaptation/ (per target sample and step,
the predictions schema; the adapted contexts in each unit's own folder) and
OUT/adapt_units/ (per unit: steps, losses, timings). One unit of work per (model, method,
target subject, seed) — TTA-CaP and TPT have no model, and no seed (they are
deterministic) — each with a fingerprint of its settings and its inputs (the model's
fingerprint, the subject's cached embeddings, the text features), committed at once. With
folds, each fold's models adapt that fold's targets. Units run on long-lived Ray workers,
sharing GPUs (``adapt.gpus_per_unit``) where the cluster has them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from urllib.parse import quote

from jobs.progress import say as _say
from jobs.runner import StageRun, run_shards
from pipeline import config as cfgmod
from pipeline import io
from pipeline.adapt.config import METHOD, MODEL_METHODS, REFERENCE_METHOD, ZERO_STEP_METHOD
from pipeline.config import Config
from pipeline.model import data
from pipeline.planning import Fingerprint, plan

RUNTIME_KEYS = ("device", "max_retries", "gpus_per_unit", "methods")  # change no unit's result


class AdaptSkipped(Exception):
    """Nothing can adapt (no models, no target subjects); the message says why."""


@dataclasses.dataclass
class AdaptSetup:
    ws: object
    ctx: object
    units: dict  # unit id -> AdaptSpec
    fps: dict  # unit id -> {table: Fingerprint}
    checkpoints: dict  # model id -> checkpoint folder URL
    notes: list[str]  # what was left out, and why


def unit_name(method: str, *parts: str) -> str:
    """A unit id that is safe as a file name and object key on every store: subject ids are
    free text, so each part is percent-quoted ('+' too, which some S3 clients read as a
    space); the method's '+' becomes '-'."""
    return ".".join([method.replace("+", "-"), *(quote(str(p), safe="-_") for p in parts)])


@dataclasses.dataclass
class _Models:
    """Where the CLIP-AU models come from: this workspace's training, or one checkpoint."""

    ws: object
    ctx: object
    folds: list
    models: dict  # model id -> (fold number, seed, fingerprint value)
    checkpoints: dict  # model id -> checkpoint folder URL
    notes: list


def _trained(cfg: Config) -> _Models:
    from jobs import train as train_job

    try:
        s = train_job.prepare(cfg)
    except train_job.TrainingSkipped as exc:
        raise AdaptSkipped(str(exc)) from exc
    done = s.ws.markers("models")
    models, checkpoints, notes = {}, {}, []
    for model_id, spec in s.specs.items():
        fp = s.train_fps[model_id]["models"].value
        if model_id in done and done[model_id]["fingerprint"] == fp:
            models[model_id] = (spec.fold, spec.seed, fp)
            checkpoints[model_id] = s.ws.files("models", model_id, done[model_id])["checkpoint"]
        else:
            notes.append(f"model {model_id} is not trained (with today's settings): its CLIP-AUTT units wait")
    return _Models(s.ws, s.ctx, s.folds, models, checkpoints, notes)


def _external(cfg: Config, model_path: str) -> _Models:
    """``--model PATH``: that checkpoint adapts the target subjects of the fixed split."""
    from jobs import predict as predict_job
    from pipeline.model.folds import FoldError, make_folds

    try:
        ext = predict_job.external_model(cfg, model_path)
    except predict_job.PredictError as exc:
        raise AdaptSkipped(f"--model {model_path}: {exc}") from exc
    _same_backbone(cfg, ext.ctx.backbone_id, f"--model {model_path}")
    try:
        folds = make_folds(data.subject_table(ext.ws), "fixed")
    except FoldError as exc:
        raise AdaptSkipped(str(exc)) from exc
    seed = int(ext.info.train_config.get("seed", 0) or 0)
    return _Models(ext.ws, ext.ctx, folds, {ext.model_id: (0, seed, ext.weights_sha)},
                   {ext.model_id: io.absolute(model_path)}, [])


def _same_backbone(cfg: Config, backbone_id: str, what: str) -> None:
    """The text tower that adapts is the one the embed settings name: it must be the
    backbone ``what`` was made for."""
    from jobs.embed import driver_backbone

    named = driver_backbone(cfg.embed).backbone_id
    if named != backbone_id:
        raise AdaptSkipped(f"{what} was made for backbone {backbone_id!r}; the embed settings name "
                           f"{named!r}: set embed.model and embed.weights to it")


def _usable(method: str, bank: str) -> str | None:
    """Why ``method`` cannot adapt models of this AU bank (None: it can)."""
    if method in (METHOD, ZERO_STEP_METHOD) and bank == "reference":
        return "the reference AU bank has no template prefix: it adapts only with clip-autt-reference"
    if method == REFERENCE_METHOD and bank != "reference":
        return "clip-autt-reference reproduces the public code's prompts: it needs prompts.bank=reference"
    return None


def prepare(cfg: Config, methods: tuple[str, ...] | None = None,
            subjects: tuple[str, ...] | None = None, model_path: str | None = None) -> AdaptSetup:
    from pipeline.adapt.tpt import TPTConfig
    from pipeline.adapt.tta_cap import TTACaPConfig
    from pipeline.adapt.units import AdaptSpec

    m = _external(cfg, model_path) if model_path else _trained(cfg)
    methods = tuple(methods or cfg.adapt.methods)
    p, ws, ctx, notes = cfg.protocol, m.ws, m.ctx, list(m.notes)
    present = set(data.sample_rows(ws)["subject_id"].astype(str))
    if subjects:
        unknown = sorted(set(subjects) - present)
        if unknown:
            raise AdaptSkipped(f"--subjects {unknown}: no ok samples of them in {ws.root}")
    for method in methods:
        why = _usable(method, cfg.prompts.bank)
        if why:
            notes.append(f"{method}: {why}")
    model_methods = [x for x in methods if x in MODEL_METHODS and not _usable(x, cfg.prompts.bank)]
    digests, emb_hash = data.input_digests(ws, ctx.backbone_id)
    settings = {k: v for k, v in cfgmod.to_dict(cfg.adapt).items() if k not in RUNTIME_KEYS}
    base = {"protocol.tta_steps": p.tta_steps, "protocol.window": p.window,
            "protocol.clip_len": p.clip_len, "protocol.stride": p.stride,
            "protocol.min_face_frames": p.min_face_frames,
            "prompts": cfgmod.to_dict(cfg.prompts), "classes": list(ctx.classes)}
    common = {"text": ctx.text.digest, "embeddings_config": emb_hash, "weights": ctx.weights_digest}
    units, fps = {}, {}

    def add(unit: str, spec, fp: Fingerprint) -> None:
        units[unit] = spec
        fps[unit] = {"adaptation": fp, "adapt_units": fp}

    for fold in m.folds:
        targets = [t for t in fold.targets if t in present and (not subjects or t in subjects)]
        rows = data.labelled_rows(ws, list(fold.source))
        source = data.digest_of([(x, int(y), digests.get(x))
                                 for x, y in zip(rows["sample_id"], rows["label_index"])])
        if "tta-cap-frozen" in methods and targets and not len(rows):
            notes.append(f"tta-cap-frozen, fold {fold.name}: no labelled source subject lends prototypes")
        for subject in targets:
            sample_ids = data.sample_rows(ws, [subject])["sample_id"]
            inputs = {"targets": data.digest_of([(x, digests.get(x)) for x in sample_ids]), **common}
            for model_id, (fold_no, seed, model_fp) in m.models.items():
                for method in (model_methods if fold_no == fold.fold else ()):
                    unit = unit_name(method, model_id, subject)
                    add(unit, AdaptSpec(unit, method, subject, model_id, fold.fold, seed),
                        Fingerprint(config={**base, "adapt": method_settings(settings, method),
                                            "method": method, "seed": seed},
                                    inputs={"model": model_fp, **inputs}))
            if "tta-cap-frozen" in methods and len(rows):
                unit = unit_name("tta-cap-frozen", ctx.backbone_id, fold.name, subject)
                spec = AdaptSpec(unit, "tta-cap-frozen", subject, None, fold.fold, None, tuple(fold.source))
                add(unit, spec, Fingerprint(config={**base, "adapt": method_settings(settings, spec.method),
                                                    "method": spec.method,
                                                    "tta_cap": TTACaPConfig().to_dict()},
                                            inputs={"source": source, **inputs}))
            if "tpt" in methods:
                unit = unit_name("tpt", ctx.backbone_id, subject)
                add(unit, AdaptSpec(unit, "tpt", subject, None, fold.fold, None),
                    Fingerprint(config={**base, "adapt": method_settings(settings, "tpt"), "method": "tpt",
                                        "tpt": TPTConfig().to_dict()}, inputs=inputs))
    if not units:
        why = "; ".join(sorted(set(notes))) or "no target subject with ok samples in any fold"
        raise AdaptSkipped(f"nothing to adapt: {why}")
    return AdaptSetup(ws, ctx, units, fps, m.checkpoints, sorted(set(notes)))


# The adapt settings each method's results depend on (the others never refuse its units).
METHOD_SETTINGS = {ZERO_STEP_METHOD: ("fast", "chunk_size", "subjects_per_batch", "text_precision"),
                   "tta-cap-frozen": (), "tpt": ("fast", "text_precision")}


def method_settings(settings: dict, method: str) -> dict:
    keep = METHOD_SETTINGS.get(method)
    return dict(settings) if keep is None else {k: v for k, v in settings.items() if k in keep}


def run(cfg: Config, run_id: str, methods: tuple[str, ...] | None = None,
        subjects: tuple[str, ...] | None = None, model_path: str | None = None) -> list[StageRun]:
    """Plan every unit (refusing changed ones before anything is written), then adapt; a
    unit that fails is retried ``adapt.max_retries`` times, then recorded as failed."""
    from pipeline.adapt.units import AdaptRun

    s = prepare(cfg, methods, subjects, model_path)
    for note in s.notes:
        print(f"[adapt] skipped: {note}", file=sys.stderr)
    todo = plan(s.ws, "adaptation", {u: f["adaptation"] for u, f in s.fps.items()},
                recompute=cfg.run.recompute, retry_failed=cfg.run.retry_failed,
                failure_statuses=frozenset({"failed"}), incremental="whole")
    arun = AdaptRun(cfg.adapt, cfg.protocol.tta_steps, cfg.protocol.window, cfg.embed, cfg.prompts)
    progress = _say if cfg.run.progress else None
    factory = functools.partial(_make_stage, s.units, s.ctx, arun, s.checkpoints, progress)
    wants_gpu = cfg.adapt.gpus_per_unit if cfg.adapt.device != "cpu" else False
    result = StageRun(stage="adapt", skipped=len(todo.skip))
    for attempt in range(cfg.adapt.max_retries + 1):
        r = run_shards("adapt", s.ws, factory, todo, s.fps, run_id, cfg.run, wants_gpu=wants_gpu,
                       primary="adaptation", group_key=functools.partial(_batch_key, s.units),
                       group_size=group_size(cfg))
        result.done += r.done
        result.failed = r.failed
        result.seconds += r.seconds
        if not r.failed or attempt == cfg.adapt.max_retries or cfg.run.strict:
            break
        todo = dataclasses.replace(todo, run=sorted(r.failed), retry=[], delta=[], skip=[])
    return [result]


AUTO_GROUP_GPU = 8  # units sent to a GPU worker together when subjects_per_batch is auto


def group_size(cfg) -> int:
    """Units of one model and method sent to a worker together, to share text forwards:
    ``adapt.subjects_per_batch`` where set; auto: several on GPU clusters (the worker sizes
    its batches by memory), one on CPU (there, parallel workers beat shared forwards)."""
    a = cfg.adapt
    if a.subjects_per_batch:
        return a.subjects_per_batch
    if a.device == "cpu":
        return 1
    import ray
    import torch

    gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else torch.cuda.device_count()
    return AUTO_GROUP_GPU if gpus else 1


def _batch_key(units: dict, unit: str):
    """Units that can share a text forward: CLIP-AUTT of one model and method, no context."""
    spec = units[unit]
    if spec.method in MODEL_METHODS and not spec.context:
        return (spec.method, spec.model_id, spec.seed)
    return unit


def _make_stage(units, ctx, arun, checkpoints, progress, num_threads):
    from pipeline.adapt.units import AdaptStage

    return AdaptStage(units, ctx, arun, checkpoints, num_threads, progress)


def describe(s: AdaptSetup) -> str:
    """One line per method: how many units (for messages and tests)."""
    counts: dict[str, int] = {}
    for spec in s.units.values():
        counts[spec.method] = counts.get(spec.method, 0) + 1
    return json.dumps(counts, sort_keys=True)


def apply_contexts(cfg: Config, run_id: str, source: str) -> list[StageRun]:
    """`autt predict --contexts SRC --out OUT`: every CLIP-AUTT context committed in workspace
    SRC, applied (0 steps, its subject's windows chosen as at the final step) to the samples
    of the same subject in OUT that it was not adapted on. One unit per context, written to
    OUT/adaptation like the adaptation itself."""
    from jobs import predict as predict_job
    from pipeline.adapt.units import AdaptRun, AdaptSpec
    from pipeline.workspace import Workspace

    src, out = Workspace(source), Workspace(cfg.run.out)
    done = {u: m for u, m in src.markers("adaptation").items() if m["config"].get("method") in MODEL_METHODS}
    if not done:
        raise AdaptSkipped(f"--contexts {source}: no committed CLIP-AUTT adaptation there")
    models = src.markers("models")
    present = data.sample_rows(out)
    # in the same workspace, the samples a context was adapted on are not "new"
    adapted_on = (src.read_table("adaptation", columns=["sample_id", "unit_id"]).to_pandas()
                  .groupby("unit_id")["sample_id"].apply(set).to_dict() if src.root == out.root else {})
    units, fps, checkpoints, ctx, notes = {}, {}, {}, None, []
    for unit, marker in sorted(done.items()):
        files = src.files("adaptation", unit, marker)
        meta = json.loads(io.read_text(io.join(files["context"], "context.json")))
        model_id = meta["model_id"]
        if model_id not in models:
            notes.append(f"{unit}: its model {model_id} is not in {src.root}")
            continue
        checkpoint = src.files("models", model_id, models[model_id])["checkpoint"]
        try:
            ext = predict_job.external_model(cfg, checkpoint)
        except predict_job.PredictError as exc:
            raise AdaptSkipped(f"--contexts {source}: {exc}") from exc
        if ctx is None:
            _same_backbone(cfg, ext.ctx.backbone_id, f"--contexts {source}")
            ctx = ext.ctx
        adapted = adapted_on.get(unit, set())
        mine = present[present["subject_id"] == meta["subject_id"]]["sample_id"]
        new = [x for x in mine if x not in adapted]
        if not new:
            notes.append(f"{unit}: no new sample of subject {meta['subject_id']} in {out.root}")
            continue
        digests, emb_hash = data.input_digests(out, ext.ctx.backbone_id)
        name = f"{unit}.applied"
        units[name] = AdaptSpec(name, meta["method"], meta["subject_id"], model_id, meta["fold"], meta["seed"],
                                context=files["context"], exclude=tuple(sorted(adapted)))
        checkpoints[model_id] = checkpoint
        p = cfg.protocol
        fp = Fingerprint(config={"method": meta["method"], "window": p.window, "clip_len": p.clip_len,
                                 "stride": p.stride, "min_face_frames": p.min_face_frames,
                                 "adapt": method_settings(  # applied with 0 steps
                                     {k: v for k, v in cfgmod.to_dict(cfg.adapt).items()
                                      if k not in RUNTIME_KEYS}, ZERO_STEP_METHOD)},
                         inputs={"context": marker["output_digest"], "model": ext.weights_sha,
                                 "targets": data.digest_of([(x, digests.get(x)) for x in new]),
                                 "text": ext.ctx.text.digest, "embeddings_config": emb_hash})
        fps[name] = {"adaptation": fp, "adapt_units": fp}
    for note in notes:
        print(f"[predict] skipped: {note}", file=sys.stderr)
    if not units:
        raise AdaptSkipped(f"--contexts {source}: nothing to apply ({'; '.join(notes)})")
    todo = plan(out, "adaptation", {u: f["adaptation"] for u, f in fps.items()}, recompute=cfg.run.recompute,
                retry_failed=cfg.run.retry_failed, failure_statuses=frozenset({"failed"}), incremental="whole")
    arun = AdaptRun(cfg.adapt, cfg.protocol.tta_steps, cfg.protocol.window, cfg.embed, cfg.prompts)
    factory = functools.partial(_make_stage, units, ctx, arun, checkpoints, _say if cfg.run.progress else None)
    return [run_shards("predict", out, factory, todo, fps, run_id, cfg.run, primary="adaptation")]
