"""Self-generated demo data (no downloads): ``make_demo`` writes h264 face videos with a
manifest and a subject split; ``make_micro`` writes a tiny set of pre-cropped face frame
folders for fast tests. Both animate scikit-image's astronaut photo (``face``, ``render``).

Importing this package, or its settings (``pipeline.demo.config``, which config loading
needs), loads nothing heavy: the generators (numpy, PIL, PyAV, the photo, scipy) load when
``make_demo`` / ``make_micro`` are first looked up here.
"""

from __future__ import annotations

from typing import Any

from pipeline.demo.config import CLASSES, DemoConfig

__all__ = ["CLASSES", "DemoConfig", "make_demo", "make_micro"]


def __getattr__(name: str) -> Any:
    """``make_demo`` and ``make_micro`` on first use (PEP 562)."""
    if name == "make_demo":
        from pipeline.demo.synth import make_demo

        return make_demo
    if name == "make_micro":
        from pipeline.demo.micro import make_micro

        return make_micro
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
