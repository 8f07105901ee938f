"""Ingest settings: where samples come from and how they are cut into shards."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class IngestConfig:
    manifest: str | None = None  # CSV or Parquet: video_id, subject_id, label, path [+ optional]
    split: str | None = None  # CSV or Parquet: subject_id, role (source|target)
    dataset: Literal["manifest", "biovid", "stressid", "bah", "pattern"] = "manifest"
    root: str | None = None  # dataset root for the adapters (--dataset ...)
    pattern: str | None = None  # dataset=pattern: e.g. "{subject}/{label}/{video}.mp4"
    classes: tuple[str, ...] = ()  # ordered class list, positive class last; () = sorted labels
    media: Literal["auto", "video", "frames", "faces"] = "auto"  # auto: file=video, folder=frames
    shard_size: int = 16  # samples per shard; fixed when a batch is ingested
    probe: bool = True  # open each file's header (frame count, fps, size) at ingest
    window: tuple[float, float] | None = None  # adapters: sample time window in seconds
    biovid_codes: tuple[str, ...] = ("BL1", "PA4")  # biovid: the class codes to keep
    stress_threshold: float = 5.0  # stressid: self-report >= this is 'stress'
    labels_path: str | None = None  # stressid: self-report table (default: found under root)
    segments_path: str | None = None  # bah: the segment CSV (default: found under root)
    faces_root: str | None = None  # bah: folder of cropped-aligned face frames (skips detection)
    chunk_frames: int = 100  # bah: long segments are cut into chunks of this many frames

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ValueError(f"ingest.shard_size must be >= 1, got {self.shard_size}")
        if self.chunk_frames < 1:
            raise ValueError(f"ingest.chunk_frames must be >= 1, got {self.chunk_frames}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"ingest.classes has duplicates: {list(self.classes)}")
        if self.window is not None and not self.window[0] < self.window[1]:
            raise ValueError(f"ingest.window must be (start, end) with start < end, got {self.window}")
        if self.dataset == "pattern" and self.root and not self.pattern:
            raise ValueError("ingest.pattern is required when ingest.dataset is 'pattern'")
