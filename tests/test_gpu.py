"""GPU-only checks (marker ``gpu``; the README's test command deselects them, and they skip
where torch sees no CUDA device): each GPU path agrees with the CPU path within a stated
tolerance (different kernels: never bit for bit)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def test_embed_stage_on_cuda_matches_cpu():
    from pipeline.embed.config import EmbedConfig
    from pipeline.embed.stage import EmbedStage

    crops = np.random.default_rng(0).integers(0, 256, (16, 224, 224, 3), dtype=np.uint8)
    cfg = dict(model="ViT-B-32", weights="random", seed=0, batch_size=8)
    cpu = EmbedStage(EmbedConfig(device="cpu", **cfg)).embed(crops)
    gpu = EmbedStage(EmbedConfig(device="cuda", precision="fp32", **cfg)).embed(crops)
    half = EmbedStage(EmbedConfig(device="cuda", **cfg)).embed(crops)  # the default autocast
    cos = lambda a, b: (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)  # noqa: E731
    assert np.abs(cpu - gpu).max() <= 1e-3 * np.abs(cpu).max()
    assert cos(cpu, half).min() >= 0.999


def test_mtcnn_on_cuda_finds_the_faces_the_cpu_finds():
    from tests.media import shared_faces_dir

    folder = shared_faces_dir()
    if not (folder / "single_face.jpg").exists():
        pytest.skip("shared media missing")
    from PIL import Image

    from pipeline.faces.config import FacesConfig
    from pipeline.faces.detect import FaceDetector

    img = np.asarray(Image.open(folder / "single_face.jpg").convert("RGB"))
    (cpu,) = FaceDetector(FacesConfig(), CPU).detect([img])
    (gpu,) = FaceDetector(FacesConfig(), CUDA).detect([img])
    assert len(cpu) == len(gpu) == 1
    assert np.abs(cpu.boxes - gpu.boxes).max() <= 2.0  # pixels
    assert abs(float(cpu.probs[0]) - float(gpu.probs[0])) <= 1e-3


def test_face_stage_on_cuda_matches_cpu():
    """The whole face stage with its defaults (keyframes, decode prefetch on with a GPU):
    the same faces on the same frames as on the CPU, boxes within a few pixels (float
    downscaling on the GPU against uint8 on the CPU), crops alike."""
    from tests.media import shared_faces_dir

    folder = shared_faces_dir()
    if not (folder / "single_face.mp4").exists():
        pytest.skip("shared media missing")
    from pipeline.faces.config import FacesConfig
    from pipeline.faces.stage import FaceStage
    from pipeline.faces.track import iou
    from tests.test_faces_stage import manifest

    batch = manifest({"sample_id": "single", "path": str(folder / "single_face.mp4")},
                     {"sample_id": "leaves", "path": str(folder / "face_noface.mov"),
                      "start": 1.6, "end": 3.6})
    cpu = FaceStage(FacesConfig(device="cpu"))(batch)
    gpu_stage = FaceStage(FacesConfig(device="cuda"))
    assert gpu_stage._prefetch == 1  # auto: on with a GPU
    gpu = gpu_stage(batch)
    with_face = lambda out: np.isin(out["status"], ["ok", "filled", "carried"])  # noqa: E731
    assert (with_face(cpu) == with_face(gpu)).mean() >= 0.98
    both = np.flatnonzero(with_face(cpu) & with_face(gpu))
    overlap = np.array([iou(cpu["box"][i], gpu["box"][i])[0, 0] for i in both])
    assert overlap.mean() >= 0.95
    diff = np.abs(cpu["crop_pixels"][both].astype(int) - gpu["crop_pixels"][both])
    assert diff.mean() <= 8  # grey levels: the same face, boxes a pixel or two apart


def test_clip_autt_on_cuda_matches_cpu_and_batches_by_memory():
    from pipeline.adapt.autt import CLIPAUTT, SubjectInputs
    from pipeline.adapt.budget import subjects_per_forward
    from pipeline.adapt.config import AdaptConfig
    from pipeline.adapt.context import template_tokens
    from pipeline.adapt.text_forward import TextTower
    from tests.test_adapt_support import au_setup, make_head, random_clips, tiny

    tower, tokens, _, head = au_setup()
    subjects = [SubjectInputs(random_clips(6, seed=s)) for s in range(3)]
    cfg = AdaptConfig(steps=3, lr=1e-2)
    cpu = CLIPAUTT(head, tower, tokens, cfg).run(subjects)
    bb = tiny()
    gpu_tower = TextTower(bb.model.to(CUDA)).requires_grad_(False)
    gpu_tokens = template_tokens(gpu_tower, bb.tokenizer, list(_prompts()), tokens.n_ctx)
    gpu_head = make_head(tokens.n_prompts).to(CUDA)
    n = subjects_per_forward(0, subjects, gpu_tower, gpu_tokens, cfg)
    assert 1 <= n <= len(subjects)
    gpu = CLIPAUTT(gpu_head, gpu_tower, gpu_tokens, AdaptConfig(steps=3, lr=1e-2, subjects_per_batch=n)
                   ).run(subjects)
    bb.model.to(CPU)
    for a, b in zip(cpu, gpu):
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-4)


def _prompts():
    from pipeline.embed.prompts import PromptConfig, au_prompts

    return au_prompts(PromptConfig())
