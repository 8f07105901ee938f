"""Typed configuration: frozen dataclasses loaded from YAML plus ``key=value`` overrides.

In: an optional YAML file (a path, URL, or the name of a shipped config in
``pipeline/configs/``) and a list of ``section.field=value`` overrides. Out: a frozen
:class:`Config`. Unknown keys and bad values raise :class:`ConfigError` naming the key and
the value before any work starts. ``config_hash`` gives a stable hash of one section, the
part of a shard's fingerprint that says "same settings".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from pipeline import io
from pipeline.demo.synth import DemoConfig
from pipeline.embed.config import EmbedConfig
from pipeline.embed.prompts import PromptConfig
from pipeline.faces.config import FacesConfig
from pipeline.ingest.config import IngestConfig

SHIPPED = os.path.join(os.path.dirname(__file__), "configs")


class ConfigError(ValueError):
    """A configuration key or value is invalid."""


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
    clip_len: int = 20  # T: frames per clip
    stride: int = 2  # s: step between clip frames over the cached sequence
    window: int = 16  # L: frames per window for CLIP-AUTT window selection
    min_face_frames: int = 4  # fewer face frames than this: status insufficient_faces
    epochs: int = 10  # CLIP-AU training epochs
    batch_size: int = 8  # CLIP-AU training batch size
    lr: float = 1e-3  # AdamW learning rate (CLIP-AU and CLIP-AUTT)
    weight_decay: float = 1e-4  # AdamW weight decay
    tta_steps: int = 10  # CLIP-AUTT steps per target subject
    seed: int = 1999  # training seed

    def __post_init__(self) -> None:
        for name in ("clip_len", "stride", "window", "epochs", "batch_size", "min_face_frames"):
            if getattr(self, name) < 1:
                raise ConfigError(f"protocol.{name} must be >= 1, got {getattr(self, name)}")
        if self.window > self.clip_len:
            raise ConfigError(
                f"protocol.window must be <= protocol.clip_len ({self.clip_len}), got {self.window}")
        if self.tta_steps < 0:
            raise ConfigError(f"protocol.tta_steps must be >= 0, got {self.tta_steps}")
        if len(set(self.target_subjects)) != len(self.target_subjects):
            raise ConfigError(f"protocol.target_subjects has duplicates: {self.target_subjects}")


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)



# ---------------------------------------------------------------- building from dicts

def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _coerce(value, a, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {inner}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        item = args[0] if args else Any
        if len(args) == 2 and args[1] is Ellipsis or len(args) == 1:
            return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} must have {len(args)} items, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)  # YAML reads subject ids like 2ea4 fine, but 0815 as int
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported config type {tp!r}")


def build(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys by name."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key {where}{unknown[0]!s}; known keys here: {names}")
    kwargs = {}
    for name in names:
        if name in data:
            key = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _coerce(data[name], hints[name], key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from exc


def _field_index() -> dict[str, list[str]]:
    """Bare field name -> the dotted keys that end in it (for 'root=...' shorthands)."""
    index: dict[str, list[str]] = {}
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(typing.get_type_hints(Config)[section.name]):
            index.setdefault(f.name, []).append(f"{section.name}.{f.name}")
    return index


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if "." not in key:
        candidates = _field_index().get(key, [])
        if len(candidates) != 1:
            hint = f"did you mean one of {candidates}" if candidates else "no section has it"
            raise ConfigError(f"override key {key!r} needs a section ({hint})")
        key = candidates[0]
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return key.split("."), value


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
    data: dict[str, Any] = {}
    if path:
        url = resolve_config_path(path)
        try:
            data = yaml.safe_load(io.read_text(url)) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {url!r} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {url!r} must hold a mapping, got {type(data).__name__}")
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {k} is not a section")
        node[keys[-1]] = value
    return build(Config, data)


def to_dict(obj: Any) -> Any:
    """Plain JSON/YAML-able dict of a config (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    return obj


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def config_hash(section: Any) -> str:
    """Stable 16-hex hash of one config section (or any JSON-able value)."""
    payload = json.dumps(to_dict(section), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two config dicts: 'faces.min_prob: 0.9 -> 0.95'."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(diff(a, b, f"{name}."))
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out
