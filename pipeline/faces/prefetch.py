"""Run an iterator ahead in a background thread: the face stage decodes the next chunks of
frames while it detects on this one (``faces.prefetch``).

In: any iterable and a depth (items produced ahead of the one in use; 0: none, and the
iterable runs in the caller's thread). Out: a context manager yielding the same items in
the same order. An exception raised by the iterable is raised in the caller at that
point of the sequence. When the caller leaves the block early (an exception, a break),
the thread is told to stop and is joined before the block exits, so no thread outlives it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()
_POLL_S = 0.05  # how often a producer blocked on a full queue looks for the stop signal


@contextlib.contextmanager
def prefetched(items: Iterable[T], depth: int) -> Iterator[Iterator[T]]:
    if depth <= 0:
        yield iter(items)
        return
    ahead: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                ahead.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as err:  # noqa: BLE001  (handed to the caller, raised there)
            put((None, err))
            return
        put((_END, None))

    def consume() -> Iterator[T]:
        while True:
            item, err = ahead.get()
            if err is not None:
                raise err
            if item is _END:
                return
            yield item

    thread = threading.Thread(target=produce, name="autt-prefetch", daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        thread.join()
