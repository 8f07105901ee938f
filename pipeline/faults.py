"""Fault injection for tests: kill or break work at an exact place instead of with timers.

In: the environment variable ``AUTT_FAULT`` = ``<point>:<substring>[:<action>]``, where
``point`` is one of POINTS, ``substring`` must occur in the URL or shard id the point
fires for (``*`` for any), and ``action`` is ``raise`` (default: raise InjectedFault) or
``exit`` (``os._exit(137)``, like a killed worker). With ``AUTT_FAULT_ONCE=<file>`` the
fault fires only while that file does not exist and creates it when it fires, so a
retried task succeeds.
Out: nothing, unless the fault matches.
"""

from __future__ import annotations

import os

POINTS = (
    "shard_start",   # a shard task has begun, nothing written yet
    "after_tmp",     # a data file is written under its temporary name, not yet renamed
    "before_done",   # the shard's data is in place, its done marker is not
    "mid_shard",     # a stage is half way through a shard's samples
)


class InjectedFault(RuntimeError):
    """Raised by an AUTT_FAULT with action 'raise'."""


def maybe_fail(point: str, where: str) -> None:
    spec = os.environ.get("AUTT_FAULT")
    if not spec:
        return
    parts = spec.split(":")
    if len(parts) < 2 or parts[0] not in POINTS:
        raise ValueError(f"AUTT_FAULT={spec!r}: expected <point>:<substring>[:raise|exit], "
                         f"point one of {POINTS}")
    want_point, needle = parts[0], parts[1]
    action = parts[2] if len(parts) > 2 else "raise"
    if want_point != point or (needle != "*" and needle not in where):
        return
    once = os.environ.get("AUTT_FAULT_ONCE")
    if once:
        if os.path.exists(once):
            return
        with open(once, "w") as f:
            f.write(f"{point} {where}\n")
    if action == "exit":
        os._exit(137)
    raise InjectedFault(f"injected fault at {point} for {where}")
