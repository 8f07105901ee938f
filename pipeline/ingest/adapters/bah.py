"""BAH (ambivalence/hesitancy) -> manifest rows, one per chunk of each labelled segment.

In: ``root``, the dataset folder (holding ``Videos/``) or the videos folder itself, laid out
as ``<participant>/Visite_<n>/<participant>_Question_<q>_<date>_Video.mp4``, and a segment
CSV (``segments_path``; by default the one CSV in ``root`` that has the columns) with
columns ``video, segment_id, label, num_frames, start_frame, end_frame`` (label 1 =
ambivalence, 0 = neutral; ``video`` is matched by its stem, so a file name, a stem or a
relative path all work).
Out: each segment's frames are cut into chunks of ``chunk_frames``; one row per chunk,
``sample_id`` = ``<video stem>-seg<segment_id>-c<kkk>``, ``video_id`` the stem,
``subject_id`` the participant, ``time_unit`` ``frame``. The last, shorter chunk is kept
when it has at least ``min_chunk_frames`` frames (default 1: always); a dropped remainder is
configuration, not an error. Videos that no segment names are not samples.

Frame numbers: ``end_frame`` is inclusive when ``num_frames == end - start + 1`` (or
``num_frames`` is blank) and exclusive when ``num_frames == end - start``; anything else is
an ``unparsed`` row. For videos, ``start``/``end`` are decoded-frame indices (CSV number
minus ``first_frame``), ``end`` inclusive.

Faces (``faces_root``, absolute or relative to ``root``): the dataset's cropped and aligned
faces as ``<faces_root>/<video stem>/<frame number>.jpg`` (the number is the last run of
digits in the file stem, in the CSV's numbering). Rows then point at the face folder with
media ``faces`` (detection skipped), and ``start``/``end`` are the 0-based positions, in the
folder's numerically sorted frame list, of the first and last frame inside the chunk
(``end`` inclusive; one frame is a legal chunk); frames without a face may be absent, and
a chunk with none is that chunk's row with status ``empty_window``.

``unparsed`` rows: video files or face folders whose names do not parse, videos outside
``<participant>/<visit>/``, CSV rows that do not parse, and segments naming a video (or face
folder) that does not exist, each naming the file, or the CSV line, segment and video. A
folder that cannot be listed is an ``unreadable`` row. None of these stops the scan.
"""

from __future__ import annotations

import bisect
import io as _io
import re

import pandas as pd

from pipeline import io
from pipeline.ingest.adapters import _common as c

STEM_RE = re.compile(r"(?P<participant>[^_/]+)_Question_(?P<q>\d+)_(?P<date>[^/]+)_Video")
SEGMENT_COLUMNS = ("video", "segment_id", "label", "num_frames", "start_frame", "end_frame")


def scan_bah(
    root: str,
    *,
    segments_path: str | None = None,
    chunk_frames: int = 100,
    min_chunk_frames: int = 1,
    names: tuple[str, ...] = ("neutral", "ambivalence"),
    faces_root: str | None = None,
    first_frame: int = 0,
) -> pd.DataFrame:
    """Scan BAH; see the module docstring for layouts, chunking and columns.

    segments_path: segment CSV; chunk_frames: frames per chunk; min_chunk_frames: shortest
    last chunk kept; names: class names of labels 0 and 1; faces_root: use the pre-cropped
    face folders instead of the videos; first_frame: the CSV's number of a video's first
    frame (0 or 1).
    """
    for option, value, low in (("chunk_frames", chunk_frames, 1),
                               ("min_chunk_frames", min_chunk_frames, 1),
                               ("first_frame", first_frame, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"bah.{option} must be an integer >= {low}, got {value!r}")
    if min_chunk_frames > chunk_frames:
        raise ValueError(f"bah.min_chunk_frames must be <= bah.chunk_frames ({chunk_frames}), "
                         f"got {min_chunk_frames}")
    names = c.check_names("bah.names", names, size=2)

    base = io.absolute(root)
    rows: list[dict] = []
    if faces_root is None:
        _, top = c.open_root(root, "bah", inner="Videos")
        media, index = "video", _index_videos(top, rows)
    else:
        faces_url = io.absolute(faces_root, relative_to=base)
        _, top = c.open_root(faces_url, "bah.faces_root")
        media, index = "faces", _index_faces(top, rows)
    csv_url = _find_segments(base, segments_path)
    csv_name = csv_url.rstrip("/").rsplit("/", 1)[-1]
    table = pd.read_csv(_io.StringIO(io.read_bytes(csv_url).decode("utf-8-sig")), dtype=str,
                        keep_default_na=False, skipinitialspace=True)
    table.columns = [str(col).strip() for col in table.columns]
    missing = [col for col in SEGMENT_COLUMNS if col not in table.columns]
    if missing:
        raise ValueError(f"bah segment CSV {csv_url} lacks columns {missing} "
                         f"(has {list(table.columns)})")
    frame_cache: dict[str, tuple[list[int], str | None]] = {}
    for i, rec in enumerate(table.to_dict("records")):
        where = f"{csv_name} line {i + 2}"  # line 1 is the header
        seg, problem = _parse_segment(rec, first_frame if media == "video" else None)
        if problem is not None:
            rows.append(c.unparsed_row(key=f"{csv_name}:line{i + 2}", path=csv_url, media=media,
                                       time_unit="frame", error=f"{where}: {problem}"))
            continue
        vstem, seg_id, label, lo, hi = seg
        found = index.get(vstem, [])
        if len(found) != 1:
            what = "does not exist" if not found else f"exists {len(found)} times ({found})"
            rows.append(c.unparsed_row(
                key=f"{vstem}-seg{seg_id}", path=found[0] if found else csv_url, media=media,
                video_id=vstem, time_unit="frame",
                error=f"{where}: segment {seg_id} names {media} {vstem!r}, which {what}"))
            continue
        subject = STEM_RE.fullmatch(vstem)["participant"]
        for k, (a, b) in enumerate(_chunks(lo, hi, chunk_frames, min_chunk_frames)):
            sid = f"{vstem}-seg{seg_id}-c{k:03d}"
            row = dict(sample_id=sid, video_id=vstem, subject_id=subject,
                       label=names[label], path=found[0], media=media, time_unit="frame")
            if media == "video":
                rows.append(c.sample_row(**row, start=float(a - first_frame),
                                         end=float(b - first_frame)))
                continue
            if vstem not in frame_cache:
                frames, error, status = c.sorted_frames(found[0], vstem)
                frame_cache[vstem] = ([n for n, _ in frames], error, status)
            numbers, error, status = frame_cache[vstem]
            if error is not None:
                problem = f"{where}: chunk {k} of segment {seg_id}: {error}"
                if status == c.UNREADABLE:
                    rows.append(c.sample_row(**row, status=status, error=problem))
                else:
                    rows.append(c.unparsed_row(
                        key=sid, path=found[0], media=media, video_id=vstem,
                        subject_id=subject, time_unit="frame", error=problem))
                continue
            first, last = bisect.bisect_left(numbers, a), bisect.bisect_right(numbers, b) - 1
            if last < first:  # no face found in the whole chunk: a row, the scan goes on
                rows.append(c.sample_row(**row, status=c.EMPTY_WINDOW, error=(
                    f"{where}: chunk {k} of segment {seg_id}: no face frame numbered "
                    f"{a}..{b} in {found[0]}")))
                continue
            # A chunk with one face frame is a legal window: start == end, both inclusive.
            rows.append(c.sample_row(**row, start=float(first), end=float(last)))
    return c.finalize(rows)


def _chunks(lo: int, hi: int, size: int, min_last: int) -> list[tuple[int, int]]:
    """Inclusive frame ranges of ``size`` covering lo..hi; a short last one if >= min_last."""
    out = []
    for a in range(lo, hi + 1, size):
        b = min(a + size - 1, hi)
        if b - a + 1 >= min_last:
            out.append((a, b))
    return out


def _parse_segment(
    rec: dict, first_frame: int | None
) -> tuple[tuple[str, str, int, int, int], None] | tuple[None, str]:
    """(video stem, segment id, label 0/1, first frame, last frame inclusive) or a problem."""
    video = str(rec["video"]).strip().replace("\\", "/").rsplit("/", 1)[-1]
    vstem = c.stem(video) if c.has_ext(video, c.VIDEO_EXTS) else video
    seg_id = str(rec["segment_id"]).strip()
    if not vstem or not seg_id:
        return None, f"blank video {rec['video']!r} or segment_id {rec['segment_id']!r}"
    values: dict[str, int | None] = {}
    for col in ("label", "num_frames", "start_frame", "end_frame"):
        text = str(rec[col]).strip()
        try:
            number = float(text) if text else None
        except ValueError:
            number = float("nan")
        if number is not None and not number.is_integer():
            return None, f"segment {seg_id} of {vstem}: {col} {text!r} is not an integer"
        if number is None and col != "num_frames":
            return None, f"segment {seg_id} of {vstem}: {col} is blank"
        values[col] = None if number is None else int(number)
    label, n, lo, hi = (values[k] for k in ("label", "num_frames", "start_frame", "end_frame"))
    if label not in (0, 1):
        return None, f"segment {seg_id} of {vstem}: label {label} is not 0 or 1"
    if n is not None and n == hi - lo and n > 0:
        hi -= 1  # num_frames says end_frame is exclusive
    elif n is not None and n != hi - lo + 1:
        return None, (f"segment {seg_id} of {vstem}: num_frames {n} matches neither "
                      f"end_frame - start_frame + 1 nor end_frame - start_frame ({lo}..{hi})")
    if lo > hi:
        return None, f"segment {seg_id} of {vstem}: frames {lo}..{hi} are empty"
    if first_frame is not None and lo < first_frame:
        return None, f"segment {seg_id} of {vstem}: starts at {lo}, before frame {first_frame}"
    return (vstem, seg_id, label, lo, hi), None


def _index_videos(top: list[c.Entry], rows: list[dict]) -> dict[str, list[str]]:
    """Video stem -> URLs, from ``<participant>/<visit>/<file>``; bad names go to ``rows``."""
    index: dict[str, list[str]] = {}

    def bad(rel: str, url: str, problem: str) -> None:
        rows.append(c.unparsed_row(key=rel, path=url, media="video", error=f"{rel}: {problem}"))

    def listed(url: str, rel: str) -> list[c.Entry]:
        entries, error = c.list_folder(url, rel)
        if error is not None:
            rows.append(c.unparsed_row(key=rel + "/", path=url, media="video", error=error,
                                       status=c.UNREADABLE))
        return entries

    for part in top:
        if not part.is_dir:
            if c.has_ext(part.name, c.VIDEO_EXTS):
                bad(part.name, part.url, "video outside <participant>/<visit>/")
            continue
        for visit in listed(part.url, part.name):
            if not visit.is_dir:
                if c.has_ext(visit.name, c.VIDEO_EXTS):
                    bad(f"{part.name}/{visit.name}", visit.url,
                        "video outside a visit folder (<participant>/Visite_<n>/)")
                continue
            for f in listed(visit.url, f"{part.name}/{visit.name}"):
                if f.is_dir or not c.has_ext(f.name, c.VIDEO_EXTS):
                    continue
                rel, m = f"{part.name}/{visit.name}/{f.name}", STEM_RE.fullmatch(c.stem(f.name))
                if m is None:
                    bad(rel, f.url, "name does not match "
                        "<participant>_Question_<q>_<date>_Video")
                elif m["participant"] != part.name:
                    bad(rel, f.url, f"names participant {m['participant']} but lies in "
                        f"folder {part.name}")
                else:
                    index.setdefault(c.stem(f.name), []).append(f.url)
    return index


def _index_faces(top: list[c.Entry], rows: list[dict]) -> dict[str, list[str]]:
    """Video stem -> face folder URL; folders with other names go to ``rows``."""
    index: dict[str, list[str]] = {}
    for e in top:
        if not e.is_dir:
            continue
        if STEM_RE.fullmatch(e.name) is None:
            rows.append(c.unparsed_row(
                key=e.name + "/", path=e.url, media="faces", time_unit="frame",
                error=f"{e.name}/: face folder name does not match "
                      "<participant>_Question_<q>_<date>_Video"))
        else:
            index[e.name] = [e.url]
    return index


def _find_segments(base: str, segments_path: str | None) -> str:
    if segments_path is not None:
        url = io.absolute(segments_path, relative_to=base)
        if not io.exists(url):
            raise FileNotFoundError(f"bah.segments_path {segments_path!r} does not exist")
        return url
    found = []
    for e in c.list_entries(base):
        if not e.is_dir and e.name.lower().endswith(".csv"):
            header = io.read_bytes(e.url)[:4096].decode("utf-8-sig", "replace").split("\n")[0]
            if set(SEGMENT_COLUMNS) <= {h.strip() for h in header.split(",")}:
                found.append(e.url)
    if len(found) != 1:
        raise FileNotFoundError(
            f"bah: expected one segment CSV (columns {', '.join(SEGMENT_COLUMNS)}) in {base!r}, "
            f"found {found or 'none'}; set bah.segments_path")
    return found[0]
