"""Self-generated demo data (no downloads): ``make_demo`` writes h264 face videos with a
manifest and a subject split; ``make_micro`` writes a tiny set of pre-cropped face frame
folders for fast tests. Both animate scikit-image's astronaut photo (``face``, ``render``);
importing this package is cheap (the photo, scipy, PIL and PyAV load on first use)."""

from pipeline.demo.micro import make_micro
from pipeline.demo.synth import CLASSES, DemoConfig, make_demo

__all__ = ["CLASSES", "DemoConfig", "make_demo", "make_micro"]
