"""clip-autt library: the stages and models of the CLIP-AU / CLIP-AUTT pipeline.

Data flows one way: manifest -> faces -> embeddings -> head -> adaptation -> results.
Importing this package installs the torchvision CPU fallback (see ``_torchvision_compat``)
so that every process, Ray workers included, can import open_clip and facenet-pytorch.
"""

from pipeline._torchvision_compat import ensure_torchvision_ops

__version__ = "0.1.0"

ensure_torchvision_ops()
