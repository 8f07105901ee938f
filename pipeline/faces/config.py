"""Configuration of the face stage (config section ``faces``): sampling, detection,
tracking and cropping.

In: values from YAML / ``key=value`` overrides. Out: a frozen, validated ``FacesConfig``.
No torch import here, so loading a config stays cheap. Sizes are in pixels of the source
frame unless a field says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.media import IMAGE_EXTS

SAMPLINGS = ("all", "every_k", "fps", "count")
ASPECTS = ("square", "stretch")
DEVICES = ("auto", "cpu", "cuda")
PREFETCH = ("auto", "on", "off")
DETECT_MODES = ("every", "keyframe")
RESAMPLINGS = ("fast", "exact")  # as pipeline.faces.crop.RESAMPLINGS (no torch import here)


@dataclass(frozen=True)
class FacesConfig:
    sampling: Literal["all", "every_k", "fps", "count"] = "all"  # frames kept in the window
    every_k: int = 2  # sampling='every_k': keep every k-th frame of the window
    target_fps: float = 5.0  # sampling='fps': frames per second, on container timestamps
    num_frames: int = 16  # sampling='count': this many frames, evenly spaced
    folder_fps: float = 25.0  # frame folders: timestamp = position / folder_fps
    image_exts: tuple[str, ...] = IMAGE_EXTS  # frame files in folders
    chunk_frames: int = 32  # frames handled at once (bounds decode memory beyond the cache)
    # full frames kept per batch for the crop pass (beyond: decoded again); a video's frames
    # that it keeps are decoded together, up to 64 MiB a call
    cache_mb: int = 256
    detect_size: int = 320  # longest side of the frames MTCNN sees (never upscaled)
    detect_batch: int = 32  # equal-size frames per MTCNN call
    # every: MTCNN on each sampled frame; keyframe (default, 3-5x faster): on every
    # keyframe_every-th sampled frame (and the last), the face carried between two keyframes
    # that agree, the frames between two that disagree (keyframe_iou), or between which a
    # frame looks like neither (a thumbnail of the face region), detected too
    detect_mode: Literal["every", "keyframe"] = "keyframe"
    keyframe_every: int = 8  # detect_mode='keyframe': sampled frames from one keyframe to the next
    keyframe_iou: float = 0.5  # least IoU of matched faces on two keyframes to carry between them
    # detect_mode='keyframe': detect the keyframes after a sample's first at the size that shows
    # its smallest face at 64 px (faces down to half that size are still found; detect.py)
    keyframe_shrink: bool = True
    min_face: int = 40  # shorter side of a kept box, source px
    min_prob: float = 0.97  # MTCNN probability of a kept box
    track_iou: float = 0.3  # least IoU that links a detection to a track's last box
    max_gap: int = 5  # longest run of missed frames filled by interpolation
    smooth: int = 5  # centred moving-average window over frames for boxes (1 = off)
    crop_size: int = 224  # side of the square crop, px
    margin: float = 0.2  # crop side = longer box side * (1 + margin)
    aspect: Literal["square", "stretch"] = "square"  # stretch: box squeezed square (facenet)
    align: bool = False  # rotate crops so the eyes are level (needs landmarks)
    # how frames are resampled for MTCNN and for crops. fast: torch's antialiased uint8 kernels
    # on the CPU (~10x faster), crop regions rounded to whole source px; exact: float kernels,
    # crops at sub-pixel positions (float64, separable); tables made before 'fast' existed
    resample: Literal["fast", "exact"] = "fast"
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when available
    # decode the next chunk in a thread while this one is detected (one chunk more in memory);
    # auto = on when detecting on a GPU (two CPU cores gain nothing from it)
    prefetch: Literal["auto", "on", "off"] = "auto"
    store_crops: bool = False  # write crops as PNG into the faces table (else recrop later)

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"faces.sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.aspect not in ASPECTS:
            raise ValueError(f"faces.aspect must be one of {ASPECTS}, got {self.aspect!r}")
        if self.prefetch not in PREFETCH:
            raise ValueError(f"faces.prefetch must be one of {PREFETCH}, got {self.prefetch!r}")
        if self.device not in DEVICES:
            raise ValueError(f"faces.device must be one of {DEVICES}, got {self.device!r}")
        if self.resample not in RESAMPLINGS:
            raise ValueError(f"faces.resample must be one of {RESAMPLINGS}, got {self.resample!r}")
        if self.detect_mode not in DETECT_MODES:
            raise ValueError(
                f"faces.detect_mode must be one of {DETECT_MODES}, got {self.detect_mode!r}")
        _positive("every_k", self.every_k)
        _positive("keyframe_every", self.keyframe_every)
        _positive("target_fps", self.target_fps)
        _positive("num_frames", self.num_frames)
        _positive("folder_fps", self.folder_fps)
        _positive("chunk_frames", self.chunk_frames)
        _positive("detect_batch", self.detect_batch)
        _positive("crop_size", self.crop_size)
        _positive("smooth", self.smooth)
        if self.cache_mb < 0:
            raise ValueError(f"faces.cache_mb must be >= 0, got {self.cache_mb}")
        if self.detect_size < 48:
            # below this MTCNN's pyramid has no level for a 40 px face
            raise ValueError(f"faces.detect_size must be >= 48, got {self.detect_size}")
        if self.min_face < 1:
            raise ValueError(f"faces.min_face must be >= 1, got {self.min_face}")
        if not 0.0 < self.min_prob <= 1.0:
            raise ValueError(f"faces.min_prob must be in (0, 1], got {self.min_prob}")
        if not 0.0 < self.track_iou <= 1.0:
            raise ValueError(f"faces.track_iou must be in (0, 1], got {self.track_iou}")
        if not self.track_iou <= self.keyframe_iou <= 1.0:
            # below track_iou two agreeing keyframes might not link into one track
            raise ValueError(f"faces.keyframe_iou must be in [track_iou={self.track_iou}, 1], "
                             f"got {self.keyframe_iou}")
        if self.max_gap < 0:
            raise ValueError(f"faces.max_gap must be >= 0, got {self.max_gap}")
        if self.smooth % 2 == 0:
            raise ValueError(f"faces.smooth must be odd (a centred window), got {self.smooth}")
        if not 0.0 <= self.margin <= 4.0:
            raise ValueError(f"faces.margin must be in [0, 4], got {self.margin}")
        if not self.image_exts or any(not e.startswith(".") for e in self.image_exts):
            raise ValueError(
                f"faces.image_exts must be non-empty names like '.jpg', got {self.image_exts!r}"
            )


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"faces.{name} must be > 0, got {value}")
