"""Square face crops from stored boxes (and landmarks), deterministic, so a crop can be
recomputed later from the faces table alone.

In: an RGB uint8 frame (H, W, 3), a box x1 y1 x2 y2 and optionally five landmarks, in
source pixels (pixel i spans [i, i + 1)). Out: an RGB uint8 (S, S, 3) crop of the square
of side ``longer box side * (1 + margin)`` centred on the box (or, with
``aspect='stretch'``, of the box grown by the margin, squeezed to the square), optionally
rotated about its centre so the eyes are level; zeros outside the frame.
Resampling is separable bicubic (Keys, a = -0.5) with the kernel widened when shrinking,
so large faces do not alias; the rotation of aligned crops is a bicubic ``grid_sample``
at the output's own scale. Everything is float64 numpy except that one call.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

_A = -0.5  # Keys' cubic parameter (PIL's bicubic)
_BORDER = 3  # output px of context around the rotated square, for the bicubic kernel


def crop_geometry(
    box: np.ndarray, landmarks: np.ndarray | None, margin: float, align: bool,
    aspect: str = "square",
) -> tuple[float, float, float, float, float]:
    """(centre x, centre y, width, height, angle in radians) of the cropped region in the
    source: a square of the longer box side, or with ``aspect='stretch'`` the box itself
    (squeezed into the square output, like facenet-pytorch's crops); times 1 + margin."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, np.float64).reshape(4))
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    if aspect == "square":
        w = h = max(w, h)
    elif aspect != "stretch":
        raise ValueError(f"aspect must be 'square' or 'stretch', got {aspect!r}")
    angle = 0.0
    if align and landmarks is not None:
        pts = np.asarray(landmarks, np.float64).reshape(5, 2)
        if np.isfinite(pts[:2]).all():
            # image y points down: the angle of the line from the left to the right eye
            angle = math.atan2(pts[1, 1] - pts[0, 1], pts[1, 0] - pts[0, 0])
    return (x1 + x2) / 2.0, (y1 + y2) / 2.0, w * (1.0 + margin), h * (1.0 + margin), angle


def _cubic(d: np.ndarray) -> np.ndarray:
    d = np.abs(d)
    near = ((_A + 2) * d - (_A + 3)) * d * d + 1
    far = ((_A * d - 5 * _A) * d + 8 * _A) * d - 4 * _A
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def resample_matrix(
    origin: float, step: float, n_out: int, n_in: int, black_outside: bool = True
) -> tuple[np.ndarray, int]:
    """Weights (n_out, k) and first source index: output pixel j samples the source at
    ``origin + (j + 0.5) * step``. With ``black_outside`` rows are normalised over the
    whole kernel before the columns outside [0, n_in) are dropped (the outside counts as
    black), else over the columns kept (edges extend)."""
    centres = origin + (np.arange(n_out) + 0.5) * step
    scale = max(step, 1.0)  # widen the kernel when shrinking: antialiasing
    lo = math.floor(centres[0] - 2 * scale) - 1
    hi = math.ceil(centres[-1] + 2 * scale) + 2
    idx = np.arange(lo, hi)
    w = _cubic(((idx + 0.5)[None, :] - centres[:, None]) / scale)
    keep = (idx >= 0) & (idx < n_in)
    if not keep.any():
        return np.zeros((n_out, 0)), 0
    total = w.sum(axis=1, keepdims=True) if black_outside else w[:, keep].sum(1, keepdims=True)
    return w[:, keep] / total, int(idx[keep][0])


def resample(frame: np.ndarray, x0: float, y0: float, step_x: float, step_y: float,
             n_x: int, n_y: int) -> np.ndarray:
    """(n_y, n_x, 3) float64 image sampling ``frame`` on the grid starting at (x0, y0)."""
    wy, top = resample_matrix(y0, step_y, n_y, frame.shape[0])
    wx, left = resample_matrix(x0, step_x, n_x, frame.shape[1])
    if wy.shape[1] == 0 or wx.shape[1] == 0:
        return np.zeros((n_y, n_x, 3))
    region = frame[top: top + wy.shape[1], left: left + wx.shape[1]].astype(np.float64)
    rows = np.tensordot(wy, region, axes=(1, 0))  # (n_y, w, 3)
    return np.tensordot(wx, rows, axes=(1, 1)).transpose(1, 0, 2)


def crop_face(
    frame: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None, size: int,
    margin: float, align: bool = False, aspect: str = "square",
) -> np.ndarray:
    """One crop; see the module docstring and ``crop_geometry``."""
    cx, cy, width, height, angle = crop_geometry(box, landmarks, margin, align, aspect)
    if angle == 0.0:
        return _to_uint8(resample(frame, cx - width / 2, cy - height / 2, width / size,
                                  height / size, size, size))
    # resample the rotated region's bounding box at the output scale first (antialiased),
    # then rotate at that scale, where bicubic sampling cannot alias
    cos, sin = math.cos(angle), math.sin(angle)
    step = min(width, height) / size
    n_x = math.ceil((abs(cos) * width + abs(sin) * height) / step) + 2 * _BORDER
    n_y = math.ceil((abs(sin) * width + abs(cos) * height) / step) + 2 * _BORDER
    flat = resample(frame, cx - n_x * step / 2, cy - n_y * step / 2, step, step, n_x, n_y)
    offs = (np.arange(size) + 0.5) / size - 0.5  # output pixel centres, fraction of the side
    u, v = np.meshgrid(offs * width, offs * height, indexing="xy")  # source px from centre
    gx = ((cos * u - sin * v) / step + n_x / 2) * (2.0 / n_x) - 1.0  # align_corners=False
    gy = ((sin * u + cos * v) / step + n_y / 2) * (2.0 / n_y) - 1.0
    grid = torch.from_numpy(np.stack([gx, gy], axis=-1)[None])
    img = torch.from_numpy(flat.transpose(2, 0, 1)[None].copy())
    out = F.grid_sample(img, grid, mode="bicubic", padding_mode="zeros", align_corners=False)
    return _to_uint8(out[0].numpy().transpose(1, 2, 0))


def resize_square(frame: np.ndarray, size: int) -> np.ndarray:
    """A whole (pre-cropped) face image resized to (size, size, 3), same kernel, edges
    extended instead of black."""
    h, w = frame.shape[:2]
    wy, top = resample_matrix(0.0, h / size, size, h, black_outside=False)
    wx, left = resample_matrix(0.0, w / size, size, w, black_outside=False)
    region = frame[top: top + wy.shape[1], left: left + wx.shape[1]].astype(np.float64)
    rows = np.tensordot(wy, region, axes=(1, 0))
    return _to_uint8(np.tensordot(wx, rows, axes=(1, 1)).transpose(1, 0, 2))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
