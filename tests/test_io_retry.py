"""Storage calls survive passing faults (a reset connection, throttling) and fail at once on
real ones, on a fake fsspec filesystem that fails its first calls; and listings are fresh
when another process changed the store behind a cached instance."""

from __future__ import annotations

import errno
from pathlib import Path

import fsspec
import pytest
from fsspec import AbstractFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from pipeline import io, parquet


class FlakyFS(MemoryFileSystem):
    """An in-memory store that fails its next ``fail`` calls with ``error``, and caches
    listings per instance as s3fs does (its own writes drop them; other writers' do not)."""

    protocol = "flaky"
    store: dict = {}
    pseudo_dirs = [""]
    fail = 0
    error: Exception = ConnectionResetError(errno.ECONNRESET, "connection reset by peer")
    calls = 0

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("flaky://"))

    def _trip(self) -> None:
        type(self).calls += 1
        if type(self).fail > 0:
            type(self).fail -= 1
            raise type(self).error

    def invalidate_cache(self, path=None):
        if path is None:
            self.dircache.clear()
            return
        path = self._strip_protocol(path)
        while True:
            self.dircache.pop(path, None)
            if path in ("", "/"):
                return
            path = self._parent(path)

    def ls(self, path, detail=True, **kwargs):
        self._trip()
        path = self._strip_protocol(path)
        if path not in self.dircache:
            self.dircache[path] = super().ls(path, detail=True)
        listing = self.dircache[path]
        return listing if detail else [e["name"] for e in listing]

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        # through the cached listings, as s3fs does (MemoryFileSystem reads its store)
        return AbstractFileSystem.find(self, path, maxdepth=maxdepth, withdirs=withdirs,
                                       detail=detail, **kwargs)

    def info(self, path, **kwargs):
        self._trip()
        path = self._strip_protocol(path)
        cached = self.dircache.get(self._parent(path))
        if cached is not None:
            for entry in cached:
                if entry["name"] == path:
                    return entry
            raise FileNotFoundError(path)
        return super().info(path, **kwargs)

    def cat_file(self, path, start=None, end=None, **kwargs):
        self._trip()
        return super().cat_file(path, start=start, end=end, **kwargs)

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        self._trip()
        self.invalidate_cache(path)
        return super().pipe_file(path, value, mode=mode, **kwargs)

    def mv(self, path1, path2, **kwargs):
        self._trip()
        self.invalidate_cache(path1)
        self.invalidate_cache(path2)
        return super().mv(path1, path2, **kwargs)

    def get_file(self, rpath, lpath, **kwargs):
        self._trip()
        return super().get_file(rpath, lpath, **kwargs)


@pytest.fixture
def flaky(monkeypatch):
    fsspec.register_implementation("flaky", FlakyFS, clobber=True)
    monkeypatch.setattr(io, "RETRY_BACKOFF_S", 0.0)
    monkeypatch.setattr(io, "RETRY_ATTEMPTS", 4)
    FlakyFS.store.clear()
    FlakyFS.pseudo_dirs[:] = [""]
    FlakyFS.fail, FlakyFS.calls = 0, 0
    monkeypatch.setattr(FlakyFS, "error", ConnectionResetError(errno.ECONNRESET, "reset"))
    return FlakyFS


def failing(fs, n: int, error: Exception | None = None):
    fs.fail, fs.calls = n, 0
    if error is not None:
        fs.error = error


def test_reads_writes_and_listings_succeed_after_transient_failures(flaky):
    failing(flaky, 3)
    io.write_text_atomic("flaky://ws/a/b.json", "hello")
    assert flaky.fail == 0  # the faults were spent, the write went through
    failing(flaky, 2)
    assert io.read_text("flaky://ws/a/b.json") == "hello"
    failing(flaky, 3, TimeoutError("read timed out"))
    assert io.listdir("flaky://ws/a") == ["b.json"]
    failing(flaky, 1, OSError(errno.EBUSY, "SlowDown"))  # how s3fs reports S3 throttling
    assert io.exists("flaky://ws/a/b.json")
    assert not [p for p in FlakyFS.store if "/_tmp-" in p]


def test_parquet_reads_and_media_copies_are_retried(flaky, tmp_path):
    import pyarrow as pa

    parquet.write("flaky://ws/t/part.parquet", pa.table({"x": [1, 2, 3]}))
    failing(flaky, 2)
    assert parquet.read("flaky://ws/t/part.parquet").column("x").to_pylist() == [1, 2, 3]
    io.write_bytes_atomic("flaky://ws/media/frames/0.png", b"png")
    failing(flaky, 2)
    with io.local_path("flaky://ws/media/frames") as local:
        assert sorted(p.name for p in Path(local).iterdir()) == ["0.png"]


def test_a_missing_file_is_not_retried(flaky):
    failing(flaky, 0)
    with pytest.raises(FileNotFoundError):
        io.read_bytes("flaky://ws/nothing.json")
    assert flaky.calls == 1


def test_a_lasting_fault_is_raised_after_the_last_attempt(flaky):
    failing(flaky, 100)
    with pytest.raises(ConnectionResetError):
        io.read_bytes("flaky://ws/x.json")
    assert flaky.calls == io.RETRY_ATTEMPTS


def test_transient_errors_are_told_from_permanent_ones():
    class ReadTimeoutError(Exception):  # botocore's, recognised by name
        pass

    class ClientError(Exception):
        def __init__(self, code: str, status: int):
            super().__init__(code)
            self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}

    assert io.is_transient(ConnectionResetError())
    assert io.is_transient(OSError(errno.ETIMEDOUT, "timed out"))
    assert io.is_transient(ReadTimeoutError())
    assert io.is_transient(ClientError("SlowDown", 503))
    assert io.is_transient(ClientError("Whatever", 500))
    wrapped = OSError(errno.EIO, "wrapped")
    wrapped.__cause__ = ClientError("Throttling", 400)
    assert io.is_transient(wrapped)
    assert not io.is_transient(FileNotFoundError("gone"))
    assert not io.is_transient(PermissionError("denied"))
    assert not io.is_transient(ClientError("AccessDenied", 403))
    assert not io.is_transient(OSError(errno.EINVAL, "bad argument"))
    assert not io.is_transient(ValueError("a bug"))


def test_listings_are_fresh_when_another_process_wrote(flaky):
    """Markers written by another process (a Ray actor) are seen, though this process's
    filesystem instance cached the listings before they were written."""
    from pipeline.workspace import Workspace

    ws = Workspace("flaky://ws")
    io.write_text_atomic(ws.marker_url("faces", "a"), "{}")
    io.write_text_atomic(ws.marker_url("embeddings/m1", "a"), "{}")
    assert io.listdir(ws.url("faces", "_done")) == ["a.json"]
    assert sorted(ws.markers("faces")) == ["a"]
    assert ws.tables() == ["embeddings/m1", "faces"]  # every folder's listing is cached now
    for key in ("/ws/faces/_done/b.json", "/ws/embeddings/m2/_done/a.json"):  # another process
        FlakyFS.store[key] = FlakyFS.store["/ws/faces/_done/a.json"]
    assert io.listdir(ws.url("faces", "_done")) == ["a.json", "b.json"]
    assert io.exists(ws.marker_url("faces", "b"))
    assert sorted(ws.markers("faces")) == ["a", "b"]
    assert ws.tables() == ["embeddings/m1", "embeddings/m2", "faces"]
