"""Shared fixtures: offline settings, one local Ray cluster per session, tiny media."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from pipeline._torchvision_compat import ensure_torchvision_ops  # noqa: E402
from tests.media import shared_data_dir, write_video  # noqa: E402

ensure_torchvision_ops()  # tests import torchvision / facenet-pytorch directly too


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is not present (a fresh clone has no shared media)")
    return path


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole test session (2 CPUs)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
                 log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_video(tmp_path_factory) -> Path:
    """An 8-frame 64x64 h264 clip (real, decodable)."""
    path = tmp_path_factory.mktemp("media") / "tiny.mp4"
    write_video(path, n_frames=8, size=64)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A real 4-frame mpeg4 clip for the adapters' generated trees (tests/adapter_trees.py)."""
    from tests.adapter_trees import make_clip

    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4")


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    """One tiny JPEG frame for the adapters' generated frame folders."""
    from tests.adapter_trees import jpeg_bytes

    return jpeg_bytes()
