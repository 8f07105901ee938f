"""Face detection: facenet-pytorch MTCNN on downscaled, equal-size frame batches.

In: RGB uint8 frames (H, W, 3), any mix of sizes. Out: per frame a ``FrameFaces`` with
boxes (n, 4) x1 y1 x2 y2, probabilities (n,) and landmarks (n, 5, 2) (left eye, right
eye, nose, mouth left, mouth right), all in source pixels and already filtered by
``min_prob`` and ``min_face``. Only ``MTCNN.detect`` is used: its crop path needs OpenCV.
When MTCNN cannot run on the frames given (frames smaller than its smallest pyramid level,
or MTCNN itself raising on them) ``detect_small`` raises ``DetectError`` naming the frames'
size and the cause; errors of this module's own code are not converted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline._torchvision_compat import ensure_torchvision_ops

ensure_torchvision_ops()  # facenet-pytorch imports torchvision: fix it first, in every process

from facenet_pytorch import MTCNN  # noqa: E402

from pipeline.faces.config import FacesConfig  # noqa: E402

DOWNSCALE_BYTES = 64 * 2**20  # float32 working memory of one ``downscale`` step
# Keyframe mode (faces.keyframe_shrink): the keyframes after a sample's first are detected
# at the size that shows the first keyframe's smallest face at KEY_FACE_PX detection px
# (boxes stay within IoU ~0.95 of per-frame detection at ``detect_size``), looking for faces
# down to KEY_FACE_SHARE of that; sizes round up to a multiple of KEY_SIDE_STEP px, so
# samples of a dataset share batches.
KEY_FACE_PX = 64
KEY_FACE_SHARE = 0.5
KEY_SIDE_STEP = 32


class DetectError(Exception):
    """MTCNN could not run on these frames: a property of the input, not a bug here."""


@dataclass(frozen=True)
class FrameFaces:
    boxes: np.ndarray  # (n, 4) float32, source px
    probs: np.ndarray  # (n,) float32
    landmarks: np.ndarray  # (n, 5, 2) float32, source px

    @staticmethod
    def empty() -> FrameFaces:
        return FrameFaces(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                          np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.probs)


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("faces.device is 'cuda' but torch.cuda.is_available() is False")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"faces.device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    return torch.device(name)


def detect_shape(height: int, width: int, detect_size: int) -> tuple[int, int]:
    """(h, w) of the frame MTCNN sees: longest side ``detect_size``, never upscaled."""
    scale = min(1.0, detect_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def keyframe_detection(faces: FrameFaces, src_hw: tuple[int, int], detect_size: int
                       ) -> tuple[tuple[int, int], float | None]:
    """(h, w) and the smallest face (detection px; None: from faces.min_face) at which to
    detect a sample's later keyframes, given the faces of its first (source px): never
    larger than ``detect_size`` allows, the shorter side never under KEY_FACE_PX."""
    full = detect_shape(*src_hw, detect_size)
    if len(faces) == 0:
        return full, None
    sides = np.minimum(faces.boxes[:, 2] - faces.boxes[:, 0], faces.boxes[:, 3] - faces.boxes[:, 1])
    smallest = max(float(sides.min()), 1.0)
    longest, shortest = max(src_hw), min(src_hw)
    scale = max(KEY_FACE_PX / smallest, KEY_FACE_PX / shortest)
    side = math.ceil(longest * scale / KEY_SIDE_STEP) * KEY_SIDE_STEP
    if side >= max(full):
        return full, None
    shape = detect_shape(*src_hw, side)
    return shape, min(KEY_FACE_SHARE * smallest * shape[0] / src_hw[0], float(min(shape)))


def downscale(frames: np.ndarray, shape: tuple[int, int], device: torch.device,
              max_bytes: int = DOWNSCALE_BYTES, exact: bool = False) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, h, w, 3) uint8 on ``device``, antialiased bilinear. On the
    CPU, unless ``exact`` (faces.resample), torch's uint8 kernel does it without a float
    copy (~10x faster; grey levels within one of the float kernel's). Else frames are
    resampled in float32 a few at a time, so the working copy stays under ``max_bytes``
    (a chunk of full-HD frames would otherwise cost four times its own size again)."""
    n, height, width = (int(v) for v in frames.shape[:3])
    if (height, width) == tuple(shape):
        return torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    if not exact and device.type == "cpu":
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        y = F.interpolate(x, size=shape, mode="bilinear", antialias=True, align_corners=False)
        return y.permute(0, 2, 3, 1).contiguous()
    step = max(1, max_bytes // (height * width * 3 * 4))
    out = torch.empty((n, *shape, 3), dtype=torch.uint8, device=device)
    for lo in range(0, n, step):
        x = torch.from_numpy(np.ascontiguousarray(frames[lo: lo + step])).to(device)
        y = F.interpolate(x.permute(0, 3, 1, 2).float(), size=shape, mode="bilinear",
                          antialias=True, align_corners=False)
        out[lo: lo + step] = y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out


def to_source(points: np.ndarray, src_hw: tuple[int, int], det_hw: tuple[int, int]) -> np.ndarray:
    """Map (..., 2k) x, y coordinates from the detection frame back to source pixels."""
    sx = src_hw[1] / det_hw[1]
    sy = src_hw[0] / det_hw[0]
    out = np.array(points, dtype=np.float64, copy=True)
    out[..., 0::2] *= sx
    out[..., 1::2] *= sy
    return out.astype(np.float32)


class FaceDetector:
    """MTCNN with the stage's thresholds; thread-unsafe (one per worker)."""

    def __init__(self, cfg: FacesConfig, device: torch.device | None = None) -> None:
        self.cfg = cfg
        self.device = device if device is not None else resolve_device(cfg.device)
        # keep_all: every face of every frame, the tracker picks one per sample
        self.mtcnn = MTCNN(keep_all=True, select_largest=False, device=self.device)
        # NHWC convolutions: the same boxes (up to float rounding), 15-30 % less time on a
        # CPU, where NCHW max-pooling of MTCNN's small maps is slow
        self.mtcnn.to(memory_format=torch.channels_last)
        self.mtcnn.eval()

    def detect_small(self, small: torch.Tensor, src_hw: tuple[int, int],
                     least: float | None = None) -> list[FrameFaces]:
        """Detect on already downscaled frames (N, h, w, 3) uint8 of one source size,
        looking for faces down to ``least`` detection px (None: faces.min_face)."""
        det_hw = (int(small.shape[1]), int(small.shape[2]))
        scale = det_hw[0] / src_hw[0]
        # MTCNN's pyramid starts at the smallest face it looks for: start just below the
        # configured minimum (in detection px) instead of its default 20 px, never below
        # its 12 px cell, which would upscale the frame
        self.mtcnn.min_face_size = max(12.0, 0.8 * self.cfg.min_face * scale, least or 0.0)
        size = f"{src_hw[1]}x{src_hw[0]} px (detection size {det_hw[1]}x{det_hw[0]})"
        if min(det_hw) < self.mtcnn.min_face_size:
            # MTCNN's pyramid has no level at all for such frames and would fail inside
            raise DetectError(
                f"frames of {size} are smaller than MTCNN's smallest pyramid level: the "
                f"shorter side must be at least {self.mtcnn.min_face_size:.0f} detection px "
                f"(faces.min_face={self.cfg.min_face})")
        out: list[FrameFaces] = []
        for lo in range(0, len(small), self.cfg.detect_batch):
            part = small[lo: lo + self.cfg.detect_batch]
            try:
                boxes, probs, points = self.mtcnn.detect(part, landmarks=True)
            except torch.OutOfMemoryError:
                raise  # the device, not the frames: the unit fails and is retried
            except (RuntimeError, ValueError) as err:
                raise DetectError(f"MTCNN failed on {len(part)} frame(s) of {size}: "
                                  f"{type(err).__name__}: {err}") from err
            for b, p, pt in zip(boxes, probs, points, strict=True):
                out.append(self.select(b, p, pt, src_hw, det_hw))
        return out

    def select(self, boxes, probs, points, src_hw: tuple[int, int],
               det_hw: tuple[int, int]) -> FrameFaces:
        """One frame of raw ``MTCNN.detect`` output -> source pixels, filtered."""
        if boxes is None or len(boxes) == 0:
            return FrameFaces.empty()
        # keep_all gives object arrays per frame: convert each to plain float arrays
        b = to_source(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), src_hw, det_hw)
        pt = to_source(np.asarray(points, dtype=np.float64).reshape(-1, 10), src_hw, det_hw)
        p = np.asarray(probs, dtype=np.float32).reshape(-1)
        side = np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        ok = (p >= self.cfg.min_prob) & (side >= self.cfg.min_face)
        return FrameFaces(b[ok], p[ok], pt[ok].reshape(-1, 5, 2))

    def detect(self, frames: Sequence[np.ndarray]) -> list[FrameFaces]:
        """Detect on full frames of any sizes; equal sizes share MTCNN batches."""
        out: list[FrameFaces | None] = [None] * len(frames)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault((int(f.shape[0]), int(f.shape[1])), []).append(i)
        for src_hw, members in groups.items():
            shape = detect_shape(*src_hw, self.cfg.detect_size)
            for lo in range(0, len(members), self.cfg.detect_batch):
                part = members[lo: lo + self.cfg.detect_batch]
                small = downscale(np.stack([frames[i] for i in part]), shape, self.device,
                                  exact=self.cfg.resample == "exact")
                for i, faces in zip(part, self.detect_small(small, src_hw), strict=True):
                    out[i] = faces
        return [f if f is not None else FrameFaces.empty() for f in out]
