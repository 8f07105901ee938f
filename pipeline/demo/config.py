"""Settings of the demo dataset (config section ``demo``); imports nothing heavy.

In: values from YAML / ``key=value`` overrides. Out: a frozen, validated ``DemoConfig``.
The generator that uses it lives in ``synth`` (numpy, PyAV, the face photo).
"""

from __future__ import annotations

import dataclasses

CLASSES = ("neutral", "pain")  # ordered, positive class last


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Size and look of the demo dataset (section ``demo``)."""

    n_subjects: int = 14           # subjects, each with its own appearance
    n_target: int = 2              # the last n_target subjects are target subjects
    videos_per_class: int = 4      # videos per subject and class
    n_frames: int = 40             # frames per video
    fps: int = 20                  # frame rate of the written videos
    size: int = 224                # frame width = height, pixels (even, for yuv420p)
    window_start: float = 0.3      # expression window start, fraction of the clip
    window_end: float = 0.8        # expression window end, fraction of the clip
    head_motion: float = 0.006     # head sway amplitude, fraction of the frame (roll x250 deg)
    crf: int = 20                  # h264 constant rate factor (lower = better, bigger)
    seed: int = 0                  # one seed for every random choice

    def __post_init__(self) -> None:
        checks = (
            ("n_subjects", self.n_subjects >= 2, "must be >= 2"),
            ("n_target", 1 <= self.n_target < self.n_subjects,
             f"must be in [1, n_subjects - 1 = {self.n_subjects - 1}]"),
            ("videos_per_class", self.videos_per_class >= 1, "must be >= 1"),
            ("n_frames", self.n_frames >= 8, "must be >= 8"),
            ("fps", 1 <= self.fps <= 120, "must be in [1, 120]"),
            ("size", 64 <= self.size <= 1024 and self.size % 2 == 0,
             "must be even and in [64, 1024]"),
            ("window_start", 0.0 <= self.window_start < self.window_end,
             f"must be in [0, window_end = {self.window_end})"),
            ("window_end", self.window_end <= 1.0, "must be <= 1"),
            ("head_motion", 0.0 <= self.head_motion <= 0.05, "must be in [0, 0.05]"),
            ("crf", 0 <= self.crf <= 51, "must be in [0, 51]"),
        )
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"demo.{name} {rule}, got {getattr(self, name)!r}")

    @property
    def window(self) -> tuple[float, float]:
        return (self.window_start, self.window_end)

    @property
    def classes(self) -> tuple[str, ...]:
        """Fixed, not a setting: the animation knows these two labels only."""
        return CLASSES
