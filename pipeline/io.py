"""One small fsspec layer for all storage: local paths, ``memory://`` and ``s3://`` alike.

In: URLs or local paths. Out: file handles, listings, atomic writes, and local copies of
remote media for decoders that need a real file. Readers never see a partial file: data is
written under a ``_tmp-`` name and renamed into place; listings skip ``_``-prefixed names.

Two rules for shared stores (several processes, Ray actors, write the same workspace):

- Every answer is fresh. fsspec instances cache directory listings per process, so a driver
  would not see the markers its actors wrote. :func:`fs_and_path` drops the cached listings
  of the path it returns (and of everything below and above it) before anyone uses them.
- Transient errors are retried. A reset connection, a timeout or S3 throttling is retried
  ``RETRY_ATTEMPTS`` times with exponential backoff from ``RETRY_BACKOFF_S`` seconds
  before it is raised; other errors (a missing file, a denied access) are raised at once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import fsspec
from fsspec.core import url_to_fs

log = logging.getLogger(__name__)
T = TypeVar("T")

TMP_PREFIX = "_tmp-"
# Attempts per storage call, and the first backoff (doubled each time; the environment sets
# them for every process, Ray actors included; tests set the backoff to 0).
RETRY_ATTEMPTS = max(1, int(os.environ.get("AUTT_IO_ATTEMPTS", "4")))
RETRY_BACKOFF_S = float(os.environ.get("AUTT_IO_BACKOFF_S", "0.2"))

_TRANSIENT_ERRNOS = frozenset({
    errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EPIPE,
    errno.EAGAIN, errno.EBUSY, errno.ENETDOWN, errno.ENETUNREACH, errno.ENETRESET,
    errno.EHOSTUNREACH, getattr(errno, "EREMOTEIO", 121),  # s3fs: EBUSY = SlowDown, EREMOTEIO = 500
})
# Exception classes of botocore, aiohttp and fsspec that mean "try again", by name so that
# this module does not import them (they exist only with the s3 extra).
_TRANSIENT_NAMES = frozenset({
    "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
    "ResponseStreamingError", "IncompleteReadError", "ClientPayloadError", "ServerDisconnectedError",
    "ClientOSError", "FSTimeoutError",
})
_THROTTLING_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
    "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable",
})


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or the exception it was raised from) is a passing storage fault."""
    for _ in range(5):  # s3fs and botocore wrap their errors a level or two deep
        verdict = _verdict(exc)
        if verdict is not None:
            return verdict
        if exc.__cause__ is None:
            return False
        exc = exc.__cause__
    return False


def _verdict(exc: BaseException) -> bool | None:
    """True: transient; False: permanent; None: unknown here (look at its cause)."""
    if isinstance(exc, (FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError,
                        NotADirectoryError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    if _TRANSIENT_NAMES & {cls.__name__ for cls in type(exc).__mro__}:
        return True
    response = getattr(exc, "response", None)  # botocore's ClientError
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return code in _THROTTLING_CODES or status >= 500 or status == 429
    return None


def retry(what: str, fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)``, retried on transient errors; ``what`` names it in the log."""
    attempt = 1
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if attempt >= RETRY_ATTEMPTS or not is_transient(exc):
                raise
            delay = RETRY_BACKOFF_S * 2 ** (attempt - 1)
            log.warning("%s: transient storage error (%s: %s); attempt %d of %d, retrying in "
                        "%.1fs", what, type(exc).__name__, exc, attempt, RETRY_ATTEMPTS, delay)
            if delay > 0:
                time.sleep(delay)
            attempt += 1


def fs_and_path(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``url`` and the path inside it, with no cached listing of that
    path, of anything below it, or of its parents (another process may have changed them)."""
    fs, path = url_to_fs(url)
    forget_listings(fs, path)
    return fs, path


def forget_listings(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Drop ``fs``'s cached listings of ``path``, its subtree and its parents."""
    cache = getattr(fs, "dircache", None)
    if cache is None or not len(cache):
        return
    root = fs._strip_protocol(path).rstrip("/")
    for key in [k for k in list(cache) if k == root or k.startswith(root + "/")]:
        cache.pop(key, None)
    fs.invalidate_cache(root)  # the path and its parents


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
    return retry(f"exists {url}", _info, fs, path) is not None


def isdir(url: str) -> bool:
    fs, path = fs_and_path(url)
    info = retry(f"isdir {url}", _info, fs, path)
    return info is not None and info["type"] == "directory"


def _info(fs: fsspec.AbstractFileSystem, path: str) -> dict | None:
    """``fs.info(path)``, or None when nothing is there. (fsspec's own ``exists`` and
    ``isdir`` answer False on any error, a dropped connection included.)"""
    try:
        return fs.info(path)
    except FileNotFoundError:
        return None


def size(url: str) -> int:
    fs, path = fs_and_path(url)
    return int(retry(f"size {url}", fs.size, path))


def makedirs(url: str) -> None:
    fs, path = fs_and_path(url)
    retry(f"makedirs {url}", fs.makedirs, path, exist_ok=True)


def listdir(url: str) -> list[str]:
    """Base names in a folder, sorted, without temporaries or hidden/underscore files."""
    fs, path = fs_and_path(url)

    def names() -> list[str]:
        if _info(fs, path) is None:
            return []
        return [os.path.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)]

    return sorted(n for n in retry(f"list {url}", names) if not n.startswith(("_", ".")))


def read_bytes(url: str) -> bytes:
    fs, path = fs_and_path(url)
    return retry(f"read {url}", fs.cat_file, path)


def read_text(url: str) -> str:
    return read_bytes(url).decode("utf-8")


def write_bytes_atomic(url: str, data: bytes, *, fault_hook: bool = True) -> None:
    """Write ``data`` to a temporary sibling, then rename it onto ``url``. ``fault_hook``
    False: bookkeeping that reports a failure (no injected fault there)."""
    from pipeline import faults

    fs, path = fs_and_path(url)
    folder, name = path.rsplit("/", 1) if "/" in path else ("", path)
    if folder:
        retry(f"makedirs {folder}", fs.makedirs, folder, exist_ok=True)
    tmp = f"{folder}/{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{name}" if folder else f"{TMP_PREFIX}{name}"
    retry(f"write {url}", fs.pipe_file, tmp, data)
    if fault_hook:
        faults.maybe_fail("after_tmp", url)
    if is_local(url):
        os.replace(tmp, path)  # atomic on POSIX
    else:
        retry(f"rename onto {url}", fs.mv, tmp, path)


def write_text_atomic(url: str, text: str, *, fault_hook: bool = True) -> None:
    write_bytes_atomic(url, text.encode("utf-8"), fault_hook=fault_hook)


def create_exclusive(url: str, data: bytes) -> bool:
    """Create ``url`` holding ``data`` only if it does not exist; False if it did.

    Local files: ``O_CREAT | O_EXCL``, atomic. Object stores: a conditional put
    (``If-None-Match: *`` on s3fs) where the store honours it; fsspec's generic fallback
    checks and then writes, which is not atomic: callers read the file back to confirm."""
    if is_local(url):
        path = absolute(url)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True
    fs, path = fs_and_path(url)
    try:
        retry(f"create {url}", fs.pipe_file, path, data, mode="create")
    except FileExistsError:
        return False
    return True


def remove(url: str) -> None:
    fs, path = fs_and_path(url)

    def rm() -> None:
        if _info(fs, path) is not None:
            fs.rm(path, recursive=True)

    retry(f"remove {url}", rm)


@contextlib.contextmanager
def local_path(url: str) -> Iterator[str]:
    """A local file path for ``url``: the path itself when local, else a temporary copy
    (decord and PIL need real files), removed on exit. Folders are copied whole."""
    if is_local(url):
        yield absolute(url)
        return
    fs, path = fs_and_path(url)
    tmpdir = tempfile.mkdtemp(prefix="autt-media-")
    target = os.path.join(tmpdir, os.path.basename(path.rstrip("/")) or "media")

    def copy() -> None:
        if os.path.isdir(target):  # a partial copy of a failed attempt
            shutil.rmtree(target)
        info = _info(fs, path)
        if info is None:
            raise FileNotFoundError(f"no such file or folder: {url}")
        fs.get(path, target, recursive=info["type"] == "directory")

    try:
        retry(f"copy {url}", copy)
        yield target
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
