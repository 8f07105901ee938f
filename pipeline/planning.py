"""Planning units of work: fingerprints, and what a rerun does with each unit.

In: a table's done markers and the fingerprint (config, input digests, code version) of
every unit a command would make. Out: a ``Plan`` (run, retry, delta, skip; units made by
older code are kept and reported), or ``StageChanged`` naming what changed when done units
were made differently and ``recompute`` is off. Reads markers only, never data parts;
``pipeline.shards`` executes the plan.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

import pipeline
from pipeline import config as cfgmod
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)
CODE_VERSION = pipeline.__version__


class StageChanged(RuntimeError):
    """Done units were made with another config or other inputs."""


@dataclass(frozen=True)
class Fingerprint:
    config: dict  # the stage's own config section(s), as plain data
    inputs: dict  # input name -> content digest
    code_version: str = CODE_VERSION
    # How vectors are computed (device, precision) that the table already holds: a unit
    # computing them otherwise is refused. None: anything goes. Not part of the value.
    numerics: tuple[str, ...] | None = None

    @property
    def config_hash(self) -> str:
        return cfgmod.config_hash(self.config)

    @property
    def value(self) -> str:
        payload = json.dumps([self.config_hash, sorted(self.inputs.items()), self.code_version])
        return hashlib.sha256(payload.encode()).hexdigest()[:24]


@dataclass
class Plan:
    run: list[str] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)
    delta: list[str] = field(default_factory=list)  # inputs changed: redo changed samples
    skip: list[str] = field(default_factory=list)
    stale_code: list[str] = field(default_factory=list)

    def mode(self, shard_id: str) -> str:
        if shard_id in self.retry:
            return "retry"
        return "delta" if shard_id in self.delta else "full"

    @property
    def todo(self) -> list[str]:
        return sorted(self.run + self.retry + self.delta)


def plan(ws: Workspace, table: str, fingerprints: dict[str, Fingerprint], *, recompute: bool,
         retry_failed: bool, failure_statuses: frozenset[str],
         config_only: frozenset[str] = frozenset(), done: dict[str, dict] | None = None,
         incremental: bool | str = False) -> Plan:
    """Decide, for every unit, whether to run, retry or skip it; refuse on changes.

    ``config_only``: units whose inputs are being remade in this same run (their marker is
    compared on config alone; they run). With ``retry_failed``, a unit whose inputs changed
    but whose config did not is redone whole (its upstream rows were just retried). An
    ``incremental`` stage (a per-sample cache such as the embeddings) always follows its
    inputs: only the samples whose input rows changed are redone (``delta``);
    ``incremental="whole"``: a unit whose inputs changed is redone whole (a unit whose
    result depends on all its inputs at once, such as a subject's adaptation).
    ``done``: the table's markers when the caller has read them already (one read per table).
    """
    done = ws.markers(table) if done is None else done
    result = Plan()
    changes: dict[str, list[str]] = {}
    for shard_id, fp in sorted(fingerprints.items()):
        marker = done.get(shard_id)
        if marker is None:
            result.run.append(shard_id)
            continue
        why = describe_change(marker, fp, inputs=shard_id not in config_only)
        config_changed = marker["config_hash"] != fp.config_hash
        if why and incremental and not config_changed and not recompute:
            # a per-sample cache follows its inputs; a whole-unit result is redone
            (result.run if incremental == "whole" else result.delta).append(shard_id)
            continue
        if why and not recompute and (config_changed or not retry_failed):
            changes[shard_id] = why
            continue
        if why or shard_id in config_only:
            result.run.append(shard_id)
            continue
        if marker["code_version"] != fp.code_version:
            result.stale_code.append(shard_id)
        failed = sum(n for s, n in marker.get("status_counts", {}).items() if s in failure_statuses)
        if retry_failed and failed:
            result.retry.append(shard_id)
        else:
            result.skip.append(shard_id)
    if changes:
        reasons = sorted({r for rs in changes.values() for r in rs})
        shards = sorted(changes)
        shown = ", ".join(shards[:5]) + (f" and {len(shards) - 5} more" if len(shards) > 5 else "")
        raise StageChanged(
            f"{table}: {len(shards)} done unit(s) ({shown}) were made differently: "
            + "; ".join(reasons) + ". Rerun with --recompute to redo them (or --retry-failed "
            "where upstream rows were retried), or use another --out.")
    if result.stale_code:
        log.warning("%s: %d done unit(s) were made by code version %s (now %s); they are kept. "
                    "Use --recompute to redo them.", table, len(result.stale_code),
                    done[result.stale_code[0]]["code_version"], CODE_VERSION)
    return result


def describe_change(marker: dict, fp: Fingerprint, inputs: bool = True) -> list[str]:
    """What differs between a done marker and a new fingerprint (empty: nothing)."""
    why = []
    if marker["config_hash"] != fp.config_hash:
        changed = cfgmod.diff(marker.get("config", {}), fp.config)
        why.append("config changed (" + ", ".join(changed or ["config hash"]) + ")")
    old_inputs = marker.get("inputs", {}) if inputs else {}
    for name in sorted(set(old_inputs) | set(fp.inputs if inputs else {})):
        if old_inputs.get(name) != fp.inputs.get(name):
            why.append(f"input {name} changed")
    return why
