"""Square face crops from stored boxes (and landmarks), deterministic, so a crop can be
recomputed later from the faces table alone.

In: an RGB uint8 frame (H, W, 3), a box x1 y1 x2 y2 and optionally five landmarks, in
source pixels (pixel i spans [i, i + 1)). Out: an RGB uint8 (S, S, 3) crop of the square
of side ``longer box side * (1 + margin)`` centred on the box (or, with
``aspect='stretch'``, of the box grown by the margin, squeezed to the square), optionally
rotated about its centre so the eyes are level; zeros outside the frame.
Two resampling methods (``faces.resample``), both bicubic (Keys, a = -0.5) with the
kernel widened when shrinking, so large faces do not alias:
- ``fast`` (default): the region rounded to whole source pixels (origin and side move
  by at most half a pixel) and resized by torch's antialiased uint8 bicubic, one native
  call per crop (~0.3-0.5 ms for a 224 px crop on a CPU core);
- ``exact``: the region at its sub-pixel position, a separable float64 filter whose k taps
  per output pixel are gathered (a banded filter), or a dense matrix product where the crop
  shrinks a lot (~3-4 ms per crop); the crops of tables made before ``fast`` existed.
Aligned crops resample the rotated region's bounding box at the output's own scale by the
chosen method, then rotate it by a bicubic ``grid_sample`` about the exact centre.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

RESAMPLINGS = ("fast", "exact")
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


def resample_taps(
    origin: float, step: float, n_out: int, n_in: int, black_outside: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The kernel taps of a 1-D resampling: source indices (n_out, k) and their weights
    (n_out, k). Output pixel j samples the source at ``origin + (j + 0.5) * step`` with
    k = ceil(4 * scale) + 2 taps, scale = max(step, 1) (the kernel widens when shrinking:
    antialiasing). With ``black_outside`` each row is normalised over its whole kernel
    and taps outside [0, n_in) then weigh nothing (the outside counts as black), else it is
    normalised over the taps inside (edges extend). Indices are clipped into the source,
    so every tap can be gathered; only k taps per output pixel are ever touched, instead
    of a dense (n_out, n_in) matrix that is zero almost everywhere."""
    centres = origin + (np.arange(n_out) + 0.5) * step
    scale = max(step, 1.0)
    k = math.ceil(4 * scale) + 2
    first = np.floor(centres - 2 * scale - 0.5).astype(np.int64)
    idx = first[:, None] + np.arange(k)[None, :]
    w = _cubic(((idx + 0.5) - centres[:, None]) / scale)  # zero outside |d| < 2
    inside = (idx >= 0) & (idx < n_in)
    total = w.sum(axis=1, keepdims=True) if black_outside else (w * inside).sum(1, keepdims=True)
    w = np.where(inside, w, 0.0) / np.where(total == 0, 1.0, total)
    return np.clip(idx, 0, max(n_in - 1, 0)), w


_BANDED_MAX_TAPS = 12  # up to 2.5x shrinking the taps are gathered; beyond, a dense product


def _dense(idx: np.ndarray, w: np.ndarray, lo: int, span: int) -> np.ndarray:
    """The taps as a dense (n_out, span) matrix over source indices lo .. lo + span - 1
    (taps clipped onto the same edge index add up)."""
    out = np.zeros((idx.shape[0], span))
    np.add.at(out, (np.arange(idx.shape[0])[:, None], idx - lo), w)
    return out


def _separable(frame: np.ndarray, taps_y: tuple[np.ndarray, np.ndarray],
               taps_x: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(n_y, n_x, 3) float64: the source region the taps reach, filtered along y, then x.
    A pass with few taps gathers them (whole leading rows: block copies) into one stacked
    matrix product; a pass that shrinks a lot (many taps: gathering them would copy the
    region many times over) is one dense matrix product instead."""
    (iy, wy), (ix, wx) = taps_y, taps_x
    lo_y, lo_x = int(iy.min()), int(ix.min())
    height, width = int(iy.max()) + 1 - lo_y, int(ix.max()) + 1 - lo_x
    n_y, n_x = len(iy), len(ix)
    region = frame[lo_y:lo_y + height, lo_x:lo_x + width]
    if iy.shape[1] <= _BANDED_MAX_TAPS:
        taps = region[iy - lo_y].astype(np.float64)  # gather uint8, then widen
        rows = np.matmul(wy[:, None, :], taps.reshape(n_y, iy.shape[1], width * 3))
    else:
        rows = _dense(iy, wy, lo_y, height) @ region.reshape(height, width * 3).astype(np.float64)
    cols = rows.reshape(n_y, width, 3).transpose(1, 0, 2).reshape(width, n_y * 3)
    if ix.shape[1] <= _BANDED_MAX_TAPS:
        out = np.matmul(wx[:, None, :], cols[ix - lo_x])  # (n_x, 1, n_y * 3)
    else:
        out = _dense(ix, wx, lo_x, width) @ cols
    return out.reshape(n_x, n_y, 3).transpose(1, 0, 2)


def resample(frame: np.ndarray, x0: float, y0: float, step_x: float, step_y: float,
             n_x: int, n_y: int) -> np.ndarray:
    """(n_y, n_x, 3) float64 image sampling ``frame`` on the grid starting at (x0, y0)."""
    return _separable(frame, resample_taps(y0, step_y, n_y, frame.shape[0]),
                      resample_taps(x0, step_x, n_x, frame.shape[1]))


def window(left: float, top: float, width: float, height: float) -> tuple[int, int, int, int]:
    """The whole-pixel region nearest to this one: origin and side rounded (half up), so
    each edge moves by at most half a source pixel; sides at least 1."""
    def near(v: float) -> int:
        return math.floor(v + 0.5)
    return near(left), near(top), max(1, near(width)), max(1, near(height))


def resize_window(frame: np.ndarray, left: int, top: int, width: int, height: int,
                  n_x: int, n_y: int) -> np.ndarray:
    """(n_y, n_x, 3) uint8: ``frame[top:top + height, left:left + width]`` (zeros outside the
    frame) resized by torch's antialiased bicubic on uint8 (edges of the region extend)."""
    fh, fw = frame.shape[:2]
    x1, y1, x2, y2 = max(left, 0), max(top, 0), min(left + width, fw), min(top + height, fh)
    if (x1, y1, x2, y2) == (left, top, left + width, top + height):
        region = frame[top:top + height, left:left + width]
    else:
        region = np.zeros((height, width, 3), np.uint8)
        if x2 > x1 and y2 > y1:
            region[y1 - top:y2 - top, x1 - left:x2 - left] = frame[y1:y2, x1:x2]
    if (height, width) == (n_y, n_x):
        return np.array(region, np.uint8)  # a copy: the crop never aliases the frame
    if not region.flags.writeable:  # torch wants writable memory; decoders may lend theirs
        region = region.copy()
    x = torch.from_numpy(region).permute(2, 0, 1)[None]
    y = F.interpolate(x, size=(n_y, n_x), mode="bicubic", antialias=True, align_corners=False)
    return y[0].permute(1, 2, 0).numpy()


def _sample(frame: np.ndarray, region: tuple[float, float, float, float], n_x: int, n_y: int,
            method: str) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The region (left, top, width, height, source px) sampled onto n_x by n_y pixels by
    ``method`` (``fast``: uint8; ``exact``: float64, unrounded), and the region it really
    covers (``fast`` rounds it to whole pixels)."""
    if method == "fast":
        whole = window(*region)
        return resize_window(frame, *whole, n_x, n_y), whole
    if method != "exact":
        raise ValueError(f"crop resampling must be one of {RESAMPLINGS}, got {method!r}")
    left, top, width, height = region
    return resample(frame, left, top, width / n_x, height / n_y, n_x, n_y), region


def crop_face(
    frame: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None, size: int,
    margin: float, align: bool = False, aspect: str = "square", method: str = "fast",
) -> np.ndarray:
    """One crop; see the module docstring and ``crop_geometry``."""
    cx, cy, width, height, angle = crop_geometry(box, landmarks, margin, align, aspect)
    if not np.isfinite([cx, cy, width, height]).all():
        raise ValueError(f"cannot crop around a box that is not finite: {np.asarray(box).tolist()}")
    if angle == 0.0:
        image = _sample(frame, (cx - width / 2, cy - height / 2, width, height), size, size,
                        method)[0]
        return image if image.dtype == np.uint8 else _to_uint8(image)
    # resample the rotated region's bounding box at the output scale first (antialiased),
    # then rotate at that scale, where bicubic sampling cannot alias
    cos, sin = math.cos(angle), math.sin(angle)
    step = min(width, height) / size
    n_x = math.ceil((abs(cos) * width + abs(sin) * height) / step) + 2 * _BORDER
    n_y = math.ceil((abs(sin) * width + abs(cos) * height) / step) + 2 * _BORDER
    flat, (left, top, span_x, span_y) = _sample(
        frame, (cx - n_x * step / 2, cy - n_y * step / 2, n_x * step, n_y * step), n_x, n_y,
        method)
    offs = (np.arange(size) + 0.5) / size - 0.5  # output pixel centres, fraction of the side
    u, v = np.meshgrid(offs * width, offs * height, indexing="xy")  # source px from centre
    if method == "exact":  # the flat image's pixels are exactly ``step`` apart
        gx = ((cos * u - sin * v) / step + n_x / 2) * (2.0 / n_x) - 1.0  # align_corners=False
        gy = ((sin * u + cos * v) / step + n_y / 2) * (2.0 / n_y) - 1.0
    else:  # the flat image spans the whole-pixel region it was resized from
        gx = (cx + cos * u - sin * v - left) / span_x * 2.0 - 1.0
        gy = (cy + sin * u + cos * v - top) / span_y * 2.0 - 1.0
    grid = torch.from_numpy(np.stack([gx, gy], axis=-1)[None])
    img = torch.from_numpy(flat.transpose(2, 0, 1)[None].astype(np.float64))
    out = F.grid_sample(img, grid, mode="bicubic", padding_mode="zeros", align_corners=False)
    return _to_uint8(out[0].numpy().transpose(1, 2, 0))


def resize_square(frame: np.ndarray, size: int, method: str = "fast") -> np.ndarray:
    """A whole (pre-cropped) face image resized to (size, size, 3), same kernel, edges
    extended instead of black."""
    h, w = frame.shape[:2]
    if method == "fast":
        return resize_window(frame, 0, 0, w, h, size, size)
    if method != "exact":
        raise ValueError(f"crop resampling must be one of {RESAMPLINGS}, got {method!r}")
    return _to_uint8(_separable(frame, resample_taps(0.0, h / size, size, h, False),
                                resample_taps(0.0, w / size, size, w, False)))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
