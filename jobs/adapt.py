"""`autt adapt`: every target subject adapted, without labels, by every adaptation method.

In: a workspace with committed embeddings, text features and CLIP-AU models (`autt train`),
or one checkpoint given with ``--model``. Out: OUT/adaptation/ (per target sample and step,
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

from jobs.runner import StageRun, run_shards
from pipeline import config as cfgmod
from pipeline.adapt.config import MODEL_METHODS
from pipeline.config import Config
from pipeline.model import data
from pipeline.shards import Fingerprint, plan

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


def prepare(cfg: Config, methods: tuple[str, ...] | None = None,
            subjects: tuple[str, ...] | None = None) -> AdaptSetup:
    from jobs import train as train_job
    from pipeline.adapt.tpt import TPTConfig
    from pipeline.adapt.tta_cap import TTACaPConfig
    from pipeline.adapt.units import AdaptSpec

    try:
        s = train_job.prepare(cfg)
    except train_job.TrainingSkipped as exc:
        raise AdaptSkipped(str(exc)) from exc
    methods = tuple(methods or cfg.adapt.methods)
    p, ws, ctx = cfg.protocol, s.ws, s.ctx
    present = set(data.sample_rows(ws)["subject_id"].astype(str))
    if subjects:
        unknown = sorted(set(subjects) - present)
        if unknown:
            raise AdaptSkipped(f"--subjects {unknown}: no ok samples of them in {ws.root}")
    digests, emb_hash = data.input_digests(ws, ctx.backbone_id)
    models = ws.markers("models")
    ready = {u: models[u] for u in s.specs
             if u in models and models[u]["fingerprint"] == s.train_fps[u]["models"].value}
    checkpoints = {u: ws.files("models", u, m)["checkpoint"] for u, m in ready.items()}
    settings = {k: v for k, v in cfgmod.to_dict(cfg.adapt).items() if k not in RUNTIME_KEYS}
    base = {"adapt": settings, "steps": p.tta_steps, "window": p.window, "clip_len": p.clip_len,
            "stride": p.stride, "min_face_frames": p.min_face_frames,
            "prompts": cfgmod.to_dict(cfg.prompts), "classes": list(ctx.classes)}
    common = {"text": ctx.text.digest, "embeddings_config": emb_hash, "weights": ctx.weights_digest}
    units, fps, notes = {}, {}, []
    for fold in s.folds:
        targets = [t for t in fold.targets if t in present and (not subjects or t in subjects)]
        rows = data.labelled_rows(ws, list(fold.source))
        source = data.digest_of([(x, int(y), digests.get(x))
                                 for x, y in zip(rows["sample_id"], rows["label_index"])])
        for subject in targets:
            sample_ids = data.sample_rows(ws, [subject])["sample_id"]
            target = data.digest_of([(x, digests.get(x)) for x in sample_ids])
            inputs = {"targets": target, **common}
            for model_id, spec in s.specs.items():
                if spec.fold != fold.fold:
                    continue
                for method in (m for m in methods if m in MODEL_METHODS):
                    if model_id not in ready:
                        notes.append(f"{method} of {subject}: model {model_id} is not trained")
                        continue
                    unit = unit_name(method, model_id, subject)
                    units[unit] = AdaptSpec(unit, method, subject, model_id, fold.fold, spec.seed)
                    fp = Fingerprint(config={**base, "method": method, "seed": spec.seed},
                                     inputs={"model": s.train_fps[model_id]["models"].value, **inputs})
                    fps[unit] = {"adaptation": fp, "adapt_units": fp}
            if "tta-cap-frozen" in methods:
                unit = unit_name("tta-cap-frozen", ctx.backbone_id, fold.name, subject)
                units[unit] = AdaptSpec(unit, "tta-cap-frozen", subject, None, fold.fold, None,
                                        tuple(fold.source))
                fp = Fingerprint(config={**base, "method": "tta-cap-frozen",
                                         "tta_cap": TTACaPConfig().to_dict()},
                                 inputs={"source": source, **inputs})
                fps[unit] = {"adaptation": fp, "adapt_units": fp}
            if "tpt" in methods:
                unit = unit_name("tpt", ctx.backbone_id, subject)
                units[unit] = AdaptSpec(unit, "tpt", subject, None, fold.fold, None)
                fp = Fingerprint(config={**base, "method": "tpt", "tpt": TPTConfig().to_dict()},
                                 inputs=inputs)
                fps[unit] = {"adaptation": fp, "adapt_units": fp}
    if not units:
        why = "; ".join(sorted(set(notes))) or "no target subject with ok samples in any fold"
        raise AdaptSkipped(f"nothing to adapt: {why}")
    return AdaptSetup(ws, ctx, units, fps, checkpoints, sorted(set(notes)))


def run(cfg: Config, run_id: str, methods: tuple[str, ...] | None = None,
        subjects: tuple[str, ...] | None = None) -> list[StageRun]:
    """Plan every unit (refusing changed ones before anything is written), then adapt; a
    unit that fails is retried ``adapt.max_retries`` times, then recorded as failed."""
    from pipeline.adapt.units import AdaptRun

    s = prepare(cfg, methods, subjects)
    for note in s.notes:
        print(f"[adapt] skipped: {note}", file=sys.stderr)
    todo = plan(s.ws, "adaptation", {u: f["adaptation"] for u, f in s.fps.items()},
                recompute=cfg.run.recompute, retry_failed=cfg.run.retry_failed,
                failure_statuses=frozenset({"failed"}), incremental=True)
    arun = AdaptRun(cfg.adapt, cfg.protocol.tta_steps, cfg.protocol.window, cfg.embed, cfg.prompts)
    progress = _say if cfg.run.progress else None
    factory = functools.partial(_make_stage, s.units, s.ctx, arun, s.checkpoints, progress)
    wants_gpu = cfg.adapt.gpus_per_unit if cfg.adapt.device != "cpu" else False
    result = StageRun(stage="adapt", skipped=len(todo.skip))
    for attempt in range(cfg.adapt.max_retries + 1):
        r = run_shards("adapt", s.ws, factory, todo, s.fps, run_id, cfg.run, wants_gpu=wants_gpu,
                       primary="adaptation")
        result.done += r.done
        result.failed = r.failed
        result.seconds += r.seconds
        if not r.failed or attempt == cfg.adapt.max_retries or cfg.run.strict:
            break
        todo = dataclasses.replace(todo, run=sorted(r.failed), retry=[], delta=[], skip=[])
    return [result]


def _make_stage(units, ctx, arun, checkpoints, progress, num_threads):
    from pipeline.adapt.units import AdaptStage

    return AdaptStage(units, ctx, arun, checkpoints, num_threads, progress)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def describe(s: AdaptSetup) -> str:
    """One line per method: how many units (for messages and tests)."""
    counts: dict[str, int] = {}
    for spec in s.units.values():
        counts[spec.method] = counts.get(spec.method, 0) + 1
    return json.dumps(counts, sort_keys=True)
