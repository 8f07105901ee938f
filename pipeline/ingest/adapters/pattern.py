"""Any dataset whose paths encode subject (and label) -> manifest rows, from a pattern.

In: ``root`` and a ``pattern`` of the path relative to it with named fields, e.g.
``{subject}/{label}/{video}.mp4`` or ``{subject}_{label}_{n}.avi``. ``{subject}`` is
required, ``{label}`` optional (absent: every label None), other names are free. A field
matches a non-empty piece of one path component (never a ``/``); earlier fields take the
shortest match; a field used twice must match the same text both times; two fields need
literal text between them.
Out: one row per match, ``sample_id`` = ``video_id`` = the relative path (without the video
extension), the whole file or folder (``start``/``end`` None).

Candidates: with ``media="video"``, every file anywhere under ``root`` with one of
``extensions``; with ``frames`` / ``faces`` (pre-cropped, detection skipped), every folder
exactly as deep as the pattern. A candidate that does not match, whose label is not in
``classes`` (when given), or a folder without well-numbered frames, is an ``unparsed`` row
naming it; a folder that cannot be listed is an ``unreadable`` row (the scan goes on).
Other files (text, CSV, images of a video tree) are not candidates.
"""

from __future__ import annotations

import re

import pandas as pd

from pipeline.ingest.adapters import _common as c

_FIELD = re.compile(r"\{([^{}]*)\}")


def compile_pattern(pattern: str) -> tuple[re.Pattern[str], tuple[str, ...], int]:
    """The regex for a pattern, its field names and its depth (number of components)."""
    def bad(why: str) -> ValueError:
        return ValueError(f"pattern.pattern {pattern!r}: {why}")

    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"pattern.pattern must be a non-empty string, got {pattern!r}")
    parts = pattern.split("/")
    if pattern.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise bad("must be relative, without empty, '.' or '..' components")
    regex, fields, pos, after_field = [], [], 0, False
    for m in _FIELD.finditer(pattern):
        literal, name = pattern[pos:m.start()], m.group(1)
        if "{" in literal or "}" in literal:
            raise bad(f"unbalanced brace in {literal!r}")
        if not name.isidentifier():
            raise bad(f"field name {name!r} is not an identifier")
        if after_field and not literal:
            raise bad(f"field {{{name}}} must be separated from the one before by literal text")
        regex.append(re.escape(literal))
        if name in fields:
            regex.append(f"(?P={name})")
        else:
            regex.append(f"(?P<{name}>[^/]+?)")
            fields.append(name)
        pos, after_field = m.end(), True
    tail = pattern[pos:]
    if "{" in tail or "}" in tail:
        raise bad(f"unbalanced brace in {tail!r}")
    if "subject" not in fields:
        raise bad("needs a {subject} field")
    regex.append(re.escape(tail))
    return re.compile("".join(regex)), tuple(fields), len(parts)


def scan_pattern(
    root: str,
    *,
    pattern: str,
    media: str = "video",
    classes: tuple[str, ...] | None = None,
    extensions: tuple[str, ...] = c.VIDEO_EXTS,
) -> pd.DataFrame:
    """Scan ``root`` with ``pattern``; see the module docstring.

    media: ``video``, ``frames`` or ``faces``; classes: allowed label values (None: any);
    extensions: video file extensions that make a file a candidate (``media="video"``).
    """
    regex, fields, depth = compile_pattern(pattern)
    c.check_choice("pattern.media", media, c.MEDIA)
    if classes is not None:
        classes = c.check_names("pattern.classes", classes)
        if "label" not in fields:
            raise ValueError(f"pattern.classes needs a {{label}} field in pattern {pattern!r}, "
                             f"got classes {classes!r}")
    exts = c.check_names("pattern.extensions", extensions)
    if any(not e.startswith(".") for e in exts):
        raise ValueError(f"pattern.extensions must start with '.', got {extensions!r}")
    exts = tuple(e.lower() for e in exts)

    _, top = c.open_root(root, "pattern")
    unit = "s" if media == "video" else "frame"
    rows: list[dict] = []
    for rel, entry in _candidates(top, "", media, exts, depth, rows):
        m = regex.fullmatch(rel)
        problem, status, error = None, "ok", None
        if m is None:
            problem = f"does not match pattern {pattern!r}"
        elif classes is not None and m["label"] not in classes:
            problem = f"label {m['label']!r} is not one of {', '.join(classes)}"
        elif media != "video":
            _, error, status = c.sorted_frames(entry.url, rel)
            if status != c.UNREADABLE:  # bad frame names: the sample does not parse
                problem, status, error = error, "ok", None
        if problem is not None:
            msg = problem if problem.startswith(rel) else f"{rel}: {problem}"
            rows.append(c.unparsed_row(key=rel, path=entry.url, media=media, time_unit=unit,
                                       subject_id=m["subject"] if m else None, error=msg))
            continue
        sid = c.stem(rel) if media == "video" else rel
        rows.append(c.sample_row(
            sample_id=sid, video_id=sid, subject_id=m["subject"],
            label=m["label"] if "label" in fields else None, path=entry.url, media=media,
            time_unit=unit, status=status, error=error))
    return c.finalize(rows)


def _candidates(
    entries: list[c.Entry], prefix: str, media: str, exts: tuple[str, ...], depth: int,
    rows: list[dict],
) -> list[tuple[str, c.Entry]]:
    """(relative path, entry) of every candidate below ``entries`` (at depth 1); a folder
    that cannot be listed becomes an ``unreadable`` row in ``rows``."""
    out = []
    level = prefix.count("/") + 1 if prefix else 1
    for e in entries:
        rel = f"{prefix}{e.name}"
        if e.is_dir and (media == "video" or level < depth):
            inner, error = c.list_folder(e.url, rel)
            if error is not None:
                rows.append(c.unparsed_row(key=rel + "/", path=e.url, media=media, error=error,
                                           time_unit="s" if media == "video" else "frame",
                                           status=c.UNREADABLE))
                continue
            out += _candidates(inner, rel + "/", media, exts, depth, rows)
        elif e.is_dir and media != "video" and level == depth:
            out.append((rel, e))
        elif not e.is_dir and media == "video" and c.has_ext(e.name, exts):
            out.append((rel, e))
    return out
