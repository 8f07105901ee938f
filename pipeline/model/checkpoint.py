"""CLIP-AU checkpoints: ``<dir>/model.safetensors`` + ``<dir>/model.json``, never unpickled.

In: a head's state dict (or the module) and a ``CheckpointInfo`` (head config, class list,
AU bank, backbone id and weights digest, metrics, training curve, origin). Out: the folder,
written atomically through ``pipeline.io`` (local paths, ``memory://`` and ``s3://``); the
JSON also records the torch / open_clip versions and the sha256 and shape of every tensor.

Loading reads JSON and safetensors only, and refuses with a ``CheckpointError`` naming the
problem: a pickled torch file, a corrupted or swapped weights file, a JSON of another format
or version, missing / extra / misshaped tensors. ``check_compatible`` names each way a
checkpoint disagrees with a workspace's data. ``import_reference`` converts the public
reference code's checkpoints (a torch.save'd dict of state dicts, read with
``torch.load(weights_only=True)`` only) into this format.
"""

from __future__ import annotations

import hashlib
import io as bytes_io
import json
import pickle
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from pipeline import io
from pipeline.embed import prompts
from pipeline.model.head import CLIPAUHead, HeadConfig, config_from_reference, from_reference_names

FORMAT = "clip-autt/clip-au-head"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
META_NAME = "model.json"
REFERENCE_GROUPS = ("text_adapter", "temporal", "temporal_proj", "temporal_classifier")


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, foreign, corrupted or does not fit its config."""


class CheckpointMismatch(ValueError):
    """A checkpoint does not fit a workspace's backbone, classes or AU bank."""


@dataclass(frozen=True)
class AUBank:
    name: str  # 'default' | 'reference' (prompts.bank) or a user's own name
    phrases: tuple[str, ...]  # AU phrases, in bank order
    codes: tuple[str | None, ...]  # FACS code per phrase (None: no code)
    template: str | None  # the one AU template; None where the bare phrases are encoded
    prompts: tuple[str, ...]  # the exact texts whose features the head was trained on

    @classmethod
    def from_prompt_config(cls, cfg: prompts.PromptConfig) -> AUBank:
        bank = prompts.au_bank(cfg)
        return cls(name=cfg.bank, phrases=tuple(p for p, _ in bank), codes=tuple(c for _, c in bank),
                   template=None if cfg.bank == "reference" else cfg.template,
                   prompts=tuple(prompts.au_prompts(cfg)))

    @classmethod
    def reference(cls) -> AUBank:
        """The public code's 46-phrase bank, encoded as the bare phrases (no template)."""
        bank = prompts.REFERENCE_BANK
        phrases = tuple(p for p, _ in bank)
        return cls("reference", phrases, tuple(c for _, c in bank), None, phrases)


@dataclass(frozen=True)
class CheckpointInfo:
    head: HeadConfig  # rebuilds the module
    classes: tuple[str, ...]  # class order of the logits (positive class last)
    au_bank: AUBank  # the AU prompts, in the order of the head's K inputs
    backbone_id: str  # embeddings/text features the head was trained on
    weights_digest: str  # sha256 of the backbone weights, or "unknown"
    metrics: dict[str, Any] = field(default_factory=dict)  # validation metrics of the kept epoch
    curve: tuple[dict[str, Any], ...] = ()  # per epoch: train_loss, val_f1, val_acc
    train_config: dict[str, Any] = field(default_factory=dict)  # settings it was trained with
    origin: dict[str, Any] = field(default_factory=dict)  # {"kind": "trained" | "reference-import", ...}
    versions: dict[str, str] = field(default_factory=dict)  # torch / open_clip (filled on save)

    def __post_init__(self) -> None:
        if len(self.classes) != self.head.n_classes:
            raise ValueError(f"{len(self.classes)} classes {list(self.classes)} for a head with "
                             f"n_classes={self.head.n_classes}")
        if len(self.au_bank.prompts) != self.head.n_aus:
            raise ValueError(f"AU bank {self.au_bank.name!r} has {len(self.au_bank.prompts)} prompts "
                             f"for a head with n_aus={self.head.n_aus}")


def _versions() -> dict[str, str]:
    import pipeline

    found = {"torch": torch.__version__, "clip_autt": pipeline.__version__}
    try:
        found["open_clip"] = metadata.version("open_clip_torch")
    except metadata.PackageNotFoundError:
        found["open_clip"] = "not installed"
    return found


def _plain(value: Any) -> Any:
    """json.dumps fallback for numpy scalars and arrays in metrics."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__} {value!r}")


def _expected_shapes(cfg: HeadConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in CLIPAUHead(cfg).state_dict().items()}


def _check_tensors(tensors: Mapping[str, torch.Tensor], cfg: HeadConfig, where: str) -> None:
    want = _expected_shapes(cfg)
    problems = [f"missing {k} {list(s)}" for k, s in want.items() if k not in tensors]
    problems += [f"unexpected {k}" for k in tensors if k not in want]
    problems += [f"{k} is {list(t.shape)}, expected {list(want[k])}"
                 for k, t in tensors.items() if k in want and tuple(t.shape) != want[k]]
    problems += [f"{k} has dtype {t.dtype}, expected a floating type"
                 for k, t in tensors.items() if not t.is_floating_point()]
    if problems:
        raise CheckpointError(f"{where}: tensors do not fit head config {cfg.to_dict()}: "
                              + "; ".join(problems))


def save_checkpoint(out_dir: str, state: Mapping[str, torch.Tensor] | CLIPAUHead, info: CheckpointInfo) -> str:
    """Write ``out_dir/model.safetensors`` then ``out_dir/model.json``; returns ``out_dir``."""
    tensors = state.state_dict() if isinstance(state, torch.nn.Module) else dict(state)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in sorted(tensors.items())}
    _check_tensors(tensors, info.head, f"saving {out_dir}")
    blob = st_save(tensors, metadata={"format": "pt", "clip_autt_format": FORMAT})
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "head": info.head.to_dict(),
        "classes": list(info.classes),
        "au_bank": {"name": info.au_bank.name, "phrases": list(info.au_bank.phrases),
                    "codes": list(info.au_bank.codes), "template": info.au_bank.template,
                    "prompts": list(info.au_bank.prompts)},
        "backbone": {"id": info.backbone_id, "weights_digest": info.weights_digest},
        "versions": {**info.versions, **_versions()},
        "metrics": info.metrics,
        "curve": list(info.curve),
        "train_config": info.train_config,
        "origin": info.origin,
        "weights": {"file": WEIGHTS_NAME, "sha256": hashlib.sha256(blob).hexdigest(),
                    "tensors": {k: list(v.shape) for k, v in tensors.items()}},
    }
    text = json.dumps(meta, indent=1, default=_plain)
    io.write_bytes_atomic(io.join(out_dir, WEIGHTS_NAME), blob)
    io.write_text_atomic(io.join(out_dir, META_NAME), text)
    return out_dir


def _pickled(blob: bytes) -> bool:
    """torch.save writes a zip archive (PK..) or, in its legacy format, a raw pickle (0x80,
    protocol 2-5). A safetensors file starts with its header length (8 bytes) and then '{',
    and a header length may itself begin with those two bytes."""
    legacy = blob[:1] == b"\x80" and blob[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    return blob[:4] == b"PK\x03\x04" or (legacy and blob[8:9] != b"{")


def _info_from_json(meta: dict[str, Any], where: str) -> CheckpointInfo:
    try:
        bank = meta["au_bank"]
        info = CheckpointInfo(
            head=HeadConfig.from_dict(meta["head"]), classes=tuple(meta["classes"]),
            au_bank=AUBank(bank["name"], tuple(bank["phrases"]), tuple(bank["codes"]), bank["template"],
                           tuple(bank["prompts"])),
            backbone_id=meta["backbone"]["id"], weights_digest=meta["backbone"]["weights_digest"],
            metrics=dict(meta.get("metrics", {})), curve=tuple(meta.get("curve", ())),
            train_config=dict(meta.get("train_config", {})), origin=dict(meta.get("origin", {})),
            versions=dict(meta.get("versions", {})),
        )
    except KeyError as err:
        raise CheckpointError(f"{where}: field {err.args[0]!r} is missing") from err
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: {err}") from err
    return info


def read_checkpoint(path: str) -> tuple[CheckpointInfo, dict[str, torch.Tensor]]:
    """(info, tensors) of a checkpoint folder (or its model.json / model.safetensors)."""
    folder = io.parent(path) if path.rstrip("/").endswith((WEIGHTS_NAME, META_NAME)) else path
    if io.exists(folder) and not io.isdir(folder):
        blob = io.read_bytes(folder)
        kind = "a pickled torch file (torch.save)" if _pickled(blob[:16]) else "a file"
        raise CheckpointError(f"{path} is {kind}, not a checkpoint folder holding {WEIGHTS_NAME} and "
                              f"{META_NAME}; convert a reference-format checkpoint with import_reference")
    meta_url, weights_url = io.join(folder, META_NAME), io.join(folder, WEIGHTS_NAME)
    for url in (meta_url, weights_url):
        if not io.exists(url):
            raise CheckpointError(f"{folder} is not a checkpoint folder: {url} does not exist")
    try:
        meta = json.loads(io.read_text(meta_url))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{meta_url} is not valid JSON: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{meta_url} has format {got!r}, expected {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{meta_url} has format_version {meta.get('format_version')!r}; this code "
                              f"reads version {FORMAT_VERSION}")
    info = _info_from_json(meta, meta_url)
    blob = io.read_bytes(weights_url)
    if _pickled(blob):
        raise CheckpointError(f"{weights_url} is a pickled torch file (torch.save), not safetensors; "
                              "it is never unpickled")
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError, OSError) as err:  # header or data truncated / garbled
        raise CheckpointError(f"{weights_url} is not a readable safetensors file (corrupted?): {err}") from err
    digest, recorded = hashlib.sha256(blob).hexdigest(), meta.get("weights", {}).get("sha256")
    if digest != recorded:
        raise CheckpointError(f"{weights_url} has sha256 {digest[:16]}..., but {META_NAME} records "
                              f"{str(recorded)[:16]}...: the weights are corrupted or from another checkpoint")
    _check_tensors(tensors, info.head, weights_url)
    return info, tensors


def load_checkpoint(path: str, device: str | torch.device = "cpu") -> tuple[CLIPAUHead, CheckpointInfo]:
    """The head (eval mode, on ``device``) and its info; see ``read_checkpoint``."""
    info, tensors = read_checkpoint(path)
    with torch.random.fork_rng(devices=[]):  # building runs an init: keep the caller's RNG as it was
        head = CLIPAUHead(info.head)
    head.load_state_dict(tensors, strict=True)
    return head.to(device).eval(), info


def check_compatible(info: CheckpointInfo, *, backbone_id: str, classes: Sequence[str],
                     au_prompts: Sequence[str], weights_digest: str | None = None) -> None:
    """CheckpointMismatch naming every way ``info`` disagrees with a workspace's data."""
    problems = []
    if info.backbone_id != backbone_id:
        problems.append(f"backbone: checkpoint {info.backbone_id!r}, workspace {backbone_id!r}")
    digests = {info.weights_digest, weights_digest}
    if weights_digest is not None and "unknown" not in digests and len(digests) == 2:
        problems.append(f"backbone weights digest: checkpoint {info.weights_digest[:16]}..., "
                        f"workspace {weights_digest[:16]}...")
    if list(info.classes) != list(classes):
        problems.append(f"classes: checkpoint {list(info.classes)}, workspace {list(classes)}")
    ours, theirs = list(info.au_bank.prompts), list(au_prompts)
    if ours != theirs:
        first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        detail = (f"prompt {first}: checkpoint {ours[first]!r}, workspace {theirs[first]!r}"
                  if first < min(len(ours), len(theirs)) else "one bank is a prefix of the other")
        problems.append(f"AU bank: checkpoint {info.au_bank.name!r} with {len(ours)} prompts, workspace "
                        f"{len(theirs)} prompts; first difference at {detail}")
    if problems:
        raise CheckpointMismatch("checkpoint does not fit this workspace: " + "; ".join(problems))


def _read_reference(ckpt_path: str) -> tuple[dict[str, torch.Tensor], bytes]:
    blob = io.read_bytes(ckpt_path)
    try:
        raw = torch.load(bytes_io.BytesIO(blob), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError,
            struct.error, IndexError, KeyError) as err:  # a garbled file fails in any of these
        raise CheckpointError(f"{ckpt_path} is not a reference checkpoint torch.load(weights_only=True) "
                              f"accepts (only tensors and plain containers are read): {err}") from err
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{ckpt_path} holds a {type(raw).__name__}, expected a dict of state dicts "
                              f"{list(REFERENCE_GROUPS)}")
    unknown = sorted(set(raw) - set(REFERENCE_GROUPS))
    missing = sorted(set(REFERENCE_GROUPS) - {"temporal_proj"} - set(raw))
    if unknown or missing:
        raise CheckpointError(f"{ckpt_path}: reference checkpoint keys {sorted(raw)}; missing {missing}, "
                              f"unexpected {unknown}")
    flat = {}
    for group, state in raw.items():
        if not isinstance(state, Mapping) or not all(isinstance(t, torch.Tensor) for t in state.values()):
            raise CheckpointError(f"{ckpt_path}: {group!r} is not a state dict of tensors")
        flat.update({f"{group}.{name}": tensor for name, tensor in state.items()})
    return flat, blob


def import_reference(ckpt_path: str, classes: Sequence[str], *, out_dir: str, backbone_id: str,
                     weights_digest: str | None = None, au_bank: AUBank | None = None) -> CheckpointInfo:
    """Convert a reference-format checkpoint into ``out_dir``; returns the saved info.

    ``au_bank`` defaults to the reference bank (46 bare phrases), the one reference heads are
    trained on; ``weights_digest`` None records "unknown".
    """
    flat, blob = _read_reference(ckpt_path)
    try:
        state, dropped = from_reference_names(flat)
        cfg = config_from_reference(state)
    except ValueError as err:
        raise CheckpointError(f"{ckpt_path}: {err}") from err
    au = au_bank or AUBank.reference()
    if cfg.n_aus != len(au.prompts) or cfg.n_classes != len(classes):
        raise CheckpointError(f"{ckpt_path}: the classifier takes {cfg.n_aus} AUs and gives {cfg.n_classes} "
                              f"classes, but the AU bank {au.name!r} has {len(au.prompts)} prompts and the "
                              f"class list {list(classes)} has {len(classes)}")
    _check_tensors(state, cfg, ckpt_path)
    info = CheckpointInfo(
        head=cfg, classes=tuple(classes), au_bank=au, backbone_id=backbone_id,
        weights_digest=weights_digest or "unknown",
        origin={"kind": "reference-import", "file": ckpt_path, "sha256": hashlib.sha256(blob).hexdigest(),
                "dropped": dropped,
                "note": "temporal_proj is stored by the reference code but unused by its forward: dropped"},
    )
    save_checkpoint(out_dir, state, info)
    return info
