"""Make ``import torchvision`` work where its compiled ops cannot load.

In: nothing. Out: after :func:`ensure_torchvision_ops`, ``torchvision::nms`` and
``torchvision::qnms`` exist as torch operators, so torchvision (and open_clip and
facenet-pytorch, which import it) can be imported.

Why: torchvision's PyPI wheel is a CUDA build; next to a CPU-only torch its ``_C.so``
fails to load and ``import torchvision`` dies registering fake kernels for ``nms``.
Where the real ops load (a matching CUDA machine) this module does nothing. It must run
in every process that imports torchvision, Ray workers included, before the first such
import: the modules that import torchvision, open_clip or facenet-pytorch
(``embed/backbone``, ``faces/detect``) call it right before, and so does the test suite's
``conftest``. Importing this module imports torch, so nothing light imports it.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch

_STATE = {"checked": False, "patched": False}
_LIB: list = []  # keeps the torch.library.Library alive for the process lifetime


def _real_ops_load() -> bool:
    """True if torchvision's own compiled ops load (or are already registered)."""
    if _op_exists("nms"):
        return True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # no torchvision at all: nothing to fix
    folder = list(spec.submodule_search_locations)[0]
    candidates = [f for f in os.listdir(folder) if f.startswith("_C") and f.endswith((".so", ".pyd"))]
    for name in candidates:
        try:
            torch.ops.load_library(os.path.join(folder, name))
        except (OSError, RuntimeError):
            continue
        if _op_exists("nms"):
            return True
    return False


def _op_exists(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: visit boxes by descending score (stable), drop any whose IoU with a kept
    box exceeds ``iou_threshold``. Returns kept indices (int64) in visiting order."""
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    boxes = boxes.float()
    order = torch.sort(scores.float(), descending=True, stable=True).indices
    b = boxes[order]
    x1, y1, x2, y2 = b.unbind(1)
    area = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    # Pairwise IoU once (vectorised), then one cheap greedy pass over a boolean matrix.
    xx1 = torch.maximum(x1[:, None], x1[None, :])
    yy1 = torch.maximum(y1[:, None], y1[None, :])
    xx2 = torch.minimum(x2[:, None], x2[None, :])
    yy2 = torch.minimum(y2[:, None], y2[None, :])
    inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
    union = area[:, None] + area[None, :] - inter
    iou = torch.where(union > 0, inter / union, torch.zeros_like(inter))
    suppress = (iou > iou_threshold).cpu()
    removed = torch.zeros(n, dtype=torch.bool)
    keep = []
    for i in range(n):
        if removed[i]:
            continue
        keep.append(i)
        removed |= suppress[i]
    return order[torch.tensor(keep, dtype=torch.int64, device=order.device)]


def ensure_torchvision_ops() -> bool:
    """Define the missing torchvision operators if (and only if) the real ones fail to load.

    Returns True when the fallback was installed. Safe to call many times.
    """
    if _STATE["checked"]:
        return _STATE["patched"]
    _STATE["checked"] = True
    if "torchvision" in sys.modules or _real_ops_load():
        return False
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define(
        "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
    )  # schema only: torchvision registers a fake kernel for it at import

    def _nms_cpu(dets, scores, iou_threshold):
        return nms_reference(dets, scores, float(iou_threshold))

    lib.impl("nms", _nms_cpu, "CPU")
    _LIB.append(lib)
    import torchvision.extension as ext  # noqa: E402  (safe now that nms exists)

    ext._has_ops = lambda: True
    _STATE["patched"] = True
    return True
