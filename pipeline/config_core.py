"""Config primitives: typed frozen dataclasses from plain data, and back, hashed and diffed.

In: a dataclass type and a mapping (YAML data), or ``section.field=value`` override texts.
Out: built, validated instances (unknown keys and bad values raise :class:`ConfigError`
naming the key and the value), plain dicts (``to_dict``), YAML, a stable 16-hex
``config_hash`` and a human-readable ``diff``. Knows no section and imports nothing heavy:
the storage layer (shards' fingerprints) uses it as well as ``pipeline.config``, which
assembles the stages' sections.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration key or value is invalid."""


# the words YAML 1.1 reads as booleans (safe_load), by the boolean they become
_BOOL_WORDS = {True: ("on", "yes", "y", "true"), False: ("off", "no", "n", "false")}


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
        if isinstance(value, bool) and value not in args:
            # YAML 1.1 reads on/off/yes/no unquoted as booleans: take back the field's word
            words = [a for a in args if isinstance(a, str) and a.lower() in _BOOL_WORDS[value]]
            if len(words) == 1:
                value = words[0]
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


def field_index(root: type) -> dict[str, list[str]]:
    """Bare field name -> the dotted keys of ``root``'s sections that end in it (for
    'root=...' shorthands)."""
    index: dict[str, list[str]] = {}
    for section in dataclasses.fields(root):
        for f in dataclasses.fields(typing.get_type_hints(root)[section.name]):
            index.setdefault(f.name, []).append(f"{section.name}.{f.name}")
    return index


def parse_override(text: str, root: type) -> tuple[list[str], Any]:
    """``section.key=value`` (or a bare key naming one field of ``root``) -> (keys, value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if "." not in key:
        candidates = field_index(root).get(key, [])
        if len(candidates) != 1:
            hint = f"did you mean one of {candidates}" if candidates else "no section has it"
            raise ConfigError(f"override key {key!r} needs a section ({hint})")
        key = candidates[0]
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return key.split("."), value


def apply_overrides(data: dict, overrides: typing.Iterable[str], root: type) -> dict:
    """``data`` (YAML mapping, changed in place) with every override applied."""
    for text in overrides:
        keys, value = parse_override(text, root)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {k} is not a section")
        node[keys[-1]] = value
    return data


def to_dict(obj: Any) -> Any:
    """Plain JSON/YAML-able dict of a config (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    return obj


def to_yaml(cfg: Any) -> str:
    """A config (any dataclass) as YAML, fields in declaration order."""
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
