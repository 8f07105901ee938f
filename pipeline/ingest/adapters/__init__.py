"""Dataset adapters: a dataset's folder layout as users receive it -> manifest rows.

In: a dataset name, the dataset's root (local path or fsspec URL) and that adapter's
options. Out: a pandas DataFrame with exactly ``COLUMNS``, one row per sample, sorted by
``sample_id``:
- ``sample_id`` (unique, derived from names only, so a rescan after adding a subject
  leaves earlier ids unchanged), ``video_id`` (the recording: file stem / folder name, or
  the relative path for ``pattern``), ``subject_id``, ``label`` (class name or None);
- ``path`` (absolute path or URL of the video, frame folder or face folder), ``media``
  (``video`` | ``frames`` | ``faces``: pre-cropped faces, detection skipped);
- ``start``/``end`` (float64, NaN = whole file) in ``time_unit`` ``s`` or ``frame``; with
  ``frame`` they are 0-based decoded-frame indices (videos) or positions in the folder's
  numerically sorted frame list (folders; see ``_common.frame_number``), ``end`` inclusive;
- ``status`` and ``error``: ``ok`` with None, or a message naming the file (or the CSV
  line) and the problem: ``unparsed`` (did not parse into a sample; ``sample_id``
  ``unparsed:<relative path>``), ``empty_window`` (the sample's window holds no frame, e.g.
  a frame folder shorter than its window) or ``unreadable`` (a folder that cannot be
  listed). A per-sample problem is that sample's row and never stops the scan; only the
  dataset's own faults (root, options, label or segment table) raise. Nothing that looks
  like a sample is skipped silently; samples deselected by an option (a BioVid class outside
  the pair) are no rows.
String columns are object dtype holding str or None.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pandas as pd

from pipeline.ingest.adapters._common import COLUMNS, frame_number
from pipeline.ingest.adapters.bah import scan_bah
from pipeline.ingest.adapters.biovid import scan_biovid
from pipeline.ingest.adapters.pattern import scan_pattern
from pipeline.ingest.adapters.stressid import scan_stressid

ADAPTERS: dict[str, Callable[..., pd.DataFrame]] = {
    "bah": scan_bah,
    "biovid": scan_biovid,
    "pattern": scan_pattern,
    "stressid": scan_stressid,
}

__all__ = ["ADAPTERS", "COLUMNS", "frame_number", "options_of", "scan", "scan_bah",
           "scan_biovid", "scan_pattern", "scan_stressid"]


def options_of(dataset: str) -> tuple[str, ...]:
    """The option names the adapter of ``dataset`` accepts."""
    adapter = _adapter(dataset)
    params = inspect.signature(adapter).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def scan(dataset: str, root: str, **options: object) -> pd.DataFrame:
    """Rows for ``root`` with the adapter of ``dataset``; unknown options are a TypeError."""
    known = options_of(dataset)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)} for dataset {dataset!r} "
                        f"(known: {', '.join(known)})")
    return _adapter(dataset)(root, **options)


def _adapter(dataset: str) -> Callable[..., pd.DataFrame]:
    if dataset not in ADAPTERS:
        raise ValueError(f"unknown dataset {dataset!r} (known: {', '.join(sorted(ADAPTERS))})")
    return ADAPTERS[dataset]
