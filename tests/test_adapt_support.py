"""Shared pieces of the adaptation tests (no tests here): the tiny CLIP, AU prompts, a seeded head, clips."""

from __future__ import annotations

import functools

import numpy as np
import torch

from pipeline.adapt.context import template_tokens
from pipeline.adapt.text_forward import TextTower
from pipeline.embed.backbone import Backbone, load_backbone
from pipeline.embed.config import EmbedConfig
from pipeline.embed.prompts import PromptConfig, au_prompts
from pipeline.embed.text import encode_texts
from pipeline.model.head import CLIPAUHead, HeadConfig


@functools.lru_cache(maxsize=1)
def tiny() -> Backbone:
    return load_backbone(EmbedConfig(model="autt-tiny", weights="random", seed=0, device="cpu"))


def au_setup(seed: int = 0, n_aus: int = 47):
    """(tower, template tokens, raw AU text features [K, d] as stored, seeded head)."""
    bb = tiny()
    prompts = au_prompts(PromptConfig())[:n_aus]
    tower = TextTower(bb.model)
    tokens = template_tokens(tower, bb.tokenizer, prompts, 4)
    raw = torch.from_numpy(encode_texts(bb, prompts, batch_size=len(prompts)))  # one batch of exactly K
    return tower, tokens, raw, make_head(len(prompts), seed)


def make_head(n_aus: int, seed: int = 0, n_classes: int = 2) -> CLIPAUHead:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = CLIPAUHead(HeadConfig(embed_dim=32, n_aus=n_aus, n_classes=n_classes))
    return head.eval()


def random_clips(n: int, seed: int, length: int = 20, dim: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, length, dim)).astype(np.float32)
