"""Subjects per CLIP-AUTT text forward: a set value, or auto from the device's free memory."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from pipeline.adapt.autt import SubjectInputs
from pipeline.adapt.budget import CPU_AUTO, MAX_AUTO, subject_bytes, subjects_per_forward
from pipeline.adapt.config import AdaptConfig
from tests.test_adapt_support import au_setup


def subjects(n: int) -> list[SubjectInputs]:
    return [SubjectInputs(np.zeros((40, 20, 32), np.float32)) for _ in range(n)]


def test_a_set_value_is_used_up_to_the_subjects_there_are() -> None:
    tower, tokens, _, _ = au_setup()
    cfg = AdaptConfig()
    assert subjects_per_forward(3, subjects(10), tower, tokens, cfg) == 3
    assert subjects_per_forward(3, subjects(2), tower, tokens, cfg) == 2
    assert subjects_per_forward(0, subjects(10), tower, tokens, cfg) == CPU_AUTO  # auto on CPU
    assert subjects_per_forward(0, subjects(1), tower, tokens, cfg) == 1


def test_auto_on_cuda_fits_half_the_free_memory(monkeypatch) -> None:
    _, tokens, _, _ = au_setup()
    fake = SimpleNamespace(device=torch.device("cuda"), width=512, context_length=77)
    cfg = AdaptConfig()
    each = subject_bytes(40 * 20 * 32, fake, tokens, cfg)
    assert each > subject_bytes(40 * 20 * 32, fake, tokens, AdaptConfig(text_precision="bf16"))
    assert each < subject_bytes(40 * 20 * 32, fake, tokens, AdaptConfig(fast=False))  # full context
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * each, 80 * each))
    assert subjects_per_forward(0, subjects(20), fake, tokens, cfg) == 5
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (each, 80 * each))
    assert subjects_per_forward(0, subjects(20), fake, tokens, cfg) == 1  # never below one
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10**6 * each, 0))
    assert subjects_per_forward(0, subjects(500), fake, tokens, cfg) == MAX_AUTO
