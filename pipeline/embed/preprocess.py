"""Batched CLIP preprocessing of face crops, whole batches at a time.

In: uint8 pixels (N, H, W, 3), numpy or torch, RGB. Out: float32 (N, 3, S, S) normalised by
the model's mean/std, on the requested device.

Crops normally arrive square at the model size, so the hot path is only a normalisation.
Other sizes get CLIP's resize (shorter side to S, bicubic, antialiased) and a centre crop,
computed on uint8 data like PIL does: torch's uint8 kernel rounds and clamps after the
resize and lands within one uint8 level of open_clip's PIL path, whereas resizing floats
drifts by about three levels. That resize therefore runs on the CPU (the uint8 kernel is a
CPU kernel) before the batch moves to the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

INTERPOLATIONS = ("bicubic", "bilinear")
RESIZE_MODES = ("shortest", "squash")


def as_uint8_nhwc(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validate a (N, H, W, 3) uint8 batch and view it as a tensor (no copy when possible)."""
    if isinstance(pixels, np.ndarray):
        if pixels.dtype == object:  # a column of per-row arrays, as Ray may hand it over
            pixels = np.stack(list(pixels)) if len(pixels) else np.zeros((0, 1, 1, 3), np.uint8)
        if not pixels.flags.writeable:  # Arrow-backed buffers are read-only; torch warns on them
            pixels = pixels.copy()
        tensor = torch.from_numpy(pixels)
    elif isinstance(pixels, torch.Tensor):
        tensor = pixels
    else:
        kind = type(pixels).__name__
        raise TypeError(f"pixels must be a numpy array or torch tensor, got {kind}")
    if tensor.dtype != torch.uint8:
        raise ValueError(f"pixels must be uint8, got dtype {tensor.dtype}")
    if tensor.ndim != 4 or tensor.shape[-1] != 3:
        raise ValueError(f"pixels must have shape (N, H, W, 3), got {tuple(tensor.shape)}")
    return tensor


def resized_shape(height: int, width: int, size: int, resize_mode: str) -> tuple[int, int]:
    """Output (h, w) of the resize step, with torchvision's rounding for 'shortest'."""
    if resize_mode == "squash":
        return size, size
    if resize_mode != "shortest":
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def resize_center_crop(
    images: torch.Tensor, size: int, interpolation: str = "bicubic", resize_mode: str = "shortest"
) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, size, size): resize, then centre crop."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    new_h, new_w = resized_shape(height, width, size, resize_mode)
    images = images.cpu().contiguous()
    if len(images):
        images = F.interpolate(images, size=(new_h, new_w), mode=interpolation, antialias=True)
    else:
        images = images.new_zeros((0, 3, new_h, new_w))
    top = int(round((new_h - size) / 2.0))  # torchvision's centre-crop offsets
    left = int(round((new_w - size) / 2.0))
    return images[:, :, top : top + size, left : left + size]


def normalize(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> float32 ((x / 255) - mean) / std, on the tensor's device.

    Computed as (x - 255 mean) * (1 / (255 std)) in place: one conversion and two passes
    over the batch instead of four, equal to the textbook form within 1e-6. The float
    copy keeps the input's memory layout (channels-last for NHWC crops), which the
    patch-embedding convolution takes as it is.
    """
    mean_t = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    shift = (255.0 * mean_t).float().to(images.device)
    scale = (1.0 / (255.0 * std_t)).float().to(images.device)
    return images.float().sub_(shift).mul_(scale)


def preprocess_batch(
    pixels: np.ndarray | torch.Tensor,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bicubic",
    resize_mode: str = "shortest",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float32 (N, 3, size, size) on ``device``."""
    images = as_uint8_nhwc(pixels).permute(0, 3, 1, 2)
    images = resize_center_crop(images, size, interpolation, resize_mode)
    if device is not None:
        # Move uint8, a quarter of the bytes of float32, then normalise on the device.
        images = images.to(device, non_blocking=True)
    return normalize(images, mean, std)
