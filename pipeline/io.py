"""One small fsspec layer for all storage: local paths, ``memory://`` and ``s3://`` alike.

In: URLs or local paths. Out: file handles, listings, atomic writes, and local copies of
remote media for decoders that need a real file. Readers never see a partial file: data is
written under a ``_tmp-`` name and renamed into place; listings skip ``_``-prefixed names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator

import fsspec
from fsspec.core import url_to_fs

TMP_PREFIX = "_tmp-"


def fs_and_path(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``url`` and the path inside it."""
    return url_to_fs(url)


def invalidate(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Drop ``fs``'s cached listings of ``path``, so the next listing sees what other
    processes (Ray workers) wrote since: every listing that decides work must be fresh."""
    fs.invalidate_cache(path)


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def join(base: str, *parts: str) -> str:
    """Join path parts with '/' for URLs and the OS separator for local paths."""
    if is_local(base):
        return os.path.join(base, *parts)
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def absolute(url: str, relative_to: str | None = None) -> str:
    """Resolve ``url`` (absolute, URL, or relative to the folder ``relative_to``)."""
    if not is_local(url):
        return url
    if url.startswith("file://"):
        url = url[len("file://"):]
    if os.path.isabs(url):
        return os.path.normpath(url)
    if relative_to is not None:
        if not is_local(relative_to):
            return join(relative_to, url)
        return os.path.normpath(os.path.join(os.path.abspath(relative_to), url))
    return os.path.abspath(url)


def parent(url: str) -> str:
    if is_local(url):
        return os.path.dirname(os.path.abspath(url))
    return url.rstrip("/").rsplit("/", 1)[0]


def exists(url: str) -> bool:
    fs, path = fs_and_path(url)
    return fs.exists(path)


def isdir(url: str) -> bool:
    fs, path = fs_and_path(url)
    return fs.isdir(path)


def size(url: str) -> int:
    fs, path = fs_and_path(url)
    return int(fs.size(path))


def makedirs(url: str) -> None:
    fs, path = fs_and_path(url)
    fs.makedirs(path, exist_ok=True)


def listdir(url: str) -> list[str]:
    """Base names in a folder, sorted, without temporaries or hidden/underscore files."""
    fs, path = fs_and_path(url)
    if not fs.exists(path):
        return []
    names = [os.path.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)]
    return sorted(n for n in names if not n.startswith(("_", ".")))


def read_bytes(url: str) -> bytes:
    fs, path = fs_and_path(url)
    with fs.open(path, "rb") as f:
        return f.read()


def read_text(url: str) -> str:
    return read_bytes(url).decode("utf-8")


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write ``data`` to a temporary sibling, then rename it onto ``url``."""
    from pipeline import faults

    fs, path = fs_and_path(url)
    folder, name = path.rsplit("/", 1) if "/" in path else ("", path)
    if folder:
        fs.makedirs(folder, exist_ok=True)
    tmp = f"{folder}/{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{name}" if folder else f"{TMP_PREFIX}{name}"
    with fs.open(tmp, "wb") as f:
        f.write(data)
    faults.maybe_fail("after_tmp", url)
    if is_local(url):
        os.replace(tmp, path)  # atomic on POSIX
    else:
        fs.mv(tmp, path)


def write_text_atomic(url: str, text: str) -> None:
    write_bytes_atomic(url, text.encode("utf-8"))


def remove(url: str) -> None:
    fs, path = fs_and_path(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


@contextlib.contextmanager
def local_path(url: str) -> Iterator[str]:
    """A local file path for ``url``: the path itself when local, else a temporary copy
    (decord and PIL need real files), removed on exit. Folders are copied whole."""
    if is_local(url):
        yield absolute(url)
        return
    fs, path = fs_and_path(url)
    tmpdir = tempfile.mkdtemp(prefix="autt-media-")
    try:
        target = os.path.join(tmpdir, os.path.basename(path.rstrip("/")) or "media")
        fs.get(path, target, recursive=fs.isdir(path))
        yield target
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
