"""Tiny generated dataset trees for the adapter tests: one real 4-frame clip copied
around, frame folders of tiny JPEGs, and readers of a scan's rows."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import av
import numpy as np
import pandas as pd
from PIL import Image

from pipeline.ingest.adapters import COLUMNS

S1, S2, S3 = "071309_w_21", "081014_w_27", "101609_m_36"


def put(clip: Path, root: Path, *rels: str) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, root / rel)


def frames(jpeg: bytes, folder: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(jpeg)


def by_id(df: pd.DataFrame) -> dict[str, dict]:
    assert tuple(df.columns) == COLUMNS
    assert df["sample_id"].is_unique and list(df["sample_id"]) == sorted(df["sample_id"])
    return {r["sample_id"]: r for r in df.to_dict("records")}


def unparsed(df: pd.DataFrame) -> list[str]:
    bad = df[df["status"] == "unparsed"]
    assert bad["error"].map(lambda e: isinstance(e, str) and e != "").all()
    assert (df.loc[df["status"] == "ok", "error"].isna()).all()
    return sorted(bad["error"])


def has(errors: list[str], *parts: str) -> bool:
    return any(all(p in e for p in parts) for e in errors)


def make_clip(path: Path) -> Path:
    """A real 4-frame mpeg4 clip (32 px) at ``path``."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(4):
            img = np.full((32, 32, 3), 60 * i, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    with av.open(str(path)) as check:
        assert sum(1 for _ in check.decode(video=0)) == 4
    return path


def jpeg_bytes() -> bytes:
    """One tiny JPEG frame."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 90)).save(buf, format="JPEG")
    return buf.getvalue()


def ms_frames(jpeg: bytes, folder: Path, last_ms: int) -> None:
    frames(jpeg, folder, [f"image{m}.jpg" for m in range(0, last_ms + 1, 40)])
