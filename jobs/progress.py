"""Progress of long work on the driver: a bar on a terminal, plain lines when not on one.

In: the stage name, how many units it will run, and one line of text per finished unit or
notice. Out: on a terminal (stderr is a TTY), a tqdm bar per stage whose postfix is the
last unit's line, notices printed above it; elsewhere (logs, CI, pipes), the same lines,
one per unit. ``AUTT_PROGRESS=lines`` forces plain lines on a terminal too.
"""

from __future__ import annotations

import os
import shutil
import sys

_active: list = []  # the bar now shown, if any: notices are written above it


MIN_COLUMNS = 40  # a terminal narrower than this (or one that reports 0 columns) gets lines


def _on_terminal(stream) -> bool:
    try:
        if not stream.isatty() or os.environ.get("AUTT_PROGRESS", "") == "lines":
            return False
        return shutil.get_terminal_size((0, 0)).columns >= MIN_COLUMNS
    except (AttributeError, ValueError, OSError):  # a closed or unusual stream
        return False


def say(text: str) -> None:
    """One notice line, above the current bar if one is shown."""
    if _active:
        _active[-1].write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr, flush=True)


class UnitProgress:
    """``advance(line)`` once per finished unit; ``close()`` at the end of the stage."""

    def __init__(self, enabled: bool, name: str, total: int) -> None:
        self.enabled, self.bar = enabled, None
        if enabled and total > 1 and _on_terminal(sys.stderr):
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=f"[{name}]", unit="unit", file=sys.stderr,
                            dynamic_ncols=True, leave=True)
            _active.append(self.bar)

    def advance(self, line: str) -> None:
        if self.bar is not None:
            # the bar shows "k/n" itself: the postfix is the unit's own part of the line
            self.bar.set_postfix_str(line.split(" shard ", 1)[-1], refresh=False)
            self.bar.update(1)
        elif self.enabled:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            _active.remove(self.bar)
            self.bar.close()
            self.bar = None
