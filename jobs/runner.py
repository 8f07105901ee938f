"""Run a stage's shards on a Ray cluster (or in-process) with progress and fault tolerance.

In: a stage factory (builds the heavy stage once per worker, given its torch thread count),
the shards to do and their fingerprints. Out: one summary per shard; shards that raised are
reported in one line each, their full tracebacks appended to ``OUT/runs/<run id>/errors.log``,
and the others finish. Ray appears here, never in the library's stages.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from jobs import progress as _bars
from pipeline import io
from pipeline.config import RunConfig
from pipeline.planning import Fingerprint, Plan
from pipeline.shards import execute, execute_group, local_node_id
from pipeline.workspace import Workspace

# Environment the actors need as the driver has it: fault hooks, the model hub, and storage
# endpoints and credentials (a cluster started earlier does not see what was set since).
FORWARDED_ENV = ("AUTT_", "HF_", "AWS_", "FSSPEC_")
# Of those, the ones that hold credentials. Ray logs a runtime_env whole (its env_vars in the
# runtime_env agent's log), so these reach the actors as constructor arguments instead, set
# in the actor's environment before its stage is built; their values are never logged.
SECRET_ENV_WORDS = ("SECRET", "TOKEN", "PASSWORD", "CREDENTIAL", "KEY")
WAIT_NOTICE_S = 120
# The Ray resources actors request (num_cpus / num_gpus) and the cluster is sized by: a
# cluster's nodes must declare their GPUs under this name (infra/ configs; tests/test_infra.py).
CPU, GPU = "CPU", "GPU"
log = logging.getLogger(__name__)  # no shard finished for this long: print what the actors are waiting for


@dataclass
class StageRun:
    stage: str
    done: list[dict] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # shard -> one-line error message
    skipped: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)  # stage-specific counts for the summary

    def status_counts(self, table: str) -> Counter:
        c: Counter = Counter()
        for s in self.done:
            c.update(s["tables"].get(table, {}).get("status_counts", {}))
        return c


class _Worker:
    """Holds one built stage; runs shards on it (a Ray actor, or a plain object locally).
    On Ray its torch threads are the CPUs Ray gave this actor; locally torch's default.
    Every unit's statistics record the node it ran on: its Ray node's id on Ray, the stable
    local id (``local:<hostname>``) in-process."""

    def __init__(self, factory: Callable, on_ray: bool, secret_env: dict[str, str] | None = None):
        os.environ.update(secret_env or {})  # before anything reads them (storage clients)
        import pipeline  # noqa: F401  (torchvision fix in this process)

        self.num_threads = actor_threads() if on_ray else None
        self.node_id = node_id() if on_ray else local_node_id()
        self.stage = factory(self.num_threads)

    def run(self, root: str, shard_id: str, fps: dict, mode: str, run_id: str,
            strict: bool = False) -> dict:
        return execute(Workspace(root), self.stage, shard_id, fps, mode, run_id, strict=strict,
                       node_id=self.node_id)

    def run_group(self, root: str, shards: list[str], fps: dict, modes: dict, run_id: str,
                  strict: bool = False) -> dict:
        """Per shard: its summary, or (one-line error, full traceback) if it failed."""
        got = execute_group(Workspace(root), self.stage, shards, fps, modes, run_id, strict=strict,
                            node_id=self.node_id)
        return {s: v if isinstance(v, dict) else
                (_one_line(v), "".join(traceback.format_exception(v))) for s, v in got.items()}


def node_id() -> str:
    """Where the calling process runs: its Ray node's id (hex) inside a Ray worker or a driver
    connected to Ray, else the stable local id (``local:<hostname>``). Ray is not imported
    for this: a process that never imported it is not on Ray."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()
    return local_node_id()


def forwarded_env() -> tuple[dict[str, str], dict[str, str]]:
    """The driver's environment its actors need (``FORWARDED_ENV``), split into the plain
    variables (a runtime_env's env_vars) and the credentials (``SECRET_ENV_WORDS`` in the
    name: passed to each actor's constructor, never through Ray's logged runtime_env)."""
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    secret = {k: v for k, v in env.items() if any(w in k.upper() for w in SECRET_ENV_WORDS)}
    return {k: v for k, v in env.items() if k not in secret}, secret


def actor_threads() -> int:
    """Torch threads for the calling Ray actor: the CPUs Ray assigned to it (rounded, at
    least 1), which only the actor knows for sure (the driver sees the whole cluster)."""
    import ray

    cpus = float(ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0))
    return max(1, round(cpus))


def errors_log_url(ws: Workspace, run_id: str) -> str:
    """Where the full tracebacks of a run's failed shards go."""
    return ws.url("runs", run_id, "errors.log")


def ray_session(run: RunConfig):
    """Start (or join) Ray once; returns a callable that shuts it down if we started it."""
    import ray

    if ray.is_initialized():
        return lambda: None
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    kwargs = dict(include_dashboard=False, log_to_driver=True, logging_level=logging.WARNING)
    if run.ray_address:
        ray.init(address=run.ray_address, **kwargs)
    else:
        ray.init(num_cpus=run.num_cpus, **kwargs)
    return ray.shutdown


def _resources(run: RunConfig, n_todo: int, wants_gpu: bool | float) -> tuple[int, float, float]:
    """(workers, cpus per worker, gpus per worker) for the alive nodes of the cluster."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive", True)]
    return plan_resources(nodes, run.workers, n_todo, wants_gpu)


def plan_resources(nodes: list[dict[str, float]], workers: int | None, n_todo: int,
                   wants_gpu: bool | float) -> tuple[int, float, float]:
    """(workers, cpus per worker, gpus per worker) from each node's resources. ``wants_gpu``:
    True for a whole GPU per worker, a fraction in (0, 1) to share each GPU between workers.
    An actor lives on one node: its CPUs never exceed what one node has (on a GPU node, that
    node's CPUs over the actors its GPUs take), slightly under a whole share, so a driver-side
    task or a restarted actor still fits. Without node information, one 1-CPU node."""
    nodes = [n for n in nodes if n.get(CPU, 0) > 0 or n.get(GPU, 0) > 0] or [{CPU: 1.0}]
    cpus = sum(float(n.get(CPU, 0)) for n in nodes)
    share = 1.0 if wants_gpu is True else float(wants_gpu or 0)
    gpu_nodes = [g for g in nodes if share and float(g.get(GPU, 0)) >= share]
    if gpu_nodes:
        slots = sum(int(float(g[GPU]) / share + 1e-9) for g in gpu_nodes)  # actors the GPUs take
        n = max(1, min(workers or slots, n_todo))
        fit = min(float(g.get(CPU, 0)) * share / float(g[GPU]) for g in gpu_nodes)
        return n, max(0.05, min(cpus / n, 4.0, fit) * 0.9), share
    n = max(1, min(workers or int(cpus), n_todo))
    biggest = max(float(x.get(CPU, 0)) for x in nodes)
    return n, max(0.05, min(cpus / n, biggest) * 0.9), 0.0


def run_shards(name: str, ws: Workspace, factory: Callable, plan: Plan,
               fingerprints: dict[str, dict[str, Fingerprint]], run_id: str, run: RunConfig,
               *, wants_gpu: bool | float = False, primary: str | None = None,
               group_key: Callable[[str], object] | None = None, group_size: int = 1) -> StageRun:
    """Execute ``plan.todo`` shards; ``fingerprints[shard][table]``. With ``group_size`` > 1,
    consecutive shards of equal ``group_key`` go to a worker together (``execute_group``:
    computed together where the stage can, each still committed on its own)."""
    result = StageRun(stage=name, skipped=len(plan.skip))
    todo = plan.todo
    t0 = time.perf_counter()
    if not todo:
        _say(run, f"[{name}] nothing to do ({len(plan.skip)} shard(s) already done)")
        return result
    _say(run, f"[{name}] {len(todo)} shard(s) to do, {len(plan.skip)} already done")
    items = _groups(todo, group_key, group_size)
    bar = _bars.UnitProgress(run.progress, name, len(todo))
    state = _Progress(run, ws, run_id, name, result, len(todo), primary, fingerprints, t0, bar)
    try:
        if run.executor == "local":
            _run_local(state, factory, plan, items)
        else:
            _run_on_ray(state, factory, plan, items, wants_gpu)
    finally:
        bar.close()
    result.seconds = time.perf_counter() - t0
    return result


def _groups(todo: list[str], key: Callable[[str], object] | None, size: int) -> list[list[str]]:
    """Consecutive shards of one key, at most ``size`` to a group (1: each on its own)."""
    if size <= 1 or key is None:
        return [[s] for s in todo]
    out: list[list[str]] = []
    for shard in todo:
        if out and len(out[-1]) < size and key(out[-1][0]) == key(shard):
            out[-1].append(shard)
        else:
            out.append([shard])
    return out


@dataclass
class _Progress:
    """What reporting a unit's end needs: the summary, failure notes, the progress line."""

    run: RunConfig
    ws: Workspace
    run_id: str
    name: str
    result: StageRun
    total: int
    primary: str | None
    fingerprints: dict
    t0: float
    bar: object

    def done(self, summary: dict) -> None:
        self.result.done.append(summary)
        self.bar.advance(_progress_line(self.name, self.result, self.total, summary, self.primary,
                                        self.t0))

    def failed(self, shard: str, line: str, full: str) -> None:
        _record_failure(self.run, self.ws, self.run_id, self.name, shard, self.result, line,
                        self.primary or next(iter(self.fingerprints[shard])), full)

    def outcome(self, shard: str, got) -> bool:
        """Report one unit's summary or failure ``(line, full text)``; True if it failed."""
        if isinstance(got, dict):
            self.done(got)
            return False
        self.failed(shard, *got)
        return True


def _run_local(state: _Progress, factory: Callable, plan: Plan, items: list[list[str]]) -> None:
    worker = _Worker(factory, on_ray=False)
    run, ws, fps = state.run, state.ws, state.fingerprints
    for item in items:
        if len(item) > 1:
            got = worker.run_group(ws.root, item, {s: fps[s] for s in item},
                                   {s: plan.mode(s) for s in item}, state.run_id, run.strict)
            failed = [state.outcome(s, got[s]) for s in item]
            if run.strict and any(failed):
                break
            continue
        shard = item[0]
        try:
            summary = worker.run(ws.root, shard, fps[shard], plan.mode(shard), state.run_id,
                                 run.strict)
        except Exception as exc:  # a failed shard must not stop the others
            state.failed(shard, _one_line(exc), "".join(traceback.format_exception(exc)))
            if run.strict:
                break  # --strict: the first fault aborts the command
            continue
        state.done(summary)


def _run_on_ray(state: _Progress, factory: Callable, plan: Plan, items: list[list[str]],
                wants_gpu: bool | float) -> None:
    import ray

    run, ws, fps, name = state.run, state.ws, state.fingerprints, state.name
    n, cpus, gpus = _resources(run, len(items), wants_gpu)
    env, secrets = forwarded_env()
    actor_cls = ray.remote(_Worker).options(
        num_cpus=cpus, num_gpus=gpus, max_restarts=2, max_task_retries=2,
        runtime_env={"env_vars": env} if env else None)
    actors = [actor_cls.remote(factory, True, secrets) for _ in range(n)]
    pending: dict = {}
    queue = list(items)
    try:
        free = list(actors)
        while queue or pending:
            while queue and free:
                item = queue.pop(0)
                actor = free.pop()
                if len(item) > 1:
                    ref = actor.run_group.remote(ws.root, item, {s: fps[s] for s in item},
                                                 {s: plan.mode(s) for s in item}, state.run_id,
                                                 run.strict)
                else:
                    ref = actor.run.remote(ws.root, item[0], fps[item[0]], plan.mode(item[0]),
                                           state.run_id, run.strict)
                pending[ref] = (item, actor)
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_NOTICE_S)
            if not ready:  # say why nothing moves (e.g. actors that cannot be scheduled)
                _say(run, f"[{name}] waiting on {len(pending)} shard(s); each actor asks "
                          f"{cpus:.2f} CPU, {gpus:g} GPU; free now: {ray.available_resources()}")
                continue
            item, actor = pending.pop(ready[0])
            try:
                got = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                cause = getattr(exc, "cause", None)  # a task error: the worker's exception
                line = _one_line(cause if isinstance(cause, Exception) else exc)
                for shard in item:
                    state.failed(shard, line, _ray_text(exc))
                if run.strict:
                    queue.clear()  # --strict: start nothing more; shards in flight finish
                if isinstance(exc, ray.exceptions.RayActorError):
                    # out of restarts: replace it so the queue does not die with it
                    ray.kill(actor)
                    actors.remove(actor)
                    actor = actor_cls.remote(factory, True, secrets)
                    actors.append(actor)
                free.append(actor)
                continue
            free.append(actor)
            if len(item) == 1:
                state.done(got)
            elif any([state.outcome(s, got[s]) for s in item]) and run.strict:
                queue.clear()
    finally:
        for a in actors:
            ray.kill(a)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _ray_text(exc: BaseException) -> str:
    """A Ray failure in full, without terminal colours: for a task error, the worker's
    traceback (Ray's own frames left out) under a line saying where it ran; for an actor
    error, why its process died."""
    return re.sub(r"\x1b\[[0-9;]*m", "", str(exc))


def _record_failure(run: RunConfig, ws: Workspace, run_id: str, name: str, shard: str,
                    result: StageRun, line: str, table: str, full: str) -> None:
    """Keep the one-line message for the summary and in a note beside the unit's table (for
    `autt status`, until the unit commits); append the full text to the run's errors log
    (rewritten whole, atomically: failures are few) and point to it."""
    result.failed[shard] = line
    url = errors_log_url(ws, run_id)
    when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    try:
        ws.record_failure(table, shard, {"stage": name, "unit": shard, "error": line, "run_id": run_id,
                                         "at": when, "traceback_in": url})
        old = io.read_text(url) if io.exists(url) else ""
        io.write_text_atomic(url, f"{old}==== [{name}] shard {shard} failed at {when}\n"
                                  f"{full.rstrip()}\n\n", fault_hook=False)
    except OSError as exc:  # the store is down: say so, and keep the shard's own error
        log.warning("could not write %s (%s); the traceback of shard %s follows:\n%s", url, exc,
                    shard, full)
    _say(run, f"[{name}] shard {shard} FAILED: {line} (traceback in {url})")


def _progress_line(name: str, result: StageRun, total: int, summary: dict,
                   primary: str | None, t0: float) -> str:
    table = primary or next(iter(summary["tables"]))
    counts = summary["tables"].get(table, {}).get("status_counts", {})
    shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    done = len(result.done) + len(result.failed)
    return (f"[{name}] {done}/{total} shard {summary['shard_id']}: "
            f"{summary['tables'].get(table, {}).get('rows', 0)} rows ({shown}) "
            f"[{time.perf_counter() - t0:.1f}s]")


def _say(run: RunConfig, text: str) -> None:
    if run.progress:
        _bars.say(text)
