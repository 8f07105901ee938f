"""BioVid Heat Pain part A -> manifest rows.

In: ``root``, either the dataset folder holding ``video/`` or ``video/`` itself, laid out as
``<subject>/<subject>-<CLASS>-<nnn>.mp4``; or a folder of extracted frames laid out as
``<subject>/<subject>-<CLASS>-<nnn>/image<ms>.jpg`` (``<ms>``: the frame's time in
milliseconds). Both kinds may sit side by side: each entry is judged on its own.
Out: one row per sample of a selected class (default BL1 -> ``neutral``, PA4 -> ``pain``),
``sample_id`` = ``<subject>-<CLASS>-<nnn>``, ``video_id`` the file stem / folder name.

Time window (default the papers' 2.04-5.00 s of each 5.5 s sample):
- videos: ``start``/``end`` are the window in seconds (``time_unit`` ``s``); the papers keep
  both ends (75 frames at 25 fps), so readers should treat it as a closed interval;
- frame folders: the frames whose ``<ms>`` lies in the closed window are selected, and
  ``start``/``end`` are the 0-based positions of the first and last selected frame in the
  folder's numerically sorted frame list, ``end`` INCLUSIVE (``time_unit`` ``frame``): the
  reader takes ``frames[start:end + 1]``. 2040..5000 ms at 40 ms gives 75 frames.

Classes outside the selection are not samples (no row). Anything else that does not parse
becomes an ``unparsed`` row naming the file: a video or folder whose name is not
``<subject>-<CLASS>-<nnn>``, whose subject differs from its folder, a subject folder whose
name is not a BioVid id (``071309_w_21``), a video outside a subject folder, a frame folder
with badly named frames. A frame folder with no frame in the window (a sample shorter than
its window) is the sample's row with status ``empty_window``; a folder that cannot be listed
an ``unreadable`` row. None of these stops the scan.
"""

from __future__ import annotations

import re

import pandas as pd

from pipeline.ingest.adapters import _common as c

CODES = ("BL1", "PA1", "PA2", "PA3", "PA4")
SUBJECT_RE = re.compile(r"\d{6}_[mw]_\d{2}")
SAMPLE_RE = re.compile(r"(?P<subject>[^-/]+)-(?P<code>[A-Z]+\d+)-(?P<n>\d{3})")
FRAME_RE = re.compile(r"image(\d+)\.(?:jpe?g|png)", re.IGNORECASE)


def scan_biovid(
    root: str,
    *,
    classes: tuple[str, ...] = ("BL1", "PA4"),
    names: tuple[str, ...] = ("neutral", "pain"),
    window: tuple[float, float] = (2.04, 5.00),
    folder_media: str = "frames",
) -> pd.DataFrame:
    """Scan a BioVid part A tree; see the module docstring for layouts and columns.

    classes: BioVid codes to keep, in class-list order; names: their class names (same
    length); window: (start, end) seconds of each sample; folder_media: ``frames``, or
    ``faces`` when the frame folders hold pre-cropped faces (detection skipped).
    """
    classes = c.check_names("biovid.classes", classes)
    names = c.check_names("biovid.names", names, size=len(classes))
    for code in classes:
        c.check_choice("biovid.classes", code, CODES)
    if len(classes) < 2:
        raise ValueError(f"biovid.classes must name at least two codes, got {classes!r}")
    window = _check_window(window)
    c.check_choice("biovid.folder_media", folder_media, ("frames", "faces"))
    label_of = dict(zip(classes, names, strict=True))

    _, top = c.open_root(root, "biovid", inner="video")
    rows: list[dict] = []
    for entry, items in c.subject_folders(top, rows, SUBJECT_RE, "BioVid", "071309_w_21"):
        for item in items:
            row = _sample(entry.name, item, label_of, window, folder_media)
            if row is not None:
                rows.append(row)
    return c.finalize(rows)


def _check_window(window: object) -> tuple[float, float]:
    start = end = float("nan")
    if isinstance(window, (tuple, list)) and len(window) == 2:
        try:
            start, end = float(window[0]), float(window[1])
        except (TypeError, ValueError):
            pass  # reported below with the option's name
    if not 0.0 <= start < end:
        raise ValueError(f"biovid.window must be (start, end) seconds, 0 <= start < end, "
                         f"got {window!r}")
    return start, end


def _sample(
    subject: str, item: c.Entry, label_of: dict[str, str], window: tuple[float, float],
    folder_media: str,
) -> dict | None:
    """The row for one entry of a subject folder, or None (not a sample: other class or
    a non-media file)."""
    kind = c.entry_kind(subject, item, folder_media)
    if kind is None:
        return None
    rel, media, unit, name = kind
    m = SAMPLE_RE.fullmatch(name)
    problem = None
    if m is None or m["code"] not in CODES:
        problem = "name does not match <subject>-<BL1|PA1..PA4>-<nnn>"
    elif m["subject"] != subject:
        problem = f"names subject {m['subject']} but lies in folder {subject}"
    if problem is not None:
        return c.unparsed_row(key=rel, path=item.url, media=media, subject_id=subject,
                              time_unit=unit, error=f"{rel}: {problem}")
    if m["code"] not in label_of:
        return None
    row = dict(sample_id=name, video_id=name, subject_id=subject, label=label_of[m["code"]],
               path=item.url, media=media, time_unit=unit)
    if media == "video":
        return c.sample_row(**row, start=window[0], end=window[1])
    frames, error, status = c.sorted_frames(item.url, rel, FRAME_RE)
    if status == c.UNREADABLE:
        return c.sample_row(**row, status=status, error=error)
    if error is not None:
        return c.unparsed_row(key=rel, path=item.url, media=media, subject_id=subject,
                              video_id=name, time_unit=unit, error=error)
    lo, hi = round(window[0] * 1000), round(window[1] * 1000)
    inside = [i for i, (ms, _) in enumerate(frames) if lo <= ms <= hi]
    if not inside:  # e.g. a sample shorter than its window: a row, the dataset goes on
        return c.sample_row(**row, status=c.EMPTY_WINDOW, error=(
            f"{rel}: no frame between {lo} and {hi} ms (its {len(frames)} frame(s) lie at "
            f"{frames[0][0]}..{frames[-1][0]} ms)"))
    # One frame inside is a legal window: start == end, both inclusive.
    return c.sample_row(**row, start=float(inside[0]), end=float(inside[-1]))
