"""The pipeline jobs behind `autt ingest|faces|embed|run|demo`, read top to bottom.

In: a resolved Config and the command. Out: tables under ``cfg.run.out``, the resolved
config, summary and failed shards' tracebacks (``errors.log``) under ``OUT/runs/<run_id>/``,
and a summary on stdout. Every command here writes, so each holds the workspace lock
(``pipeline.lock``) from after its settings are checked until it ends. Ray is started once
per invocation (or joined with ``run.ray_address``) and always shut down.
"""

from __future__ import annotations

import functools
import json
import sys
import time

from jobs import ingest as ingest_job
from jobs.runner import StageRun, errors_log_url, ray_session
from pipeline import io, lock
from pipeline.config import Config, to_yaml
from pipeline.ingest.batches import SampleChanged
from pipeline.ingest.manifest import ManifestError
from pipeline.planning import StageChanged
from pipeline.workspace import Workspace, new_run_id


class UserError(Exception):
    """Errors that are the user's to fix: printed as one line, exit code 2."""


USER_ERRORS = (ManifestError, StageChanged, SampleChanged, FileNotFoundError, lock.WorkspaceLocked)


def defaults(command: str) -> list[str]:
    """Overrides applied before the user's (the demo's small, random-init CLIP)."""
    if command == "demo":
        from jobs.demo import DEMO_DEFAULTS

        return list(DEMO_DEFAULTS)
    return []


def main(command: str, cfg: Config, fused: bool = False, model: str | None = None,
         adapt_args: dict | None = None) -> int:
    run_id = new_run_id()
    ws = Workspace(cfg.run.out)
    try:
        results = _run_locked(command, cfg, fused, ws, run_id, model, adapt_args)
    except USER_ERRORS as exc:
        raise UserError(str(exc)) from exc
    _print_summary(ws, results, command)
    failed = {r.stage: r.failed for r in results if r.failed}
    where = f"full tracebacks in {errors_log_url(ws, run_id)}"
    if failed and cfg.run.strict:
        first = next(iter(next(iter(failed.values())).values()))
        print(f"autt {command}: error: aborted (--strict): {first} ({where})", file=sys.stderr)
        return 2
    if failed:
        print(f"autt {command}: shards failed: {json.dumps(failed)} ({where}); rerun the same "
              "command to resume", file=sys.stderr)
        return 1
    return 0


def _run_locked(command: str, cfg: Config, fused: bool, ws: Workspace, run_id: str,
                model: str | None = None, adapt_args: dict | None = None) -> list[StageRun]:
    """Check everything, take the workspace lock, run the stages, write the run's summary;
    the lock is released however this ends."""
    t0 = time.perf_counter()
    results: list[StageRun] = []
    held: lock.WorkspaceLock | None = None
    try:
        if command == "demo":
            from jobs.demo import prepare

            held = lock.acquire(ws.root, run_id, command)  # the demo's data go into OUT
            cfg = prepare(cfg)  # the demo's own data, manifest and classes
        # Everything that can be wrong with the settings or the manifest fails here,
        # before a cluster starts or anything is written.
        if command in ("embed", "run", "demo", "train", "adapt"):
            _check_backbone(cfg)
        prepared = ingest_job.load_rows(cfg, ws) if command in ("ingest", "run", "demo") else None
        held = held or lock.acquire(ws.root, run_id, command)
        _record_run(ws, run_id, command, cfg)
        stop = ray_session(cfg.run) if cfg.run.executor == "ray" else (lambda: None)
        try:
            _check_devices(cfg, command)
            for step in _steps(command, fused, prepared, model, adapt_args):
                results.extend(step(cfg, run_id))
                if results[-1].failed:
                    break  # downstream would miss those shards: resume with the same command
        finally:
            stop()
        _write_summary(ws, run_id, results, time.perf_counter() - t0)
        return results
    finally:
        if held is not None:
            held.release()


def _check_backbone(cfg: Config) -> None:
    """Load the model now: an unknown architecture or unreachable weights stop the command
    before any stage runs, as one line naming the value."""
    from jobs.embed import driver_backbone

    try:
        driver_backbone(cfg.embed)
    except (ValueError, RuntimeError, FileNotFoundError, OSError) as exc:
        raise UserError(f"embed.model={cfg.embed.model!r} embed.weights={cfg.embed.weights!r}: "
                        f"{exc}") from exc


DEVICE_KEYS = {"faces": ("faces",), "embed": ("faces", "embed"), "run": ("faces", "embed", "train", "adapt"),
               "demo": ("faces", "embed", "train", "adapt"), "train": ("train",), "adapt": ("adapt",),
               "predict": ("train", "adapt")}


def _check_devices(cfg: Config, command: str) -> None:
    """A stage set to ``device=cuda`` where the workers can have no GPU (no CUDA here for
    the local executor; no GPU in the Ray cluster) is the user's to fix: said once, naming
    the key, before any stage runs (not as every unit failing on its worker)."""
    wanted = [f"{s}.device" for s in DEVICE_KEYS.get(command, ())
              if getattr(getattr(cfg, s), "device", "") == "cuda"]
    if not wanted:
        return
    if cfg.run.executor == "ray":
        import ray

        gpus, where = ray.cluster_resources().get("GPU", 0), "the Ray cluster has no GPU"
    else:
        import torch

        gpus, where = torch.cuda.device_count(), "torch sees no CUDA device (executor local)"
    if not gpus:
        raise UserError(f"{', '.join(f'{k}=cuda' for k in wanted)} but {where}; use auto (a GPU "
                        "where a worker has one) or cpu")


def _steps(command: str, fused: bool, prepared, model: str | None = None,
           adapt_args: dict | None = None) -> list:
    """The stage functions a command runs, in order; each returns a list of StageRun."""
    from jobs import embed as embed_job
    from jobs import faces as faces_job

    ingest = [lambda cfg, run_id: [ingest_job.run(cfg, run_id, prepared)]]
    faces = [lambda cfg, run_id: [faces_job.run(cfg, run_id)]]
    embed = [lambda cfg, run_id: [embed_job.run(cfg, run_id)]]
    train = [functools.partial(_train, strict_data=command == "train")]
    adapt = [functools.partial(_adapt, strict_data=command == "adapt", **(adapt_args or {}))]
    return {"ingest": ingest, "faces": faces, "embed": [embed_job.run_fused] if fused else embed,
            "train": train, "adapt": adapt, "predict": [functools.partial(_predict, model=model,
                                            contexts=(adapt_args or {}).get("contexts"))],
            "report": [_report],
            "run": ingest + [embed_job.run_fused] + train + adapt + [_report],
            "demo": ingest + [embed_job.run_fused] + train + adapt + [_report]}[command]


def _adapt(cfg: Config, run_id: str, strict_data: bool, methods: tuple[str, ...] | None = None,
           subjects: tuple[str, ...] | None = None, model: str | None = None) -> list[StageRun]:
    """Test-time adaptation of every target subject; nothing to adapt is an error for
    `autt adapt` and a note for `autt run` / `autt demo`."""
    from jobs import adapt as adapt_job

    try:
        return adapt_job.run(cfg, run_id, methods, subjects, model)
    except adapt_job.AdaptSkipped as exc:
        if strict_data:
            raise UserError(f"cannot adapt: {exc}") from exc
        print(f"adaptation skipped: {exc}", file=sys.stderr)
        return [StageRun(stage="adapt", extra={"skipped_because": str(exc)})]


def _report(cfg: Config, run_id: str) -> list[StageRun]:
    """The results tables and the HTML report, from whatever predictions are committed."""
    from jobs import report as report_job

    t0 = time.perf_counter()
    try:
        url = report_job.run(cfg, run_id)
    except report_job.NothingToReport as exc:
        print(f"report skipped: {exc}", file=sys.stderr)
        return [StageRun(stage="report", extra={"skipped_because": str(exc)})]
    print(f"report: {url}")
    return [StageRun(stage="report", seconds=time.perf_counter() - t0, extra={"report": url})]


def _predict(cfg: Config, run_id: str, model: str | None, contexts: str | None = None) -> list[StageRun]:
    from jobs import adapt as adapt_job
    from jobs import predict as predict_job

    if contexts:
        try:
            return adapt_job.apply_contexts(cfg, run_id, contexts)
        except adapt_job.AdaptSkipped as exc:
            raise UserError(str(exc)) from exc
    try:
        return predict_job.run(cfg, run_id, model)
    except predict_job.PredictError as exc:
        raise UserError(f"--model {model}: {exc}") from exc


def _train(cfg: Config, run_id: str, strict_data: bool) -> list[StageRun]:
    """CLIP-AU and the baselines; data that cannot support training is an error for
    `autt train` and a note for `autt run` / `autt demo`, whose data stages are done."""
    from jobs import train as train_job

    try:
        return train_job.run(cfg, run_id)
    except train_job.TrainingSkipped as exc:
        if strict_data:
            raise UserError(f"cannot train: {exc}") from exc
        print(f"training skipped: {exc}", file=sys.stderr)
        return [StageRun(stage="train", extra={"skipped_because": str(exc)})]


def _record_run(ws: Workspace, run_id: str, command: str, cfg: Config) -> None:
    io.write_text_atomic(ws.url("runs", run_id, "config.yaml"),
                         f"# autt {command} (run {run_id})\n" + to_yaml(cfg))


def _write_summary(ws: Workspace, run_id: str, results: list[StageRun], seconds: float) -> None:
    summary = {"run_id": run_id, "seconds": round(seconds, 2), "stages": [
        {"stage": r.stage, "shards_done": len(r.done), "shards_skipped": r.skipped,
         "shards_failed": r.failed, "seconds": round(r.seconds, 2), **r.extra} for r in results]}
    io.write_text_atomic(ws.url("runs", run_id, "summary.json"), json.dumps(summary, indent=1))


def _print_summary(ws: Workspace, results: list[StageRun], command: str) -> None:
    for r in results:
        tables = sorted({t for s in r.done for t in s["tables"]})
        counts = {t: dict(r.status_counts(t)) for t in tables}
        print(f"{r.stage}: {len(r.done)} shard(s) done, {r.skipped} already done, "
              f"{len(r.failed)} failed in {r.seconds:.1f}s {json.dumps(counts) if counts else ''}")
    print("tables:")
    for table in ws.tables():
        print(f"  {table:<34} {ws.url(table)}")
    for name in ("errors", "stats"):
        for sub in io.listdir(ws.url(name)):
            print(f"  {name + '/' + sub:<34} {ws.url(name, sub)}")


__all__ = ["main", "defaults", "UserError"]
