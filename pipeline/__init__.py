"""clip-autt library: the stages and models of the CLIP-AU / CLIP-AUTT pipeline.

Data flows one way: manifest -> faces -> embeddings -> head -> adaptation -> results.
Importing this package loads nothing heavy: the storage layer (``io``, ``parquet``,
``workspace``, ``shards``) and config loading (``config``) run without torch. The modules
that import torchvision, open_clip or facenet-pytorch install the torchvision CPU fallback
themselves, right before that import (``_torchvision_compat.ensure_torchvision_ops``).
"""

__version__ = "0.1.0"
