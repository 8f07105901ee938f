"""The run's typed configuration: every section assembled into one frozen :class:`Config`.

In: an optional YAML file (a path, URL, or the name of a shipped config in
``pipeline/configs/``) and a list of ``section.field=value`` overrides. Out: a frozen
:class:`Config`. Unknown keys and bad values raise :class:`ConfigError` naming the key and
the value before any work starts.

Each stage owns its section in a light module of its own (``ingest.config``,
``faces.config``, ``embed.config``, ``embed.prompts``, ``demo.config``); this module only
assembles them, with the run's and the protocol's sections. The primitives (building,
``to_dict``, ``config_hash``, ``diff``) live in ``config_core`` and are re-exported here.
Nothing imported here loads torch, PIL or a media decoder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from pipeline import io
from pipeline.adapt.config import AdaptSection
from pipeline.config_core import (
    ConfigError,
    apply_overrides,
    build,
    config_hash,
    diff,
    to_dict,
    to_yaml,
)
from pipeline.demo.config import DemoConfig
from pipeline.embed.config import EmbedConfig
from pipeline.embed.prompts import PromptConfig
from pipeline.faces.config import FacesConfig
from pipeline.ingest.config import IngestConfig
from pipeline.model.config import TrainSection

__all__ = ["SHIPPED", "Config", "ConfigError", "ProtocolConfig", "RunConfig", "build",
           "config_hash", "diff", "load_config", "resolve_config_path", "to_dict", "to_yaml"]

SHIPPED = os.path.join(os.path.dirname(__file__), "configs")


@dataclass(frozen=True)
class RunConfig:
    out: str = "autt-out"  # workspace root: local path, memory://... or s3://...
    executor: Literal["ray", "local"] = "ray"  # ray: shards as Ray actor calls; local: in-process
    ray_address: str | None = None  # None: start a local cluster; "auto" or host:port to join one
    num_cpus: int | None = None  # CPUs of the local cluster (None: all)
    workers: int | None = None  # actors per stage (None: from the cluster's resources)
    recompute: bool = False  # redo shards whose config or inputs changed instead of refusing
    retry_failed: bool = False  # re-run the failed samples of done shards
    strict: bool = False  # abort on the first per-sample fault instead of recording a row
    progress: bool = True  # print per-shard progress lines

    def __post_init__(self) -> None:
        if not self.out:
            raise ConfigError("run.out must be a non-empty path or URL, got ''")
        for name in ("num_cpus", "workers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"run.{name} must be >= 1, got {value}")


@dataclass(frozen=True)
class ProtocolConfig:
    target_subjects: tuple[str, ...] = ()  # adapted without labels; the rest are source
    split: Literal["fixed", "kfold", "loso"] = "fixed"  # cross-subject protocol (method.md)
    folds: int = 5  # k of kfold: labelled subjects are hashed (with the seed) into k folds
    clip_len: int = 20  # T: frames per clip
    stride: int = 2  # s: step between clip frames over the cached sequence
    window: int = 16  # L: frames per window for CLIP-AUTT window selection
    min_face_frames: int = 4  # fewer face frames than this: status insufficient_faces
    tta_steps: int = 10  # CLIP-AUTT steps per target subject

    def __post_init__(self) -> None:
        for name in ("clip_len", "stride", "window", "min_face_frames"):
            if getattr(self, name) < 1:
                raise ConfigError(f"protocol.{name} must be >= 1, got {getattr(self, name)}")
        if self.window > self.clip_len:
            raise ConfigError(
                f"protocol.window must be <= protocol.clip_len ({self.clip_len}), got {self.window}")
        if self.tta_steps < 0:
            raise ConfigError(f"protocol.tta_steps must be >= 0, got {self.tta_steps}")
        if len(set(self.target_subjects)) != len(self.target_subjects):
            raise ConfigError(f"protocol.target_subjects has duplicates: {self.target_subjects}")
        if self.split not in ("fixed", "kfold", "loso"):
            raise ConfigError(f"protocol.split must be fixed, kfold or loso, got {self.split!r}")
        if self.folds < 2:
            raise ConfigError(f"protocol.folds must be >= 2, got {self.folds}")


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    train: TrainSection = field(default_factory=TrainSection)
    adapt: AdaptSection = field(default_factory=AdaptSection)
    demo: DemoConfig = field(default_factory=DemoConfig)


def resolve_config_path(name: str) -> str:
    """A shipped config name (e.g. 'biovid') or a path/URL to a YAML file."""
    shipped = os.path.join(SHIPPED, f"{name}.yaml")
    if os.sep not in name and "://" not in name and not name.endswith((".yaml", ".yml")):
        if os.path.exists(shipped):
            return shipped
        known = sorted(f[:-5] for f in os.listdir(SHIPPED) if f.endswith(".yaml"))
        raise ConfigError(f"no shipped config named {name!r}; shipped: {known}, or give a path")
    if not io.exists(name):
        raise ConfigError(f"config file {name!r} does not exist")
    return name


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The shipped config ``path`` names (or the YAML file at it; None: the defaults), with
    ``overrides`` applied on top."""
    data: dict[str, Any] = {}
    if path:
        url = resolve_config_path(path)
        try:
            data = yaml.safe_load(io.read_text(url)) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {url!r} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {url!r} must hold a mapping, got {type(data).__name__}")
    return build(Config, apply_overrides(data, overrides, Config))
