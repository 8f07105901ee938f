"""The torchvision CPU fallback: NMS equals a plain reference; it is off where real ops load."""

from __future__ import annotations

import torch

from pipeline._torchvision_compat import _STATE, nms_reference


def _plain_nms(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    keep = []
    for i in order:
        ok = True
        for j in keep:
            xx1, yy1 = max(boxes[i][0], boxes[j][0]), max(boxes[i][1], boxes[j][1])
            xx2, yy2 = min(boxes[i][2], boxes[j][2]), min(boxes[i][3], boxes[j][3])
            inter = max(0.0, xx2 - xx1) * max(0.0, yy2 - yy1)
            a = (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1])
            b = (boxes[j][2] - boxes[j][0]) * (boxes[j][3] - boxes[j][1])
            if inter / (a + b - inter) > thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def test_nms_matches_reference_on_random_boxes():
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        n = int(torch.randint(1, 60, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 100
        wh = torch.rand(n, 2, generator=g) * 40 + 1
        boxes = torch.cat([xy, xy + wh], 1)
        scores = torch.rand(n, generator=g)
        if trial % 4 == 0:
            scores = torch.round(scores * 4) / 4  # ties: stable order by index
        for thr in (0.3, 0.5, 0.7):
            want = _plain_nms(boxes.tolist(), scores.tolist(), thr)
            assert nms_reference(boxes, scores, thr).tolist() == want


def test_torchvision_ops_work_through_the_public_api():
    import torchvision
    from torchvision.ops import batched_nms, nms

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1, 2]
    assert torchvision.extension._has_ops()
    assert _STATE["checked"]


def test_fallback_only_when_compiled_ops_fail():
    # Here (CPU torch + CUDA torchvision wheel) the real ops cannot load, so the fallback is
    # on; on a machine where they load, ensure_torchvision_ops leaves torchvision alone.
    import importlib.util
    import os

    folder = list(importlib.util.find_spec("torchvision").submodule_search_locations)[0]
    so = [f for f in os.listdir(folder) if f.startswith("_C")]
    try:
        torch.ops.load_library(os.path.join(folder, so[0]))
        loads = True
    except (OSError, RuntimeError):
        loads = False
    assert _STATE["patched"] is (not loads)
