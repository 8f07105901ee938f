"""Shared pieces of the dataset adapters: listing, frame-folder rules, row building.

In: folder URLs (local paths or any fsspec URL) and the rows an adapter built.
Out: directory entries, the numerically sorted frame list of a frame folder, and the final
manifest-row DataFrame (columns ``COLUMNS``, one row per sample, sorted by ``sample_id``).

Frame-folder rule, shared with whoever reads the folders: the frames of a folder are its
image files ordered by their frame number, the last run of digits in the file stem
(``image_105.jpg`` comes after ``image_5.jpg``). With ``time_unit == "frame"``, ``start`` and
``end`` are 0-based positions in that order for folders (decoded-frame indices for videos)
and ``end`` is inclusive.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from pipeline import io
from pipeline.media import IMAGE_EXTS, natural_key  # the face stage's rules

COLUMNS = (
    "sample_id", "video_id", "subject_id", "label", "path", "media",
    "start", "end", "time_unit", "status", "error",
)
MEDIA = ("video", "frames", "faces")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")

UNPARSED = "unparsed"  # something that looks like a sample but does not parse
UNREADABLE = "unreadable"  # a folder that cannot be listed
EMPTY_WINDOW = "empty_window"  # a sample whose window holds no frame (e.g. shorter than it)
_LAST_NUMBER = re.compile(r"(\d+)\D*$")


@dataclass(frozen=True)
class Entry:
    name: str   # base name
    url: str    # full path or URL
    is_dir: bool


def list_entries(url: str) -> list[Entry]:
    """Entries of a folder sorted by name, hidden (dot) names left out."""
    if io.is_local(url):
        folder = io.absolute(url)
        # scandir knows file types without a stat per entry: frame folders are large.
        with os.scandir(folder) as it:
            found = [Entry(e.name, os.path.join(folder, e.name), e.is_dir()) for e in it]
    else:
        fs, path = io.fs_and_path(url)
        found = []
        for info in fs.ls(path, detail=True):
            name = os.path.basename(str(info["name"]).rstrip("/"))
            found.append(Entry(name, io.join(url, name), info["type"] == "directory"))
    return sorted((e for e in found if not e.name.startswith(".")), key=lambda e: e.name)


def open_root(root: str, dataset: str, inner: str | None = None) -> tuple[str, list[Entry]]:
    """The folder to scan and its entries: ``root`` itself, or ``root/inner`` when ``root``
    is the dataset folder that holds ``inner`` (e.g. BioVid's ``video``)."""
    url = io.absolute(root)
    if not io.exists(url) or not io.isdir(url):
        raise FileNotFoundError(f"{dataset} root {root!r} is not an existing folder")
    entries = list_entries(url)
    if inner is not None:
        for e in entries:
            if e.is_dir and e.name == inner:
                return e.url, list_entries(e.url)
    return url, entries


def list_folder(url: str, rel: str) -> tuple[list[Entry], str | None]:
    """``list_entries`` of one folder inside the dataset, or ``([], message)`` when it cannot
    be listed (permissions, a vanished folder): a per-sample problem, not the dataset's."""
    try:
        return list_entries(url), None
    except OSError as exc:
        return [], f"{rel}/: cannot list folder: {type(exc).__name__}: {exc}"


def subject_folders(top: list[Entry], rows: list[dict], subject_re, dataset: str,
                    example: str):
    """Yield ``(subject folder, its entries)`` for the subject folders of ``top``; anything
    else that looks like a sample (a video outside a subject folder, a folder not named like
    a subject) becomes an unparsed row, and a subject folder that cannot be listed an
    unreadable row, appended to ``rows``."""
    for entry in top:
        if not entry.is_dir:
            if has_ext(entry.name, VIDEO_EXTS):
                rows.append(unparsed_row(key=entry.name, path=entry.url, media="video",
                                         error=f"{entry.name}: video outside a subject folder"))
            continue
        if not subject_re.fullmatch(entry.name):
            rows.append(unparsed_row(
                key=entry.name + "/", path=entry.url, media="video",
                error=f"{entry.name}/: folder name is not a {dataset} subject id like {example}"))
            continue
        items, error = list_folder(entry.url, entry.name)
        if error is not None:
            rows.append(unparsed_row(key=entry.name + "/", path=entry.url, media="video",
                                     subject_id=entry.name, error=error, status=UNREADABLE))
            continue
        yield entry, items


def entry_kind(subject: str, item: Entry, folder_media: str) -> tuple[str, str, str, str] | None:
    """(relative path, media, time unit, sample name) of a subject folder entry: a folder is
    a frame/face folder (frame windows), a video file a video (seconds); else None."""
    rel = f"{subject}/{item.name}"
    if item.is_dir:
        return rel, folder_media, "frame", item.name
    if has_ext(item.name, VIDEO_EXTS):
        return rel, "video", "s", stem(item.name)
    return None


def has_ext(name: str, exts: Iterable[str]) -> bool:
    return name.lower().endswith(tuple(exts))


def stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def frame_number(name: str) -> int | None:
    """Frame number of an image file name: the last run of digits in its stem."""
    m = _LAST_NUMBER.search(stem(name))
    return int(m.group(1)) if m else None


def sorted_frames(
    url: str, rel: str, name_re: re.Pattern[str] | None = None
) -> tuple[list[tuple[int, str]], str | None, str]:
    """``(number, name)`` of the image files of folder ``url`` in frame order, an error
    message or None, and the status that message deserves (``unparsed`` or ``unreadable``).

    ``name_re`` (group 1 = the number) makes the naming strict where the number carries
    meaning, e.g. BioVid's milliseconds. Non-image files are ignored; an image without a
    number, or two images with the same number, make the order ambiguous: an error.
    """
    entries, error = list_folder(url, rel)
    if error is not None:
        return [], error, UNREADABLE
    frames, error = _frame_order(entries, rel, name_re)
    return frames, error, UNPARSED


def _frame_order(
    entries: list[Entry], rel: str, name_re: re.Pattern[str] | None
) -> tuple[list[tuple[int, str]], str | None]:
    frames: list[tuple[int, str]] = []
    for e in entries:
        if e.is_dir or not has_ext(e.name, IMAGE_EXTS):
            continue
        if name_re is not None:
            m = name_re.fullmatch(e.name)
            number = int(m.group(1)) if m else None
        else:
            number = frame_number(e.name)
        if number is None:
            expected = name_re.pattern if name_re is not None else "a frame number"
            return [], f"{rel}/{e.name}: frame file name does not match {expected}"
        frames.append((number, e.name))
    if not frames:
        return [], f"{rel}: no frame images in folder"
    # Positions must be those of the face stage, which orders frames by name (naturally).
    frames.sort(key=lambda f: natural_key(f[1]))
    for (a, first), (b, second) in zip(frames, frames[1:], strict=False):
        if a == b:
            return [], f"{rel}: frames {first} and {second} share frame number {a}"
        if a > b:
            return [], (f"{rel}: frame {second} sorts after {first} by name but has a smaller "
                        "frame number; rename the frames so both orders agree")
    return frames, None


def sample_row(
    *, sample_id: str, video_id: str, subject_id: str, label: str | None, path: str,
    media: str, start: float | None = None, end: float | None = None, time_unit: str = "s",
    status: str = "ok", error: str | None = None,
) -> dict:
    """A sample's row; a sample that parsed but cannot be used (its window holds no frame,
    its folder cannot be listed) keeps its ids and label and gets a ``status`` and ``error``."""
    return {
        "sample_id": sample_id, "video_id": video_id, "subject_id": subject_id,
        "label": label, "path": path, "media": media, "start": start, "end": end,
        "time_unit": time_unit, "status": status, "error": error,
    }


def unparsed_row(
    *, key: str, path: str, error: str, media: str, video_id: str | None = None,
    subject_id: str | None = None, time_unit: str = "s", status: str = UNPARSED,
) -> dict:
    """A row for something that could not become a sample; ``key`` (usually the relative
    path) keeps its ``sample_id`` (``<status>:<key>``) unique and stable across rescans."""
    return {
        "sample_id": f"{status}:{key}", "video_id": video_id if video_id is not None else key,
        "subject_id": subject_id, "label": None, "path": path, "media": media, "start": None,
        "end": None, "time_unit": time_unit, "status": status, "error": error,
    }


def finalize(rows: list[dict]) -> pd.DataFrame:
    """The adapter's DataFrame: exact columns, unique ``sample_id``, sorted.

    Rows that share a ``sample_id`` (``2ea4_Math.mp4`` next to ``2ea4_Math.avi``) all become
    unparsed: picking one would be a silent guess.
    """
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["sample_id"]].append(r)
    out: list[dict] = []
    for sid, group in groups.items():
        if len(group) == 1:
            out.append(group[0])
            continue
        group.sort(key=lambda r: (r["path"], -1.0 if r["start"] is None else r["start"]))
        sources = ", ".join(sorted({r["path"] for r in group}))
        for i, r in enumerate(group):
            out.append({
                **r, "sample_id": f"{UNPARSED}:{sid}#{i}", "status": UNPARSED, "label": None,
                "error": f"duplicate sample_id {sid!r} from {len(group)} rows ({sources})",
            })
    out.sort(key=lambda r: r["sample_id"])
    df = pd.DataFrame({c: pd.Series([r[c] for r in out], dtype=object) for c in COLUMNS})
    for c in ("start", "end"):
        df[c] = pd.to_numeric(df[c]).astype("float64")
    return df


def check_choice(option: str, value: object, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")


def check_names(option: str, value: object, size: int | None = None) -> tuple[str, ...]:
    """A tuple of distinct non-empty strings (lists from YAML accepted)."""
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise ValueError(f"{option} must be a list of names, got {value!r}")
    names = tuple(value)
    bad = (not names or any(not isinstance(n, str) or not n for n in names)
           or len(set(names)) != len(names) or (size is not None and len(names) != size))
    if bad:
        need = f"{size} " if size is not None else ""
        raise ValueError(f"{option} must be {need}distinct non-empty strings, got {value!r}")
    return names
