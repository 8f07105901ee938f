"""Progress of long work on the driver: a bar on a terminal, plain lines when not on one.

In: the stage name, how many units it will run, and one line of text per finished unit or
notice. Out: on a terminal (stderr is a TTY), a tqdm bar per stage whose postfix is the
last unit's line, notices printed above it; elsewhere (logs, CI, pipes), the same lines,
one per unit. ``AUTT_PROGRESS=lines`` forces plain lines on a terminal too.
"""

from __future__ import annotations

import os
import sys

_active: list = []  # the bar now shown, if any: notices are written above it


def _on_terminal(stream) -> bool:
    try:
        return stream.isatty() and os.environ.get("AUTT_PROGRESS", "") != "lines"
    except (AttributeError, ValueError):  # a closed or unusual stream
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
            self.bar.set_postfix_str(line, refresh=False)
            self.bar.update(1)
        elif self.enabled:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            _active.remove(self.bar)
            self.bar.close()
            self.bar = None
