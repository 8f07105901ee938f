"""The embedding stage: face crops in, raw CLIP image embeddings out.

In: a batch dict with ``crop_pixels`` uint8 (N, S, S, 3) (any other columns ride along).
Out: the same dict plus ``embedding`` float32 (N, d), the image tower's raw output
(``model.encode_image(x)``, not normalised). Storage dtype (``EmbedConfig.dtype``) is the
writer's business; the stage always returns float32. Rows are embedded as given: the job
decides beforehand which rows (status ok/filled/carried) reach this stage.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.embed.backbone import Backbone, load_backbone
from pipeline.embed.config import EmbedConfig
from pipeline.embed.preprocess import as_uint8_nhwc, preprocess_batch

INPUT_COLUMN = "crop_pixels"
OUTPUT_COLUMN = "embedding"


class EmbedStage:
    """Frozen CLIP image tower over whole batches of crops, ``cfg.batch_size`` at a time."""

    def __init__(
        self, cfg: EmbedConfig, num_threads: int | None = None, backbone: Backbone | None = None
    ) -> None:
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.cfg = cfg
        self.num_threads = num_threads
        self._set_threads()
        self.backbone = backbone if backbone is not None else load_backbone(cfg)

    def _set_threads(self) -> None:
        # Ray may call __call__ from another thread than __init__, and torch would run there
        # on one thread: re-apply the count whenever it has drifted.
        if self.num_threads is not None and torch.get_num_threads() != self.num_threads:
            torch.set_num_threads(self.num_threads)

    @torch.inference_mode()
    def embed(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float32 (N, d) raw image embeddings."""
        self._set_threads()
        bb = self.backbone
        pixels = as_uint8_nhwc(pixels)
        out = np.zeros((len(pixels), bb.embed_dim), dtype=np.float32)
        step = self.cfg.batch_size
        for start in range(0, len(pixels), step):
            x = preprocess_batch(pixels[start : start + step], bb.image_size, bb.mean, bb.std,
                                 bb.interpolation, bb.resize_mode, device=bb.device)
            with bb.autocast():
                features = bb.model.encode_image(x)
            out[start : start + len(x)] = features.float().cpu().numpy()
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if INPUT_COLUMN not in batch:
            raise KeyError(f"batch has no {INPUT_COLUMN!r} column; columns: {sorted(batch)}")
        return {**batch, OUTPUT_COLUMN: self.embed(batch[INPUT_COLUMN])}


class CropStream:
    """Crops in as they are made (a crop sink of ``FaceStage.run`` or ``recrop_chunks``'
    chunks), embedded ``batch_size`` at a time; only the vectors are kept, so memory is one
    batch of crops however many frames a sample or shard has.

    In: calls ``stream(positions, crops)`` with row positions (k,) and uint8 (k, S, S, 3).
    Out: ``finish()`` -> (positions (m,) int64 in arrival order, float32 vectors (m, d)).
    """

    def __init__(self, stage: EmbedStage) -> None:
        self.stage = stage
        self._held: list[tuple[np.ndarray, np.ndarray]] = []
        self._count = 0
        self._positions: list[np.ndarray] = []
        self._vectors: list[np.ndarray] = []

    def __call__(self, positions: np.ndarray, crops: np.ndarray) -> None:
        if len(crops) == 0:
            return
        self._held.append((np.asarray(positions, np.int64), crops))
        self._count += len(crops)
        if self._count >= self.stage.cfg.batch_size:
            self._embed(whole_batches=True)

    def _embed(self, whole_batches: bool) -> None:
        if not self._held:
            return
        pos = np.concatenate([p for p, _ in self._held])
        crops = self._held[0][1] if len(self._held) == 1 else np.concatenate(
            [c for _, c in self._held])
        step = self.stage.cfg.batch_size
        n = len(pos) // step * step if whole_batches else len(pos)
        self._positions.append(pos[:n])
        self._vectors.append(self.stage.embed(crops[:n]))
        rest = len(pos) - n
        self._held = [(pos[n:], crops[n:].copy())] if rest else []  # own the few left over
        self._count = rest

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        self._embed(whole_batches=False)
        dim = self.stage.backbone.embed_dim
        pos = np.concatenate(self._positions) if self._positions else np.zeros(0, np.int64)
        vec = (np.concatenate(self._vectors) if self._vectors
               else np.zeros((0, dim), np.float32))
        self._positions, self._vectors = [], []
        return pos, vec
