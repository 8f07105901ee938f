"""StressID -> manifest rows, labels from the participants' self-reports.

In: ``root``, the dataset folder holding ``Videos/`` or the videos folder itself, with one
folder per subject (4-character ids like ``2ea4``) holding one video per task,
``<subject>_<Task>.<ext>``, or one frame folder per task, ``<subject>_<Task>/image_<k>.jpg``
(whole folder, frames in numeric order of k). Labels come from a table (``labels_path``, by
default ``self_assessments.csv`` then ``labels.csv`` in ``root``), recognised by its columns:
- wide (``self_assessments.csv``, ``;``-separated): a ``Tasks`` column with rows
  ``<Task>_stress`` (and ``_relax``, ``_valence``, ``_arousal``, unused) and one column per
  subject of 0-10 answers: ``stress`` when the answer is >= ``threshold``, else ``neutral``;
- long (``labels.csv``): a ``subject/task`` column (``2ea4_Math``) and a 0/1 column
  (``label_column``, default ``binary-stress`` or the only other column): 1 -> ``stress``.
Out: one row per task video / folder, ``sample_id`` = ``video_id`` = ``<subject>_<Task>``.
A blank answer, or a subject or task missing from the table, gives label None (unlabelled,
status ok), never a guess; an answer that is not a number (wide) or not 0/1 (long) gives an
``unparsed`` row naming the table, subject and task. Unknown task names, names that do not
parse, a subject differing from its folder and folders that are not subject ids are
``unparsed`` rows naming the file; a folder that cannot be listed is an ``unreadable`` row.
None of these stops the scan.
"""

from __future__ import annotations

import io as _io
import math
import re

import pandas as pd

from pipeline import io
from pipeline.ingest.adapters import _common as c

TASKS = ("Breathing", "Counting1", "Counting2", "Counting3", "Math", "Reading", "Relax",
         "Speaking", "Stroop", "Video1", "Video2")
SUBJECT_RE = re.compile(r"[0-9a-z]{4}")
SAMPLE_RE = re.compile(r"(?P<subject>[^_/]+)_(?P<task>[^/]+)")
LABEL_FILES = ("self_assessments.csv", "labels.csv")

# (subject, task) -> a 0-10 answer or 0/1 (float), None (missing) or the raw bad text (str)
Answers = dict[tuple[str, str], float | str | None]


def scan_stressid(
    root: str,
    *,
    labels_path: str | None = None,
    threshold: float = 5.0,
    names: tuple[str, ...] = ("neutral", "stress"),
    label_column: str | None = None,
    unlabelled: bool = False,
    folder_media: str = "frames",
) -> pd.DataFrame:
    """Scan a StressID tree; see the module docstring for layouts, labels and columns.

    labels_path: label table (absolute, or relative to root); threshold: lowest
    ``<Task>_stress`` answer labelled stressed; names: (not stressed, stressed) class names;
    label_column: 0/1 column of a long table; unlabelled: read no table, every label None;
    folder_media: ``frames``, or ``faces`` for pre-cropped face frames.
    """
    names = c.check_names("stressid.names", names, size=2)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not math.isfinite(threshold):
        raise ValueError(f"stressid.threshold must be a finite number, got {threshold!r}")
    c.check_choice("stressid.folder_media", folder_media, ("frames", "faces"))
    if unlabelled and labels_path is not None:
        raise ValueError(f"stressid.unlabelled excludes stressid.labels_path, got {labels_path!r}")

    _, top = c.open_root(root, "stressid", inner="Videos")
    answers, table, binary = ({}, "", True) if unlabelled else _read_labels(
        root, labels_path, label_column)
    rows: list[dict] = []
    for entry, items in c.subject_folders(top, rows, SUBJECT_RE, "StressID", "2ea4"):
        for item in items:
            row = _sample(entry.name, item, folder_media)
            if row is not None:
                key = f"{entry.name}/{item.name}"
                rows.append(_labelled(row, key, answers, table, binary, threshold, names))
    return c.finalize(rows)


def _labelled(
    row: dict, key: str, answers: Answers, table: str, binary: bool, threshold: float,
    names: tuple[str, ...],
) -> dict:
    """``row`` with its label, or an unparsed row when its answer is not usable."""
    if row["status"] == c.UNPARSED:
        return row
    subject, task = row["subject_id"], row["sample_id"].split("_", 1)[1]
    answer = answers.get((subject, task))
    if isinstance(answer, str):
        return c.unparsed_row(
            key=key, path=row["path"],
            media=row["media"], video_id=row["video_id"], subject_id=subject,
            time_unit=row["time_unit"],
            error=f"{table}: answer {answer!r} of subject {subject} for task {task} is not "
                  f"{'0 or 1' if binary else 'a number'}")
    if answer is not None:
        stressed = answer >= 0.5 if binary else answer >= threshold
        row["label"] = names[1] if stressed else names[0]
    return row


def _sample(subject: str, item: c.Entry, folder_media: str) -> dict | None:
    kind = c.entry_kind(subject, item, folder_media)
    if kind is None:
        return None
    rel, media, unit, name = kind
    m = SAMPLE_RE.fullmatch(name)
    problem = None
    if m is None:
        problem = "name does not match <subject>_<Task>"
    elif m["subject"] != subject:
        problem = f"names subject {m['subject']} but lies in folder {subject}"
    elif m["task"] not in TASKS:
        problem = f"unknown task {m['task']!r} (known: {', '.join(TASKS)})"
    status, error = "ok", None
    if problem is None and media != "video":
        _, error, status = c.sorted_frames(item.url, rel)
        if status != c.UNREADABLE:  # bad frame names: the sample does not parse
            problem, status, error = error, "ok", None
    if problem is not None:
        msg = problem if problem.startswith(rel) else f"{rel}: {problem}"
        return c.unparsed_row(key=rel, path=item.url, media=media, subject_id=subject,
                              time_unit=unit, error=msg)
    return c.sample_row(sample_id=name, video_id=name, subject_id=subject, label=None,
                        path=item.url, media=media, time_unit=unit, status=status, error=error)


def _read_labels(
    root: str, labels_path: str | None, label_column: str | None
) -> tuple[Answers, str, bool]:
    """The answers, the table's URL for messages, and whether they are 0/1 labels."""
    base = io.absolute(root)
    if labels_path is None:
        found = [io.join(base, n) for n in LABEL_FILES if io.exists(io.join(base, n))]
        if not found:
            raise FileNotFoundError(
                f"stressid: no {' or '.join(LABEL_FILES)} in {root!r}; set stressid.labels_path "
                "or stressid.unlabelled=true")
        url = found[0]
    else:
        url = io.absolute(labels_path, relative_to=base)
        if not io.exists(url):
            raise FileNotFoundError(f"stressid.labels_path {labels_path!r} does not exist")
    text = io.read_bytes(url).decode("utf-8-sig")
    first = text.split("\n", 1)[0]
    table = pd.read_csv(_io.StringIO(text), sep=";" if ";" in first else ",", dtype=str,
                        keep_default_na=False)
    table.columns = [str(col).strip() for col in table.columns]
    lowered = {col.lower(): col for col in table.columns}
    if "tasks" in lowered:
        if label_column is not None:
            raise ValueError(f"stressid.label_column applies to a long table, but {url} is wide "
                             f"(has a Tasks column); got {label_column!r}")
        return _wide(table, lowered["tasks"], url), url, False
    if "subject/task" in lowered:
        return _long(table, lowered["subject/task"], label_column, url), url, True
    raise ValueError(f"stressid label table {url} has neither a 'Tasks' column (wide) nor a "
                     f"'subject/task' column (long); columns: {list(table.columns)}")


def _answer(text: str) -> float | str | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text.replace(",", "."))  # ';'-separated tables often use decimal commas
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def _wide(table: pd.DataFrame, tasks_col: str, url: str) -> Answers:
    answers: Answers = {}
    seen: set[str] = set()
    for _, rec in table.iterrows():
        key = str(rec[tasks_col]).strip()
        if not key.endswith("_stress"):
            continue
        if key in seen:
            raise ValueError(f"stressid label table {url}: row {key!r} appears twice")
        seen.add(key)
        task = key[: -len("_stress")]
        for col in table.columns:
            if col != tasks_col:
                answers[(col, task)] = _answer(str(rec[col]))
    return answers


def _long(table: pd.DataFrame, key_col: str, label_column: str | None, url: str) -> Answers:
    others = [col for col in table.columns if col != key_col and col.strip()]
    if label_column is None:
        label_column = "binary-stress" if "binary-stress" in others else (
            others[0] if len(others) == 1 else None)
        if label_column is None:
            raise ValueError(f"stressid label table {url}: cannot tell the 0/1 column among "
                             f"{others}; set stressid.label_column")
    elif label_column not in others:
        raise ValueError(f"stressid.label_column {label_column!r} is not a column of {url} "
                         f"(columns: {others})")
    answers: Answers = {}
    for key, raw in zip(table[key_col], table[label_column], strict=True):
        subject, _, task = str(key).strip().partition("_")
        if (subject, task) in answers:
            raise ValueError(f"stressid label table {url}: {key!r} appears twice")
        value = _answer(str(raw))
        answers[(subject, task)] = value if value in (0.0, 1.0, None) else str(raw).strip()
    return answers
