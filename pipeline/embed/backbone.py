"""The frozen CLIP backbone over open_clip: architecture, weights, tokenizer, preprocessing.

In: an ``EmbedConfig``. Out: a ``Backbone`` holding the model in eval mode with every
parameter frozen (neither tower is ever trained), a deterministic filesystem-safe
``backbone_id``, the sha256 ``weights_digest``, and the numbers preprocessing and prompt
validation need. Weights come from a seeded random init, a local (or fsspec URL) file, a
local folder holding one, or an open_clip pretrained tag found in the local cache. A tag
that is not cached fails at once where no hub can be reached, instead of after open_clip's
~46 s of hub retries.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import re
import socket
import zipfile
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import torch

from pipeline._torchvision_compat import ensure_torchvision_ops

ensure_torchvision_ops()  # open_clip imports torchvision: fix it first, in every process

import open_clip  # noqa: E402
from open_clip import constants as oc  # noqa: E402

from pipeline import io  # noqa: E402
from pipeline.embed.config import EmbedConfig  # noqa: E402

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# open_clip's own file names, most preferred first, for folders holding several files.
PREFERRED_NAMES = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth",
    "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
)

# Architectures this project adds. "autt-tiny" stands in for CLIP in tests and the demo:
# a 2-layer width-64 ViT (224 px, patch 32) and CLIP's own text transformer with the full
# 77-token context and the standard BPE vocab, so real prompts tokenise exactly as in
# ViT-B/32. embed_dim differs from the text width on purpose: code mixing the two fails.
# "vision_block_gain" (not an open_clip key) scales the random init of the image tower's
# blocks; see ``scale_vision_blocks``.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "autt-tiny": {
        "vision_block_gain": 4.0,
        "embed_dim": 32,
        "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                     "layers": 2},
    },
}


def architecture_config(name: str) -> dict[str, Any]:
    """The model config dict of an architecture (a copy); ValueError when unknown."""
    if name in ARCHITECTURES:
        return copy.deepcopy(ARCHITECTURES[name])
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        known = sorted(ARCHITECTURES) + open_clip.list_models()
        raise ValueError(f"embed.model: unknown architecture {name!r}; known: {known}")
    return cfg


def context_length_of(name: str) -> int:
    """Text context length of an architecture, without building it."""
    return int(architecture_config(name)["text_cfg"].get("context_length", 77))


@dataclass(eq=False)
class Backbone:
    """A frozen CLIP model plus everything needed to feed it and to name its outputs."""

    model: torch.nn.Module  # eval mode, requires_grad False everywhere
    arch: str  # architecture name
    backbone_id: str  # e.g. "ViT-B-32__openai", "autt-tiny__random-s0"
    weights_digest: str  # sha256 hex of the weights file, or of the state dict (random)
    embed_dim: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # resize kernel for crops not already at image_size
    resize_mode: str  # "shortest" (resize + centre crop) or "squash"
    context_length: int
    tokenizer: Any  # open_clip tokenizer: list[str] -> LongTensor (n, context_length)
    device: torch.device
    precision: str  # autocast mode on CUDA; CPU always runs float32

    def preprocess_info(self) -> dict[str, Any]:
        """Preprocessing facts for Parquet metadata."""
        return {"size": self.image_size, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "resize_mode": self.resize_mode}

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for image batches on CUDA; a no-op elsewhere or for fp32."""
        if self.device.type != "cuda" or self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "amp_bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_dict_digest(model: torch.nn.Module) -> str:
    """sha256 over (name, dtype, shape, bytes) of every state-dict tensor, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_tag_file(tag_cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    """The tag's weights file if already downloaded; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    if tag_cfg.get("file"):
        return tag_cfg["file"]
    if tag_cfg.get("hf_hub"):
        repo, filename = os.path.split(tag_cfg["hf_hub"])
        filename = filename or oc.HF_WEIGHTS_NAME
        names = [filename]
        if filename == oc.HF_WEIGHTS_NAME:
            names.insert(0, oc.HF_SAFE_WEIGHTS_NAME)
        elif filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for name in names:
            found = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
            if isinstance(found, str):
                return found
    if tag_cfg.get("url"):
        folder = cache_dir or os.path.expanduser("~/.cache/clip")
        path = os.path.join(folder, os.path.basename(tag_cfg["url"]))
        if os.path.isfile(path):
            return path
    return None


def _tag_file(cfg: EmbedConfig, tag_cfg: dict[str, Any]) -> str:
    """A local file for a pretrained tag: the cache, else a download if a hub answers."""
    cached = _cached_tag_file(tag_cfg, cfg.cache_dir)
    if cached:
        return cached
    host = "huggingface.co" if tag_cfg.get("hf_hub") else urlparse(tag_cfg["url"]).hostname
    reason = ""
    if _hub_offline():
        reason = "HF_HUB_OFFLINE is set, so there is no model hub to download from"
    elif not _reachable(host):
        reason = f"{host}:443 cannot be reached"
    if reason:
        raise RuntimeError(
            f"embed.weights={cfg.weights!r}: pretrained weights for {cfg.model} are not in the "
            f"local cache and {reason}. Download them on a machine with access and pass "
            "embed.weights=<path to a .pt/.bin/.safetensors file, or a folder holding one> "
            "(or embed.weights=random for tests)."
        )
    return open_clip.download_pretrained(tag_cfg, cache_dir=cfg.cache_dir)


def _folder_file(folder: str) -> str:
    names = sorted(n for n in os.listdir(folder) if n.endswith(WEIGHT_SUFFIXES))
    preferred = [n for n in PREFERRED_NAMES if n in names]
    if preferred or len(names) == 1:
        return os.path.join(folder, (preferred or names)[0])
    raise ValueError(f"embed.weights folder {folder!r} must hold one weights file "
                     f"({'/'.join(WEIGHT_SUFFIXES)}), found {names}")


def scale_vision_blocks(visual: torch.nn.Module, gain: float) -> None:
    """Multiply the query and key projections, the attention output projection and both
    MLP layers of every block of a random-init open_clip ``VisionTransformer`` by ``gain``.

    At open_clip's default init, a random image tower maps every image to nearly the same
    direction (mean cosine ~0.995 to the centre, pure-noise images included): the class
    token's fixed embedding outweighs what attention gathers from the image. Features that
    collapsed hold the CLIP-AU head on its initial loss plateau (ln 2 for two classes) for
    100 epochs and more (measured on the demo). With the blocks' branches at gain 4,
    attention depends on the content and the branches outweigh the fixed token: noise
    images sit at cosine ~0.6 to their centre, the demo's faces at ~0.95, and the head
    learns from them. Only random inits are affected: loaded weights replace these."""
    for block in visual.transformer.resblocks:
        width = block.attn.in_proj_weight.shape[1]
        with torch.no_grad():
            block.attn.in_proj_weight[: 2 * width].mul_(gain)  # queries and keys, not values
            block.attn.out_proj.weight.mul_(gain)
            block.mlp.c_fc.weight.mul_(gain)
            block.mlp.c_proj.weight.mul_(gain)


def _build(arch: str, quick_gelu: bool) -> torch.nn.Module:
    """Random-init model on the CPU in float32 (the caller seeds the RNG)."""
    if arch in ARCHITECTURES:
        cfg = architecture_config(arch)
        gain = float(cfg.pop("vision_block_gain", 1.0))
        cfg["quick_gelu"] = quick_gelu or cfg.get("quick_gelu", False)
        model = open_clip.CLIP(**cfg)
        if gain != 1.0:
            scale_vision_blocks(model.visual, gain)
        return model
    return open_clip.create_model(arch, pretrained=None, precision="fp32", device="cpu",
                                  force_quick_gelu=quick_gelu, pretrained_image=False,
                                  pretrained_text=False)


def _load_file(model: torch.nn.Module, path: str) -> None:
    """Load a state dict / open_clip checkpoint / OpenAI TorchScript archive, strictly."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            scripted = any(n.endswith("constants.pkl") for n in archive.namelist())
        if scripted:  # OpenAI's released .pt files; torch.load(weights_only) refuses them
            state = torch.jit.load(path, map_location="cpu").state_dict()
            # TorchScript saves non-persistent buffers (attn_mask) and OpenAI's archives add
            # three integer entries; the model rebuilds all of these itself.
            persistent = set(model.state_dict())
            rebuilt = {name for name, _ in model.named_buffers()} - persistent
            for key in rebuilt | {"input_resolution", "context_length", "vocab_size"}:
                state.pop(key, None)
            model.load_state_dict(state, strict=True)
            return
    open_clip.load_checkpoint(model, path, strict=True, weights_only=True)


def _square(size: Any) -> int:
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height != width:
        raise ValueError(f"embed.model: only square inputs are supported, got {size}")
    return int(height)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("embed.device='cuda' but torch sees no CUDA device")
    return torch.device(device)


def load_backbone(cfg: EmbedConfig) -> Backbone:
    """Build the frozen model named by ``cfg`` and describe it."""
    arch_cfg = architecture_config(cfg.model)
    device = resolve_device(cfg.device)
    quick_gelu, pre = cfg.quick_gelu, {}
    arch_id = _safe(cfg.model) + ("-quickgelu" if cfg.quick_gelu else "")
    weights, backbone_id = cfg.weights, None
    tag_cfg = {} if weights == "random" else open_clip.get_pretrained_cfg(cfg.model, weights)
    with contextlib.ExitStack() as stack:
        if weights == "random":
            path, backbone_id = None, f"{arch_id}__random-s{cfg.seed}"
        elif not io.is_local(weights):
            path = stack.enter_context(io.local_path(weights))
        elif os.path.isdir(weights):
            path = _folder_file(weights)
        elif os.path.isfile(weights):
            path = weights
        elif tag_cfg:
            path = _tag_file(cfg, tag_cfg)
            quick_gelu = quick_gelu or bool(tag_cfg.get("quick_gelu", False))
            pre = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode")
                   if k in tag_cfg}
            backbone_id = f"{_safe(cfg.model)}__{_safe(weights)}"
        elif os.sep in weights or "/" in weights or weights.endswith(WEIGHT_SUFFIXES):
            raise FileNotFoundError(f"embed.weights file or folder not found: {weights!r}")
        else:
            tags = open_clip.list_pretrained_tags_by_model(cfg.model)
            raise ValueError(f"embed.weights={weights!r} is not 'random', an existing path, "
                             f"or a pretrained tag of {cfg.model} (tags: {tags})")
        with torch.random.fork_rng(devices=[]):  # seeded init without touching global RNG
            torch.manual_seed(cfg.seed)
            model = _build(cfg.model, quick_gelu)
        if path is None:
            digest = state_dict_digest(model)
        else:
            try:
                _load_file(model, path)
            except (RuntimeError, KeyError, ValueError) as err:  # torch's key/shape mismatch
                where = "" if path == weights else f" ({path})"
                raise RuntimeError(f"embed.weights={weights!r}{where} do not load into "
                                   f"{cfg.model}: {err}") from err
            digest = file_digest(path)
            backbone_id = backbone_id or f"{arch_id}__file-{digest[:12]}"
    model.requires_grad_(False)
    model.eval().to(device)
    context_length = int(getattr(model, "context_length", 0)
                         or arch_cfg["text_cfg"].get("context_length", 77))
    if cfg.model in ARCHITECTURES:
        tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
    else:
        tokenizer = open_clip.get_tokenizer(cfg.model, context_length=context_length)
    return Backbone(
        model=model, arch=cfg.model, backbone_id=backbone_id, weights_digest=digest,
        embed_dim=int(arch_cfg["embed_dim"]),
        image_size=_square(getattr(model.visual, "image_size", arch_cfg["vision_cfg"].get(
            "image_size", 224))),
        mean=tuple(float(v) for v in pre.get("mean", oc.OPENAI_DATASET_MEAN)),
        std=tuple(float(v) for v in pre.get("std", oc.OPENAI_DATASET_STD)),
        interpolation=pre.get("interpolation", "bicubic"),
        resize_mode=pre.get("resize_mode", "shortest"),
        context_length=context_length, tokenizer=tokenizer, device=device,
        precision=cfg.precision,
    )
