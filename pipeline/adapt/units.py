"""Test-time adaptation units: one per (model, method, target subject, seed), committed like
a shard by ``pipeline.shards.execute``.

In: a workspace with committed embeddings, text features and (for the CLIP-AUTT methods)
CLIP-AU checkpoints; ``AdaptSpec`` per unit. A unit reads its subject's manifest rows
WITHOUT labels (``data.sample_rows``) and cached sequences; TTA-CaP also reads its fold's
source subjects' labelled clips (source labels shape its prototypes; target labels never
enter). Out, committed together:
- ``adaptation``: the predictions schema, per target sample one row per step (0 = before any
  update, with the window each clip chose) and the final prediction again with step null;
  samples with too few face frames get one ``insufficient_faces`` row;
- ``adapt_units``: one row per unit (steps, losses, timings, device);
- the adapted context as ``context.safetensors`` + ``context.json`` in the unit's own folder
  beside the Parquet parts (CLIP-AUTT methods).

Workers are long-lived: the text tower (never the image tower: it is dropped on load) and
each checkpoint are loaded once per worker and reused by every unit it runs.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline import io
from pipeline.adapt.config import MODEL_METHODS, REFERENCE_METHOD, AdaptSection
from pipeline.model.units import Context, _TargetStage
from pipeline.shards import FILES_KEY

CONTEXT_FILE = "context.safetensors"


@dataclass(frozen=True)
class AdaptSpec:
    unit_id: str
    method: str
    subject: str
    model_id: str | None  # None: TTA-CaP and TPT adapt no CLIP-AU model
    fold: int
    seed: int | None  # None: deterministic methods
    source: tuple[str, ...] = ()  # the fold's source subjects (TTA-CaP's prototypes)
    context: str | None = None  # an adapted context's folder: applied to new samples, 0 steps
    exclude: tuple[str, ...] = ()  # samples left out (those the context was adapted on)

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.subject,)


@dataclass(frozen=True)
class AdaptRun:
    """What every unit of one run shares besides the ``Context``."""

    section: AdaptSection
    steps: int  # protocol.tta_steps
    window: int  # protocol.window
    embed: object  # the EmbedConfig naming the backbone (its text tower is loaded from it)
    prompts: object  # the PromptConfig the text features were made with


class AdaptStage(_TargetStage):
    name = "adapt"
    outputs = ("adaptation", "adapt_units")

    def __init__(self, units: dict[str, AdaptSpec], ctx: Context, run: AdaptRun,
                 checkpoints: dict[str, str], num_threads: int | None = None,
                 progress: Callable[[str], None] | None = None):
        super().__init__(units, ctx, num_threads)
        self.run, self.checkpoints, self.progress = run, checkpoints, progress
        self._tower = None  # (TextTower, tokenizer), loaded on first use
        self._heads: dict[str, object] = {}
        self._banks: dict[tuple[str, ...], object] = {}

    # ---- what the worker holds -------------------------------------------------------
    @property
    def device(self):
        import torch

        want = self.run.section.device
        if want == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("adapt.device='cuda' but this worker sees no CUDA device")
        return torch.device("cuda" if want != "cpu" and torch.cuda.is_available() else "cpu")

    def tower(self):
        """The frozen text tower and tokenizer of the backbone; the image tower is dropped."""
        if self._tower is None:
            from pipeline.adapt.text_forward import TextTower
            from pipeline.embed.backbone import load_backbone

            bb = load_backbone(dataclasses.replace(self.run.embed, device=str(self.device)))
            if bb.weights_digest != self.ctx.weights_digest:
                raise RuntimeError(f"the text tower loaded for {bb.backbone_id} has weights digest "
                                   f"{bb.weights_digest[:12]}, the cache was made with "
                                   f"{self.ctx.weights_digest[:12]}: the embed settings changed")
            tower = TextTower(bb.model)
            tower.requires_grad_(False)
            self._tower = (tower, bb.tokenizer)
            del bb  # the whole CLIP (image tower included) is freed here
        return self._tower

    def head(self, model_id: str):
        if model_id not in self._heads:
            from pipeline.model.checkpoint import load_checkpoint

            head, info = load_checkpoint(self.checkpoints[model_id], device=self.device)
            if tuple(info.classes) != self.ctx.classes:
                raise RuntimeError(f"model {model_id} predicts {list(info.classes)}, the workspace's "
                                   f"classes are {list(self.ctx.classes)}")
            head.requires_grad_(False)
            self._heads[model_id] = head
        return self._heads[model_id]

    # ---- load (the executor calls it before __call__) -----------------------------------
    def load(self, ws, unit: str) -> dict[str, np.ndarray]:
        rows = super().load(ws, unit)  # the subject's ok samples, no label column
        spec = self.units[unit]
        if spec.exclude:
            keep = ~np.isin(rows["sample_id"].astype(str), list(spec.exclude))
            rows = {k: v[keep] for k, v in rows.items()}
        if spec.method == "tta-cap-frozen" and spec.source not in self._banks:
            from pipeline.adapt.tta_cap import source_bank

            clips = self.source_clips(ws, spec.source)
            self._banks[spec.source] = None if clips is None else source_bank(*clips)  # once per fold
        return rows

    # ---- one unit, or several computed together ------------------------------------------
    def __call__(self, rows: dict[str, np.ndarray]) -> dict:
        unit, spec, n_faces, ok = self._begin(rows)
        out = None
        if ok.any():
            t0 = time.perf_counter()
            out = self._adapt(spec, rows, ok)
            out["seconds"] = {"total": time.perf_counter() - t0, **out.get("seconds", {})}
        return self._produce(rows, unit, spec, n_faces, ok, out)

    def batch(self, rows_list: list[dict[str, np.ndarray]]) -> list[dict]:
        """Several units (``pipeline.shards.execute_group``): CLIP-AUTT units of one model,
        method and seed adapt their subjects together, ``subjects_per_batch`` of them (or as
        many as the memory budget allows) sharing each text forward; each subject's result is
        its own (within 1e-5 of adapting it alone). Other units run one by one."""
        begun = [self._begin(rows) for rows in rows_list]
        outs: list[dict | None] = [None] * len(rows_list)
        together: dict[tuple, list[int]] = {}
        for i, (_, spec, _, ok) in enumerate(begun):
            if not ok.any():
                continue
            if spec.method in MODEL_METHODS and not spec.context:
                together.setdefault((spec.model_id, spec.method, spec.seed), []).append(i)
            else:
                t0 = time.perf_counter()
                outs[i] = self._adapt(spec, rows_list[i], ok)
                outs[i]["seconds"] = {"total": time.perf_counter() - t0, **outs[i].get("seconds", {})}
        for idx in together.values():
            got = self._clip_autt([(begun[i][1], rows_list[i], begun[i][3]) for i in idx])
            for i, out in zip(idx, got):
                outs[i] = out
        return [self._produce(rows_list[i], unit, spec, n_faces, ok, outs[i])
                for i, (unit, spec, n_faces, ok) in enumerate(begun)]

    def _produce(self, rows: dict, unit: str, spec: AdaptSpec, n_faces: np.ndarray, ok: np.ndarray,
                 out: dict | None) -> dict:
        """The unit's tables from its method's output (None: no sample had enough faces)."""
        final = self._rows(rows, unit, spec.method, spec.model_id, spec.fold, spec.seed,
                           np.zeros((0, len(self.ctx.classes))), np.zeros(len(ok), bool), n_faces)
        steps_rows: list[dict] = []
        info = {"steps": 0, "final_step": None, "losses": None, "seconds": {}, "status": "no_clips",
                "error": "no target sample has enough face frames"}
        files = {}
        if out is not None:
            seconds = out["seconds"]
            final = self._rows(rows, unit, spec.method, spec.model_id, spec.fold, spec.seed,
                               out["probs"][out["final_step"]], ok, n_faces,
                               None if out.get("au") is None else out["au"][out["final_step"]])
            if out.get("windows") is not None:
                final["window_start"] = _at(ok, out["windows"][out["final_step"]])
            for step in range(len(out["probs"]) if out.get("trajectory") else 0):
                part = self._rows(rows, unit, spec.method, spec.model_id, spec.fold, spec.seed,
                                  out["probs"][step], ok, n_faces,
                                  None if out.get("au") is None else out["au"][step])
                part["step"] = [step] * len(ok)
                part["window_start"] = _at(ok, out["windows"][step]) if out.get("windows") is not None \
                    else [None] * len(ok)
                steps_rows.append({k: [v for v, keep in zip(vals, ok) if keep] for k, vals in part.items()})
            info = {"steps": out["steps"], "final_step": out["final_step"], "losses": out.get("losses"),
                    "seconds": seconds, "status": "ok", "error": None}
            if out.get("context") is not None and not spec.context:
                files = {"adaptation": {"context": _context_writer(out["context"], spec, self.ctx)}}
            if self.progress:
                self.progress(f"[adapt {unit}] {int(ok.sum())} clip(s), {out['steps']} step(s), "
                              f"{seconds['total']:.2f}s")
        table = {k: list(v) for k, v in final.items()}
        for part in steps_rows:
            for k, v in part.items():
                table[k].extend(v)
        unit_row = {"unit_id": [unit], "model_id": [spec.model_id], "method": [spec.method],
                    "subject_id": [spec.subject], "fold": [spec.fold], "seed": [spec.seed],
                    "backbone_id": [self.ctx.backbone_id], "n_samples": [len(ok)],
                    "n_clips": [int(ok.sum())], "steps": [info["steps"]], "final_step": [info["final_step"]],
                    "losses": [None if info["losses"] is None else np.asarray(info["losses"], np.float32)],
                    "seconds": [sorted((k, float(v)) for k, v in info["seconds"].items())],
                    "device": [str(self.device)], "status": [info["status"]], "error": [info["error"]]}
        return {"adaptation": table, "adapt_units": unit_row, **({FILES_KEY: files} if files else {})}

    def _adapt(self, spec: AdaptSpec, rows: dict, ok: np.ndarray) -> dict:
        """Run the unit's method on its subject's ok samples. Out: probs [steps + 1 or 1, n, C],
        final_step, and where the method has them windows, AU scores, losses, context."""
        if spec.method in MODEL_METHODS:
            return self._clip_autt([(spec, rows, ok)])[0]
        clips, _ = self._clips(rows, ok)
        if spec.method == "tta-cap-frozen":
            from pipeline.adapt.tta_cap import tta_cap_subject

            bank = self._banks.get(spec.source)
            if bank is None:
                raise RuntimeError(f"fold {spec.fold}: no source clips with enough face frames for "
                                   "TTA-CaP's prototypes")
            got = tta_cap_subject(clips, self.ctx.text.classes, bank)
            return {"probs": got.probs[None], "final_step": 0, "steps": 0}
        if spec.method == "tpt":
            from pipeline.adapt.tpt import TPT, TPTConfig

            tower, tokenizer = self.tower()
            got = TPT(tower, self._class_tokens(tower, tokenizer),
                      TPTConfig(window=self.run.window, fast=self.run.section.fast))(clips)
            return {"probs": got.probs[None], "final_step": 0, "steps": TPTConfig().steps}
        raise ValueError(f"unknown adaptation method {spec.method!r}")

    def _clip_autt(self, items: list[tuple[AdaptSpec, dict, np.ndarray]]) -> list[dict]:
        """CLIP-AUTT (or its reference option, or 0 steps) for units of one model, method and
        seed, ``(spec, rows, ok)`` each; their subjects share text forwards as the batch size
        allows. A CUDA out-of-memory error halves the subjects per forward, then the clips per
        head forward, before it counts as the unit's failure."""
        import torch

        from pipeline.adapt.autt import CLIPAUTT, SubjectInputs
        from pipeline.adapt.budget import subjects_per_forward
        from pipeline.adapt.context import reference_tokens, template_tokens

        spec = items[0][0]
        tower, tokenizer = self.tower()
        head = self.head(spec.model_id)
        steps = 0 if spec.context else self.run.steps  # an adapted context is applied as it is
        cfg = self.run.section.library_config(spec.method, steps, self.run.window, spec.seed or 0)
        start = None
        if spec.context:
            from safetensors.numpy import load

            start = load(io.read_bytes(io.join(spec.context, CONTEXT_FILE)))["context"]
        prompts = list(self.ctx.text.au_prompts)
        if spec.method == REFERENCE_METHOD:
            tokens = reference_tokens(tower, tokenizer, prompts, cfg.n_ctx)
            inputs = [SubjectInputs(clips=None, strided=tuple(
                rows["_seq"][i].astype(np.float32)[::self.ctx.stride] for i in np.flatnonzero(ok)))
                for _, rows, ok in items]
        else:
            tokens = template_tokens(tower, tokenizer, prompts, self.run.prompts.n_ctx)
            inputs = [SubjectInputs(clips=self._clips(rows, ok)[0]) for _, rows, ok in items]
        cfg = dataclasses.replace(cfg, subjects_per_batch=subjects_per_forward(
            self.run.section.subjects_per_batch, inputs, tower, tokens, cfg))
        while True:
            try:
                results = CLIPAUTT(head, tower, tokens, cfg).run(inputs, start)
                break
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if cfg.subjects_per_batch > 1:  # fewer subjects per text forward
                    cfg = dataclasses.replace(cfg, subjects_per_batch=cfg.subjects_per_batch // 2)
                    continue
                n = max(len(x.strided or x.clips) for x in inputs)
                chunk = (cfg.chunk_size or n) // 2  # then fewer clips per head forward
                if chunk < 1:
                    raise
                cfg = dataclasses.replace(cfg, chunk_size=chunk)
        return [{"probs": r.probs, "au": r.au_scores, "windows": r.windows, "losses": r.losses,
                 "final_step": r.final_step, "steps": cfg.steps, "context": r.context, "trajectory": True,
                 "seconds": {k: float(v) for k, v in r.seconds.items()}} for r in results]

    def _class_tokens(self, tower, tokenizer):
        from pipeline.adapt.context import template_tokens
        from pipeline.embed.prompts import class_prompts, count_tokens

        cfg = self.run.prompts
        prefix = cfg.class_template.split("{class}")[0].strip()
        return template_tokens(tower, tokenizer, class_prompts(cfg, list(self.ctx.classes)),
                               count_tokens(prefix, tokenizer) - 2)


def _at(ok: np.ndarray, values: np.ndarray) -> list:
    """Per sample: the value of its clip (ok samples, in order) or None."""
    out: list = [None] * len(ok)
    for j, i in enumerate(np.flatnonzero(ok)):
        out[i] = int(values[j])
    return out


def _context_writer(context: np.ndarray, spec: AdaptSpec, ctx: Context):
    """Writes the adapted context into the unit's folder (safetensors: never pickled)."""

    def write(url: str) -> None:
        from safetensors.numpy import save

        io.write_bytes_atomic(io.join(url, CONTEXT_FILE),
                              save({"context": np.ascontiguousarray(context, np.float32)}))
        meta = {"unit_id": spec.unit_id, "method": spec.method, "model_id": spec.model_id,
                "subject_id": spec.subject, "fold": spec.fold, "seed": spec.seed,
                "backbone_id": ctx.backbone_id, "weights_digest": ctx.weights_digest,
                "au_prompts": list(ctx.text.au_prompts), "shape": list(context.shape)}
        io.write_text_atomic(io.join(url, "context.json"), json.dumps(meta, indent=1))

    return write
