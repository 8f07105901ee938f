"""The workspace lock: one writing command per workspace at a time.

In: a workspace root, the run id and command of the writer. Out: ``OUT/_lock.json``
(owner, host, pid, run id, command, start time and a unique token), created atomically and
exclusively, removed when the command ends. A second writer is refused with
:class:`WorkspaceLocked` naming the holder; when the holder was on this host and its process
is gone, the message says the lock is stale and how to clear it (``autt unlock``). Readers
(``autt status``) take no lock.

Limits: on a local or shared POSIX filesystem ``O_CREAT | O_EXCL`` makes creation exclusive.
On S3 the lock is a conditional put (``If-None-Match: *``), exclusive where the store honours
it (AWS S3, MinIO, moto). On other object stores fsspec checks and then writes: the lock is
read back and must hold this writer's token, which catches most but not all races there.
Whether a holder on another host still runs cannot be known from here: such a lock is
cleared by hand once its command is known to be gone.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import os
import secrets
import socket

from pipeline import io

LOCK_NAME = "_lock.json"


class WorkspaceLocked(RuntimeError):
    """Another command holds the workspace lock (or the lock file is unreadable)."""


def lock_url(root: str) -> str:
    return io.join(root, LOCK_NAME)


def holder(root: str) -> dict | None:
    """The lock's contents, None when the workspace is not locked. A lock being written this
    very moment, or a damaged one, reads as ``{}``."""
    url = lock_url(root)
    if not io.exists(url):
        return None
    try:
        info = json.loads(io.read_text(url))
    except FileNotFoundError:  # released between the two calls
        return None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def is_stale(info: dict) -> bool:
    """True when the holder ran on this host and its process no longer exists (a killed
    command). False when it is alive, or ran elsewhere (that cannot be checked from here)."""
    if info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return False
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    return False


def describe(info: dict) -> str:
    if not info:
        return "another command (its lock file is being written or is unreadable)"
    return (f"`autt {info.get('command', '?')}` (run {info.get('run_id', '?')}) of user "
            f"{info.get('owner', '?')} on host {info.get('host', '?')}, pid {info.get('pid', '?')}, "
            f"since {info.get('started_at', '?')}")


class WorkspaceLock:
    """A held lock; :meth:`release` removes it if it is still this writer's."""

    def __init__(self, root: str, info: dict):
        self.root, self.info = root, info

    def release(self) -> None:
        current = holder(self.root)
        if current is not None and current.get("token") == self.info["token"]:
            io.remove(lock_url(self.root))

    def __enter__(self) -> WorkspaceLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(root: str, run_id: str, command: str) -> WorkspaceLock:
    """Take the lock of the workspace at ``root`` or raise :class:`WorkspaceLocked`."""
    info = {"owner": _user(), "host": socket.gethostname(), "pid": os.getpid(), "run_id": run_id,
            "command": command,
            "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "token": secrets.token_hex(8)}
    url, data = lock_url(root), json.dumps(info, indent=1).encode()
    for _ in range(3):  # a lock released between our create and our read: try again
        created = io.create_exclusive(url, data)
        current = holder(root)
        # Read back even after a create: a retried put may have met its own first attempt,
        # and a store without conditional puts may have let another writer overwrite ours.
        if current is not None and current.get("token") == info["token"]:
            return WorkspaceLock(root, info)
        if current is not None or created:
            break
    if current is None:
        raise WorkspaceLocked(f"workspace {root}: the lock {url} keeps vanishing right after it "
                              "is taken; is another command clearing it? Rerun when it is done.")
    raise WorkspaceLocked(refusal(root, current))


def refusal(root: str, info: dict) -> str:
    """Why a writer may not start, and what to do about it."""
    msg = f"workspace {root} is in use by {describe(info)}"
    if info and is_stale(info):
        return (f"{msg}; that process is no longer running on this host, so the lock is stale "
                f"(left by a killed command). Clear it with `autt unlock --out {root}` and rerun.")
    where = "" if info.get("host") == socket.gethostname() else " (it cannot be checked from here)"
    return (f"{msg}. Wait for it to finish or use another --out; if that command is no longer "
            f"running{where}, clear the lock with `autt unlock --out {root}`.")


def clear(root: str, *, force: bool = False) -> dict | None:
    """Remove the workspace lock; returns what it held (None: there was none). Refuses to
    remove the lock of a command still running on this host unless ``force``."""
    info = holder(root)
    if info is None:
        return None
    alive_here = (bool(info) and info.get("host") == socket.gethostname() and not is_stale(info))
    if alive_here and not force:
        raise WorkspaceLocked(f"workspace {root} is in use by {describe(info)}, which is still "
                              "running on this host; stop it first (or pass --force)")
    io.remove(lock_url(root))
    return info


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        return str(os.getuid())
