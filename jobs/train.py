"""`autt train`: committed embeddings -> CLIP-AU models, their predictions and baselines.

In: a workspace with committed embeddings and text features of the backbone that the embed
settings name. Out: OUT/models/ (one row and one checkpoint folder per fold and seed),
OUT/predictions/ and OUT/au_activations/ (CLIP-AU on every fold's target samples, and the
zero-shot, positive-negative prompt and AU-probe baselines). Everything reads the embedding
cache only: the image tower is never called. Each model, each model's predictions and each
fold's baselines is one unit of work (fingerprint, committed outputs, done marker); models
run as Ray tasks on long-lived actors, the labelled sequences put in the object store once.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys

from jobs.runner import StageRun, run_shards
from pipeline import config as cfgmod
from pipeline import io
from pipeline.config import Config
from pipeline.model import data
from pipeline.model.folds import FoldError, make_folds
from pipeline.model.units import BaselineStage, Context, ModelSpec, PredictStage, TrainStage
from pipeline.planning import Fingerprint, plan
from pipeline.workspace import Workspace

RUNTIME_KEYS = ("device", "max_retries")  # train settings that change no model


class TrainingSkipped(Exception):
    """The data cannot support training; the message says why."""


@dataclasses.dataclass
class Setup:
    ws: Workspace
    ctx: Context
    specs: dict[str, ModelSpec]
    folds: list
    train_fps: dict[str, dict[str, Fingerprint]]
    predict_fps: dict[str, dict[str, Fingerprint]]
    baseline_units: dict[str, ModelSpec]
    baseline_fps: dict[str, dict[str, Fingerprint]]
    source_samples: set[str]


def prepare(cfg: Config) -> Setup:
    """Folds, unit specs and fingerprints from committed state (raises TrainingSkipped)."""
    from jobs.embed import driver_backbone

    ws = Workspace(cfg.run.out)
    bb = driver_backbone(cfg.embed)
    if not ws.markers(data.embeddings_table(bb.backbone_id)):
        raise TrainingSkipped(f"no embeddings of {bb.backbone_id} in {ws.root}: run `autt embed` first")
    subjects = data.subject_table(ws)
    try:
        folds = make_folds(subjects, cfg.protocol.split, cfg.protocol.folds)
    except FoldError as exc:
        raise TrainingSkipped(str(exc)) from exc
    classes = tuple(json.loads(io.read_text(ws.url("manifest", "_classes.json"))))
    text = data.read_text_features(ws, bb.backbone_id)
    p = cfg.protocol
    ctx = Context(bb.backbone_id, bb.weights_digest, classes, text, p.clip_len, p.stride,
                  p.min_face_frames)
    digests, emb_hash = data.input_digests(ws, bb.backbone_id)
    model_settings = {k: v for k, v in cfgmod.to_dict(cfg.train).items()
                      if k not in (*RUNTIME_KEYS, "seeds")}
    clip = {"clip_len": p.clip_len, "stride": p.stride, "min_face_frames": p.min_face_frames}
    specs, train_fps, predict_fps, baseline_units, baseline_fps = {}, {}, {}, {}, {}
    source_samples: set[str] = set()
    for fold in folds:
        rows = data.labelled_rows(ws, list(fold.source))
        _check_trainable(fold, rows)
        source_samples |= set(rows["sample_id"])
        source = data.digest_of([(s, int(y), digests.get(s)) for s, y in
                                 zip(rows["sample_id"], rows["label_index"])])
        targets = data.sample_rows(ws, list(fold.targets))
        target = data.digest_of([(s, digests.get(s)) for s in targets["sample_id"]])
        common = {"text": text.digest, "embeddings_config": emb_hash}
        for seed in cfg.train.seeds:
            model_id = f"{bb.backbone_id}.{fold.name}.s{seed}"
            specs[model_id] = ModelSpec(model_id, p.split, fold.fold, seed, fold.source, fold.targets)
            fp = Fingerprint(config={"train": {**model_settings, "seed": seed}, **clip,
                                     "prompts": cfgmod.to_dict(cfg.prompts), "classes": list(classes)},
                             inputs={"source": source, **common})
            train_fps[model_id] = {"models": fp}
            pred = Fingerprint(config=clip, inputs={"model": fp.value, "targets": target, **common})
            predict_fps[f"clip-au.{model_id}"] = {"predictions": pred, "au_activations": pred}
        unit = f"baselines.{bb.backbone_id}.{fold.name}"
        baseline_units[unit] = ModelSpec(unit, p.split, fold.fold, 0, fold.source, fold.targets)
        baseline_fps[unit] = {"predictions": Fingerprint(
            config=clip, inputs={"source": source, "targets": target, **common})}
    return Setup(ws, ctx, specs, folds, train_fps, predict_fps, baseline_units, baseline_fps,
                 source_samples)


def _check_trainable(fold, rows) -> None:
    subjects = sorted(set(rows["subject_id"]))
    if len(subjects) < 2:
        raise TrainingSkipped(f"fold {fold.name}: {len(subjects)} labelled source subject(s) "
                              f"{subjects}; CLIP-AU needs at least 2 (one is held out for validation)")
    if rows["label_index"].nunique() < 2:
        raise TrainingSkipped(f"fold {fold.name}: the source samples hold one class only "
                              f"({sorted(set(rows['label_index']))})")


def run(cfg: Config, run_id: str) -> list[StageRun]:
    """Plan every unit (refusing changes before anything is written), then train, then
    predict and run the baselines."""
    from pipeline.model.checkpoint import AUBank

    s = prepare(cfg)
    kw = dict(recompute=cfg.run.recompute, retry_failed=cfg.run.retry_failed)
    train_plan = plan(s.ws, "models", {u: f["models"] for u, f in s.train_fps.items()},
                      failure_statuses=frozenset({"failed"}), **kw)
    predict_plan = plan(s.ws, "predictions", {u: f["predictions"] for u, f in s.predict_fps.items()},
                        failure_statuses=frozenset({"failed"}), incremental=True, **kw)
    base_plan = plan(s.ws, "predictions", {u: f["predictions"] for u, f in s.baseline_fps.items()},
                     failure_statuses=frozenset({"failed"}), incremental=True, **kw)
    settings = {k: v for k, v in cfgmod.to_dict(cfg.train).items()
                if k not in (*RUNTIME_KEYS, "seeds")}
    settings["device"] = cfg.train.device
    au_bank = AUBank.from_prompt_config(cfg.prompts)
    preloaded = None
    if train_plan.todo:
        preloaded = data.read_sequences(s.ws, s.ctx.backbone_id,
                                        sorted({x for sp in s.specs.values() for x in sp.source}),
                                        s.source_samples)
    trained = StageRun(stage="train", skipped=len(train_plan.skip))
    for attempt in range(cfg.train.max_retries + 1):  # a failed model is retried, then recorded
        factory = _train_factory(cfg, s, settings, au_bank, preloaded)
        r = run_shards("train", s.ws, factory, train_plan, s.train_fps, run_id, cfg.run,
                       primary="models")
        trained.done += r.done
        trained.failed = r.failed
        trained.seconds += r.seconds
        if not r.failed or attempt == cfg.train.max_retries:
            break
        train_plan = dataclasses.replace(train_plan, run=sorted(r.failed), retry=[], delta=[], skip=[])
    results = [trained]
    models = s.ws.markers("models")
    # only models made with today's fingerprint (a failed retrain leaves the old one: unused)
    ready = {u for u in s.specs
             if u in models and models[u]["fingerprint"] == s.train_fps[u]["models"].value}
    checkpoints = {u: s.ws.files("models", u, models[u])["checkpoint"] for u in ready}
    units = {f"clip-au.{u}": s.specs[u] for u in ready}
    predict_plan = dataclasses.replace(
        predict_plan, run=[u for u in predict_plan.run if u in units],
        delta=[u for u in predict_plan.delta if u in units],
        retry=[u for u in predict_plan.retry if u in units])
    results.append(run_shards("predict", s.ws, functools.partial(PredictStage, units, s.ctx, checkpoints),
                              predict_plan, s.predict_fps, run_id, cfg.run, primary="predictions"))
    results.append(run_shards("baselines", s.ws, functools.partial(BaselineStage, s.baseline_units, s.ctx),
                              base_plan, s.baseline_fps, run_id, cfg.run, primary="predictions"))
    return results


def _train_factory(cfg: Config, s: Setup, settings: dict, au_bank, preloaded):
    """Builds the TrainStage on each worker; on Ray the labelled sequences travel through
    the object store once, not once per unit."""
    progress = _say if cfg.run.progress else None
    if cfg.run.executor == "ray" and preloaded is not None:
        import ray

        ref = ray.put(preloaded)
        return functools.partial(_make_train_from_ref, [ref], s.specs, s.ctx, settings, au_bank, progress)
    return functools.partial(_make_train, s.specs, s.ctx, settings, au_bank, preloaded, progress)


def _make_train(specs, ctx, settings, au_bank, preloaded, progress, num_threads):
    return TrainStage(specs, ctx, settings, au_bank, num_threads, preloaded, progress)


def _make_train_from_ref(refs, specs, ctx, settings, au_bank, progress, num_threads):
    import ray

    return TrainStage(specs, ctx, settings, au_bank, num_threads, ray.get(refs[0]), progress)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
