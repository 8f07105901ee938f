"""The embedding stage: face crops in, raw CLIP image embeddings out.

In: a batch dict with ``crop_pixels`` uint8 (N, S, S, 3) (any other columns ride along).
Out: the same dict plus ``embedding`` float32 (N, d), the image tower's raw output
(``model.encode_image(x)``, not normalised). Storage dtype (``EmbedConfig.dtype``) is the
writer's business; the stage always returns float32. Rows are embedded as given: the job
decides beforehand which rows (status ok/filled) reach this stage.
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
