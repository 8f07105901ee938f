"""Media naming rules shared by every stage: which files are frame images, and their order.

In: file names. Out: a yes/no and a sort key. Ingest (probing, dataset adapters) and the
face stage must agree on both, or a frame window computed at ingest would point at other
frames than the ones decoded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_DIGITS = re.compile(r"(\d+)")


def is_image(name: str, exts: Iterable[str] = IMAGE_EXTS) -> bool:
    return not name.startswith(".") and name.lower().endswith(tuple(e.lower() for e in exts))


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: image_5 < image_40 < image_105."""
    parts = _DIGITS.split(name)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts)
