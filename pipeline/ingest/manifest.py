"""Read and validate a user's manifest (and split file) into sample rows.

In: a CSV or Parquet manifest with columns ``video_id, subject_id, label, path`` and
optional ``sample_id, start, end, time_unit, split, media``; optionally a split file
``subject_id, role``; the declared class list; the protocol's target subjects.
Out: a DataFrame of input sample rows (MANIFEST columns before probing).

Manifest-level faults raise :class:`ManifestError` before any work: unreadable file,
missing or unknown columns, duplicate ``sample_id``, labels outside the class list, a
subject in both roles, unknown roles. Per-sample faults become rows with a status and an
error naming the file, so that every other sample goes on: an empty path (``missing``), an
empty subject, a ``start`` or ``end`` that is not a number, ``start`` after ``end``, an
unknown ``time_unit`` or ``media`` (``bad_row``). Windows are inclusive: ``start == end`` is
one frame, a legal window.
"""

from __future__ import annotations

import logging
import os

import pandas as pd

from pipeline import io

log = logging.getLogger(__name__)

REQUIRED = ("video_id", "subject_id", "label", "path")
OPTIONAL = ("sample_id", "start", "end", "time_unit", "split", "media")
ROLES = ("source", "target")
MEDIA = ("video", "frames", "faces")
INPUT_COLUMNS = ("sample_id", "video_id", "subject_id", "label", "role", "path", "media",
                 "start", "end", "time_unit", "status", "error")


class ManifestError(ValueError):
    """The manifest (or split file) as a whole is unusable."""


def read_frame(url: str, what: str) -> pd.DataFrame:
    """Read a CSV/Parquet file as strings (empty cells -> None)."""
    if not io.exists(url):
        raise ManifestError(f"{what} {url!r} does not exist")
    try:
        if url.endswith(".parquet"):
            fs, path = io.fs_and_path(url)
            df = pd.read_parquet(path, filesystem=fs)
            df = df.astype(object).where(df.notna(), None)
        else:
            fs, path = io.fs_and_path(url)
            with fs.open(path, "rb") as f:
                df = pd.read_csv(f, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read {what} {url!r}: {exc}") from exc
    # Column by column into object dtype: pandas 3 would turn None back into NaN in a
    # string column (and NaN would then read as the text "nan").
    return pd.DataFrame({str(c).strip(): pd.Series([_clean(v) for v in df[c]], dtype=object)
                         for c in df.columns})


def _clean(v):
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return None
    if isinstance(v, str):
        return v.strip() or None
    return v


def read_manifest(url: str) -> pd.DataFrame:
    """The user's manifest as raw rows, with column checks; paths resolved."""
    df = read_frame(url, "manifest")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(f"manifest {url!r} lacks required column(s) {missing}; "
                            f"it has {list(df.columns)}")
    unknown = [c for c in df.columns if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise ManifestError(f"manifest {url!r} has unknown column(s) {unknown}; "
                            f"allowed: {list(REQUIRED + OPTIONAL)}")
    if df.empty:
        raise ManifestError(f"manifest {url!r} has no rows")
    base = io.parent(url)
    df["path"] = pd.Series([None if _na(p) else io.absolute(str(p), base) for p in df["path"]],
                           dtype=object)
    return df


def read_split(url: str) -> dict[str, str]:
    df = read_frame(url, "split file")
    missing = [c for c in ("subject_id", "role") if c not in df.columns]
    if missing:
        raise ManifestError(f"split file {url!r} lacks column(s) {missing}; it has {list(df.columns)}")
    roles: dict[str, str] = {}
    for subject, role in zip(df["subject_id"], df["role"]):
        if _na(subject):
            raise ManifestError(f"split file {url!r} has a row with an empty subject_id")
        subject, role = str(subject), None if _na(role) else str(role).lower()
        if role not in ROLES:
            raise ManifestError(f"split file {url!r}: subject {subject!r} has unknown role "
                                f"{role!r}; roles are {list(ROLES)}")
        if roles.get(subject, role) != role:
            raise ManifestError(f"split file {url!r}: subject {subject!r} is in both roles")
        roles[subject] = role
    return roles


def normalise(df: pd.DataFrame, *, classes: tuple[str, ...], split: dict[str, str] | None,
              target_subjects: tuple[str, ...] = (), default_media: str = "auto",
              source: str = "manifest") -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Validate rows and return (input rows, class list). ``df`` may carry ``status`` and
    ``error`` (adapter rows that did not parse); they pass through as rows."""
    df = df.copy()
    for col in ("sample_id", "start", "end", "time_unit", "split", "media", "status", "error"):
        if col not in df.columns:
            df[col] = None
    df["status"] = df["status"].fillna("ok")
    # pandas 3 turns None into NaN in string columns: keep these as plain objects.
    for col in ("video_id", "subject_id", "label", "path", "error", "sample_id", "split", "media"):
        df[col] = pd.Series([None if _na(v) else str(v) for v in df[col]], index=df.index,
                            dtype=object)

    df["sample_id"] = pd.Series([_sample_id(r) for r in df.itertuples()], index=df.index,
                                dtype=object)
    dup = df["sample_id"][df["sample_id"].duplicated(keep=False)]
    if len(dup):
        raise ManifestError(f"{source}: duplicate sample_id {sorted(set(dup))[:5]} "
                            f"({dup.nunique()} duplicated); give a sample_id column or "
                            "distinct start/end per row")

    classes = _classes(df, classes, source)
    df["role"] = pd.Series(_roles(df, split, target_subjects, source), index=df.index, dtype=object)

    df["time_unit"] = df["time_unit"].fillna("s")
    df["media"] = df["media"].fillna(default_media).astype(object)
    raw = {col: df[col].copy() for col in ("start", "end")}
    for col in ("start", "end"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    # One row's bad cell (a window that is not one, an unknown unit) is that row's problem.
    problems = [_row_problem(r, raw["start"][i], raw["end"][i], source)
                for i, r in zip(df.index, df.itertuples())]
    bad = (df["status"] == "ok") & pd.Series([p is not None for p in problems], index=df.index)
    df.loc[bad, "status"] = "bad_row"
    df.loc[bad, "error"] = pd.Series(problems, index=df.index, dtype=object)[bad]

    ok = df["status"] == "ok"
    no_subject = ok & df["subject_id"].isna()
    df.loc[no_subject, "status"] = "bad_row"
    df.loc[no_subject, "error"] = pd.Series(
        [f"{p if p is not None else source}: subject_id is empty" for p in df["path"]],
        index=df.index, dtype=object)[no_subject]
    no_path = (df["status"] == "ok") & df["path"].isna()
    df.loc[no_path, ["status", "error"]] = ["missing", "path is empty"]
    df = df.sort_values("sample_id", kind="stable").reset_index(drop=True)
    return df[list(INPUT_COLUMNS)], classes


def _na(v) -> bool:
    return v is None or (isinstance(v, float) and pd.isna(v))


def _sample_id(row) -> str:
    if not _na(row.sample_id):
        return str(row.sample_id)
    base = row.video_id if row.video_id is not None else os.path.basename(str(row.path))
    if _na(row.start) and _na(row.end):
        return str(base)
    start = "" if _na(row.start) else row.start
    end = "" if _na(row.end) else row.end
    return f"{base}@{start}-{end}"


def _classes(df: pd.DataFrame, classes: tuple[str, ...], source: str) -> tuple[str, ...]:
    labels = sorted({v for v in df["label"] if v is not None})
    if classes:
        outside = [lab for lab in labels if lab not in classes]
        if outside:
            rows = df.loc[df["label"].isin(outside), "sample_id"].tolist()
            raise ManifestError(f"{source}: label(s) {outside} are not in the class list "
                                f"{list(classes)} (e.g. sample {rows[0]!r})")
        return tuple(classes)
    if not labels:
        raise ManifestError(f"{source}: no labels and no class list; pass --classes a,b")
    log.warning("no class list given: using the sorted labels %s (the last one is the positive "
                "class); pass --classes to set the order", labels)
    return tuple(labels)


def _roles(df: pd.DataFrame, split: dict[str, str] | None, targets: tuple[str, ...],
           source: str) -> list[str | None]:
    col = [None if v is None else str(v).lower() for v in df["split"]]
    unknown = sorted({v for v in col if v is not None and v not in ROLES})
    if unknown:
        raise ManifestError(f"{source}: unknown role(s) {unknown} in column split; "
                            f"roles are {list(ROLES)}")
    per_subject: dict[str, set[str]] = {}
    for subject, role in zip(df["subject_id"], col):
        if subject is not None and role is not None:
            per_subject.setdefault(subject, set()).add(role)
    for subject, role in (split or {}).items():
        per_subject.setdefault(subject, set()).add(role)
    if targets:
        for subject in df["subject_id"].dropna().unique():
            per_subject.setdefault(subject, set()).add(
                "target" if subject in targets else "source")
    both = sorted(s for s, roles in per_subject.items() if len(roles) > 1)
    if both:
        raise ManifestError(f"{source}: subject(s) {both[:5]} are in both roles (source and "
                            "target); fix the split so each subject has one role")
    return [next(iter(per_subject[s])) if s in per_subject else None for s in df["subject_id"]]


def _row_problem(row, raw_start, raw_end, source: str) -> str | None:
    """The first thing wrong with one row's unit, media or window, naming its file (or the
    manifest and sample when the path is empty); None when nothing is."""
    where = row.path if row.path is not None else f"{source} sample {row.sample_id!r}"
    if row.time_unit not in ("s", "frame"):
        return f"{where}: time_unit must be 's' or 'frame', got {row.time_unit!r}"
    if row.media not in MEDIA + ("auto",):
        return f"{where}: media must be one of {list(MEDIA)}, got {row.media!r}"
    for name, value, given in (("start", row.start, raw_start), ("end", row.end, raw_end)):
        if pd.isna(value) and not _na(given):
            return f"{where}: {name} {given!r} is not a number"
    # Windows are inclusive at both ends: start == end is a one-frame window, and legal.
    if not pd.isna(row.start) and not pd.isna(row.end) and row.start > row.end:
        return f"{where}: start {row.start:g} is after end {row.end:g} {row.time_unit}"
    return None
