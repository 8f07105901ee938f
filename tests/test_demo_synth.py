"""The self-generated demo data: real decodable videos with detectable faces, label motion
only inside the expression window, distinct subjects, determinism, and the micro set."""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# facenet-pytorch (imported lazily below) needs the torchvision fix: tests/conftest.py
# installs it before any test module is imported.
from pipeline.demo.face import ACTIONS, EYE_L, au_displacement
from pipeline.demo.micro import make_micro
from pipeline.demo.render import window_frames
from pipeline.demo.synth import CLASSES, DemoConfig, encode_mp4, make_demo, render_demo_clip

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SMALL = DemoConfig(n_subjects=3, n_target=1, videos_per_class=1, n_frames=20, size=160)
TINY = DemoConfig(n_subjects=2, n_target=1, videos_per_class=1, n_frames=8, size=64)


def read_csv(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def decode(path: str) -> np.ndarray:
    import decord

    vr = decord.VideoReader(path)
    return vr.get_batch(list(range(len(vr)))).asnumpy()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    out = make_demo(str(tmp_path_factory.mktemp("demo")), SMALL)
    out["rows"] = read_csv(out["manifest"])
    out["root"] = os.path.dirname(out["manifest"])
    return out


@pytest.fixture(scope="module")
def mtcnn():
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, device="cpu")


def video(demo: dict, subject: str, label: str) -> np.ndarray:
    row = next(r for r in demo["rows"] if r["subject_id"] == subject and r["label"] == label)
    return decode(os.path.join(demo["root"], row["path"]))


def best_face(mtcnn, frames: np.ndarray) -> list[tuple[float, np.ndarray]]:
    boxes, probs = mtcnn.detect(list(frames))
    found = []
    for b, p in zip(boxes, probs):
        if b is None:
            found.append((0.0, np.zeros(4)))
            continue
        p = np.asarray(p, dtype=np.float64)
        j = int(np.argmax(p))
        found.append((float(p[j]), np.asarray(b[j], dtype=np.float64)))
    return found


def test_manifest_and_split(demo):
    rows = demo["rows"]
    assert list(rows[0]) == ["video_id", "subject_id", "label", "path", "sample_id"]
    assert demo["classes"] == ["neutral", "pain"] == list(SMALL.classes)
    assert demo["n_samples"] == len(rows) == 6
    assert len({r["sample_id"] for r in rows}) == 6
    for r in rows:
        assert not os.path.isabs(r["path"]) and "://" not in r["path"]
        assert os.path.isfile(os.path.join(demo["root"], r["path"]))
    by_subject = {s: sorted(r["label"] for r in rows if r["subject_id"] == s)
                  for s in {r["subject_id"] for r in rows}}
    assert all(labels == ["neutral", "pain"] for labels in by_subject.values())
    split = read_csv(demo["split"])
    assert list(split[0]) == ["subject_id", "role"]
    roles = {r["subject_id"]: r["role"] for r in split}
    assert roles == {"s01": "source", "s02": "source", "s03": "target"}


def test_videos_decode_to_config(demo):
    import decord

    for r in demo["rows"]:
        vr = decord.VideoReader(os.path.join(demo["root"], r["path"]))
        assert len(vr) == SMALL.n_frames
        assert vr[0].shape == (SMALL.size, SMALL.size, 3)
        assert vr.get_avg_fps() == pytest.approx(SMALL.fps)


def test_mtcnn_finds_the_face(demo, mtcnn):
    start, stop = window_frames(SMALL.n_frames, SMALL.window)
    picks = [0, (start + stop) // 2, SMALL.n_frames - 1]  # before, at apex, after
    for subject, label in (("s01", "neutral"), ("s02", "pain"), ("s03", "pain")):
        for prob, box in best_face(mtcnn, video(demo, subject, label)[picks]):
            assert prob > 0.97, (subject, label, prob)
            assert min(box[2] - box[0], box[3] - box[1]) > 40, (subject, label, box)


def test_classes_differ_only_inside_the_window(demo, mtcnn):
    start, stop = window_frames(SMALL.n_frames, SMALL.window)
    outside = np.r_[0:start, stop:SMALL.n_frames]
    apex = np.arange(start + (stop - start) // 4, stop - (stop - start) // 4)
    for subject in ("s01", "s02", "s03"):
        pain = video(demo, subject, "pain").astype(np.float32)
        neutral = video(demo, subject, "neutral").astype(np.float32)
        (_, box), = best_face(mtcnn, neutral[:1].astype(np.uint8))
        x1, y1, x2, y2 = np.round(box).astype(int)
        diff = np.abs(pain - neutral)[:, y1:y2, x1:x2].mean(axis=(1, 2, 3))
        # Outside the window only codec noise separates them (~2 grey levels).
        assert diff[outside].mean() < 2.5, (subject, diff.round(2))
        assert diff[apex].mean() > 2.5 * diff[outside].mean(), (subject, diff.round(2))


def test_rendered_clips_are_identical_outside_the_window():
    start, stop = window_frames(SMALL.n_frames, SMALL.window)
    pain = render_demo_clip(SMALL, 1, "pain", 0).astype(np.int16)
    neutral = render_demo_clip(SMALL, 1, "neutral", 0).astype(np.int16)
    diff = np.abs(pain - neutral).mean(axis=(1, 2, 3))
    assert np.all(diff[:start] == 0) and np.all(diff[stop:] == 0)
    assert np.all(diff[start + 1:stop - 1] > 0)


def test_subjects_differ_in_appearance_within_one_studio():
    firsts = [render_demo_clip(SMALL, s, "neutral", 0)[0].astype(np.float32) for s in range(3)]
    person = np.zeros(firsts[0].shape[:2], bool)
    person[30:130, 50:110] = True  # the face, whatever the subject
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(firsts[i] - firsts[j])[person].mean() > 5  # skin tone and lighting
            # one backdrop for all, read in a corner that the person never reaches
            assert np.array_equal(firsts[i][2, 2], firsts[j][2, 2])


def test_clips_of_one_subject_vary():
    a = render_demo_clip(SMALL, 0, "pain", 0)
    b = render_demo_clip(SMALL, 0, "pain", 1)
    assert not np.array_equal(a, b)


def test_generator_is_deterministic(tmp_path):
    first = make_demo(str(tmp_path / "a"), TINY)
    second = make_demo(str(tmp_path / "b"), TINY)

    def digests(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    a, b = digests(tmp_path / "a"), digests(tmp_path / "b")
    assert len(a) == first["n_samples"] + 2 == second["n_samples"] + 2  # + manifest, split
    assert a == b
    other = DemoConfig(**{**TINY.__dict__, "seed": 1})
    assert not np.array_equal(render_demo_clip(TINY, 0, "pain", 0),
                              render_demo_clip(other, 0, "pain", 0))


def test_encode_mp4_rejects_bad_frames():
    with pytest.raises(ValueError, match="uint8"):
        encode_mp4(np.zeros((4, 16, 16, 3), dtype=np.float32), fps=10)


@pytest.mark.parametrize("field, value, name", [
    ("n_target", 3, "demo.n_target"),
    ("size", 101, "demo.size"),
    ("window_start", 0.9, "demo.window_start"),
    ("n_subjects", 1, "demo.n_subjects"),
    ("crf", 60, "demo.crf"),
])
def test_config_rejects_bad_values(field, value, name):
    with pytest.raises(ValueError, match=name) as err:
        DemoConfig(**{**SMALL.__dict__, field: value})
    assert repr(value) in str(err.value)


def test_the_photo_is_scikit_images_astronaut():
    from skimage import data

    from pipeline.demo.face import astronaut

    assert np.array_equal(astronaut(), data.astronaut())


def test_facial_actions_move_the_right_way():
    qx, qy = np.array([204.0, 400.0], np.float32), np.array([90.0, 400.0], np.float32)
    dx, dy = au_displacement(qx, qy, {})
    assert not dx.any() and not dy.any()
    dx, dy = au_displacement(qx, qy, {"brow_lower": 1.0})
    assert dy[0] < -3 and abs(dy[1]) < 1e-6  # brow content comes from above; far away: still
    # A blink pinches the eye: a point above the eye samples further up.
    _, dy = au_displacement(np.array([EYE_L[0]], np.float32),
                            np.array([EYE_L[1] - 2.0], np.float32), {"blink": 1.0})
    assert dy[0] < -1
    with pytest.raises(ValueError, match="frown"):
        au_displacement(qx, qy, {"frown": 1.0})
    assert "blink" in ACTIONS


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> dict:
    return make_micro(str(tmp_path_factory.mktemp("micro")), extra=2)


def test_micro_layout_and_manifests(micro):
    root = os.path.dirname(micro["manifest"])
    rows, plus = read_csv(micro["manifest"]), read_csv(micro["manifest_plus"])
    assert list(rows[0]) == ["video_id", "subject_id", "label", "path", "sample_id", "media"]
    assert micro["n_samples"] == len(rows) == 8 and micro["n_samples_plus"] == len(plus) == 10
    assert plus[:8] == rows  # the old rows, unchanged and in order
    new = plus[8:]
    assert {r["sample_id"] for r in new}.isdisjoint(r["sample_id"] for r in rows)
    assert {r["label"] for r in new} == set(CLASSES)
    assert {r["subject_id"] for r in read_csv(micro["split"])} == {"s01", "s02", "s03", "s04"}
    for r in plus:
        assert r["media"] == "faces" and not os.path.isabs(r["path"])
        folder = os.path.join(root, r["path"])
        names = os.listdir(folder)
        assert sorted(names, key=lambda n: int(n[6:-4])) == [f"frame_{i}.png" for i in range(12)]
        assert sorted(names) != [f"frame_{i}.png" for i in range(12)]  # numeric sort matters
        with Image.open(os.path.join(folder, "frame_0.png")) as im:
            assert im.size == (64, 64) and im.mode == "RGB"


def test_micro_pain_moves_the_face_inside_the_window(micro):
    root = os.path.dirname(micro["manifest"])
    start, stop = window_frames(12, (0.3, 0.8))

    def frames(sample: str) -> np.ndarray:
        folder = os.path.join(root, "faces", sample.split("_")[0], sample)
        return np.stack([np.asarray(Image.open(os.path.join(folder, f"frame_{i}.png")))
                         for i in range(12)]).astype(np.float32)

    diff = np.abs(frames("s01_pain_1") - frames("s01_neutral_1")).mean(axis=(1, 2, 3))
    assert np.all(diff[:start] == 0) and diff[(start + stop) // 2] > 2


def test_micro_extra_leaves_existing_clips_alone(micro, tmp_path):
    base = make_micro(str(tmp_path))
    assert base["manifest_plus"] is None
    root_a, root_b = os.path.dirname(micro["manifest"]), str(tmp_path)
    for r in read_csv(base["manifest"]):
        for i in (0, 11):
            name = os.path.join(r["path"], f"frame_{i}.png")
            with open(os.path.join(root_a, name), "rb") as fa, \
                    open(os.path.join(root_b, name), "rb") as fb:
                assert fa.read() == fb.read()


def test_micro_rejects_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match=r"micro\.n_target"):
        make_micro(str(tmp_path), n_subjects=2, n_target=2)


def test_micro_writes_to_fsspec_urls():
    import uuid

    import fsspec

    url = f"memory://autt-micro-{uuid.uuid4().hex[:8]}"
    out = make_micro(url, n_frames=4)
    fs = fsspec.filesystem("memory")
    rows = [r.split(",") for r in fs.cat(out["manifest"]).decode().splitlines()[1:]]
    assert len(rows) == out["n_samples"] == 8
    assert all(fs.exists(f"{url}/{r[3]}/frame_3.png") for r in rows)
