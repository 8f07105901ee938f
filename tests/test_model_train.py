"""Training on cached features: it learns, it is deterministic, it refuses bad data."""

from __future__ import annotations

import builtins
import sys

import numpy as np
import pytest
import torch

from pipeline.model.clips import clip_indices
from pipeline.model.head import CLIPAUHead
from pipeline.model.train import TrainConfig, TrainingDataError, predict, split_rows, train_head

D, K = 24, 6


def synthetic(n_subjects: int = 8, per_class: int = 6, seed: int = 0, signal: float = 1.0):
    """Raw frame embeddings: a class direction + a per-subject offset + frame noise."""
    rng = np.random.default_rng(seed)
    class_dir = rng.normal(size=(2, D))
    seqs, labels, subjects = [], [], []
    for s in range(n_subjects):
        offset = rng.normal(scale=0.8, size=D)
        for c in (0, 1):
            for _ in range(per_class):
                n = int(rng.integers(12, 40))
                frames = signal * class_dir[c] + offset + rng.normal(scale=0.7, size=(n, D))
                seqs.append((3.0 * frames).astype(np.float32))
                labels.append(c)
                subjects.append(f"s{s:02d}")
    au_text = rng.normal(size=(K, D)).astype(np.float32)
    return seqs, np.array(labels), np.array(subjects, dtype=object), au_text


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: a second thread only waits for the first."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


FAST = TrainConfig(epochs=6, clip_len=8, stride=2, adapter_hidden=32, classifier_hidden=16)


def test_overfits_one_batch() -> None:
    rng = np.random.default_rng(1)
    seqs = [rng.normal(size=(8, D)).astype(np.float32) for _ in range(8)]  # len == T: no offset freedom
    labels = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    subjects = np.array(["a"] * 8 + ["b"] * 2, dtype=object)
    seqs += [rng.normal(size=(8, D)).astype(np.float32) for _ in range(2)]
    labels = np.concatenate([labels, [0, 1]])
    cfg = TrainConfig(epochs=150, lr=3e-3, clip_len=8, stride=1, adapter_hidden=32, classifier_hidden=16)
    result = train_head(seqs, labels, subjects, rng.normal(size=(K, D)).astype(np.float32), 2, cfg)
    assert result.metrics["n_train"] == 8 and result.metrics["val_subjects"] == ["b"]  # seed 1999's draw
    assert result.curve[0]["train_loss"] > 0.5
    assert result.curve[-1]["train_loss"] < 0.02


def test_learns_a_class_signal_that_transfers_to_unseen_subjects() -> None:
    seqs, labels, subjects, au_text = synthetic(n_subjects=10, per_class=6)
    source = np.flatnonzero(np.isin(subjects, [f"s{i:02d}" for i in range(8)]))
    target = np.setdiff1d(np.arange(len(seqs)), source)
    seen = []
    result = train_head([seqs[i] for i in source], labels[source], subjects[source], au_text, 2, FAST,
                        progress=lambda epoch, loss, f1: seen.append((epoch, loss, f1)))
    assert [e for e, _, _ in seen] == list(range(1, 7))
    assert [round(f1, 9) for _, _, f1 in seen] == [round(row["val_f1"], 9) for row in result.curve]
    assert len(result.metrics["val_subjects"]) == 2  # round(0.2 * 8)
    assert result.metrics["val_f1"] == max(row["val_f1"] for row in result.curve)
    head = CLIPAUHead(result.head_config)
    head.load_state_dict(result.state_dict)
    out = predict(head, [seqs[i] for i in target], au_text, FAST.clip_len, FAST.stride)
    accuracy = float(np.mean(out.pred == labels[target]))
    assert accuracy > 0.9, accuracy
    assert out.probs.shape == (len(target), 2) and np.allclose(out.probs.sum(1), 1, atol=1e-6)
    assert out.au_sim.shape == (len(target), K) and out.frame_au.shape == (len(target), 8, K)
    lengths = [len(seqs[i]) for i in target]
    assert np.array_equal(out.frame_index, clip_indices(lengths, 8, 2))


def test_best_epoch_is_the_first_of_equal_f1() -> None:
    seqs, labels, subjects, au_text = synthetic(n_subjects=4, per_class=3, signal=3.0)
    result = train_head(seqs, labels, subjects, au_text, 2, FAST)
    f1s = [row["val_f1"] for row in result.curve]
    assert result.metrics["best_epoch"] == 1 + f1s.index(max(f1s))


def test_same_seed_gives_identical_weights_and_the_seed_matters() -> None:
    seqs, labels, subjects, au_text = synthetic(n_subjects=3, per_class=3)
    cfg = TrainConfig(epochs=2, clip_len=6, stride=1, adapter_hidden=32, classifier_hidden=16,
                      temporal="tcn-transformer")
    a = train_head(seqs, labels, subjects, au_text, 2, cfg)
    b = train_head(seqs, labels, subjects, au_text, 2, cfg)
    assert a.state_dict.keys() == b.state_dict.keys()
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert a.curve == b.curve
    c = train_head(seqs, labels, subjects, au_text, 2, TrainConfig(**{**cfg.to_dict(), "seed": 7}))
    assert not all(torch.equal(a.state_dict[k], c.state_dict[k]) for k in a.state_dict)


def test_training_leaves_inputs_and_global_state_alone() -> None:
    seqs, labels, subjects, au_text = synthetic(n_subjects=3, per_class=2)
    copies = [s.copy() for s in seqs], labels.copy(), au_text.copy()
    torch.manual_seed(123)
    np.random.seed(5)
    want_torch, want_np = torch.rand(2), np.random.rand(2)
    torch.manual_seed(123)
    np.random.seed(5)
    train_head(seqs, labels, subjects, au_text, 2, TrainConfig(epochs=1, clip_len=4, adapter_hidden=8))
    assert torch.equal(torch.rand(2), want_torch) and np.array_equal(np.random.rand(2), want_np)
    assert not torch.are_deterministic_algorithms_enabled()
    assert all(np.array_equal(a, b) for a, b in zip(seqs, copies[0]))
    assert np.array_equal(labels, copies[1]) and np.array_equal(au_text, copies[2])


def test_needs_no_clip_storage_ray_or_files(monkeypatch) -> None:
    seqs, labels, subjects, au_text = synthetic(n_subjects=2, per_class=2)
    for name in ("open_clip", "ray", "fsspec", "pipeline.io"):
        monkeypatch.setitem(sys.modules, name, None)  # any import of them now fails

    def no_files(*args, **kwargs):
        raise AssertionError(f"training opened a file: {args}")

    monkeypatch.setattr(builtins, "open", no_files)
    result = train_head(seqs, labels, subjects, au_text, 2, TrainConfig(epochs=1, clip_len=4, adapter_hidden=8))
    head = CLIPAUHead(result.head_config)
    predict(head, seqs, au_text, 4, 2)


def test_validation_splits() -> None:
    subjects = np.array([f"s{i}" for i in range(8) for _ in range(5)], dtype=object)
    rows = np.arange(40)
    train, val = split_rows(rows, subjects, TrainConfig(), np.random.default_rng(1999))
    held = set(subjects[val])
    assert len(held) == 2 and not held & set(subjects[train]) and len(val) == 10
    again = split_rows(rows, subjects, TrainConfig(), np.random.default_rng(1999))
    assert np.array_equal(again[1], val)
    train, val = split_rows(rows, subjects, TrainConfig(validation="videos"), np.random.default_rng(0))
    assert len(val) == 8 and all((subjects[val] == f"s{i}").sum() == 1 for i in range(8))  # round(0.2 * 5)
    assert set(subjects[train]) == set(subjects)


def test_refuses_data_that_cannot_be_trained_on() -> None:
    seqs, labels, subjects, au_text = synthetic(n_subjects=2, per_class=2)
    cases = [
        (([], [], [], au_text, 2), "no samples"),
        ((seqs, labels, np.array(["s00"] * len(seqs), dtype=object), au_text, 2), "1 labelled source subject"),
        ((seqs, np.zeros(len(seqs), dtype=int), subjects, au_text, 2), "every labelled sample has class 0"),
        ((seqs, np.full(len(seqs), -1), subjects, au_text, 2), "none of the 8 samples is labelled"),
        ((seqs, labels + 1, subjects, au_text, 2), r"labels \[2\] are outside the 2 classes"),
        (([*seqs[:-1], np.zeros((0, D), np.float32)], labels, subjects, au_text, 2),
         r"samples \[7\] have no frames"),
        ((seqs, labels, subjects, au_text[:, :5], 2), "share one width"),
        ((seqs, labels[:3], subjects, au_text, 2), "one of each per sample"),
    ]
    for args, message in cases:
        with pytest.raises(TrainingDataError, match=message):
            train_head(*args, cfg=FAST)
    with pytest.raises(TrainingDataError, match="leaves"):  # one sample per subject: no video to hold out
        train_head(seqs[::6], labels[::6], subjects[::6], au_text, 2, TrainConfig(validation="videos"))
    with pytest.raises(ValueError, match="train.validation"):
        TrainConfig(validation="folds")


def test_read_only_inputs_raise_no_numpy_writable_warning() -> None:
    """Text features read from Arrow are read-only arrays; train_head and predict copy them
    instead of handing torch a non-writable buffer. Torch warns once per process, so the
    check runs in a fresh interpreter."""
    import subprocess

    code = (
        "import warnings, numpy as np, torch\n"
        "warnings.simplefilter('error')\n"
        "from tests.test_model_train import synthetic, FAST\n"
        "from pipeline.model.head import CLIPAUHead\n"
        "from pipeline.model.train import predict, train_head\n"
        "torch.set_num_threads(1)\n"
        "seqs, labels, subjects, text = synthetic(n_subjects=3, per_class=2)\n"
        "text.setflags(write=False)\n"
        "for s in seqs: s.setflags(write=False)\n"
        "res = train_head(seqs, labels, subjects, text, 2, FAST)\n"
        "head = CLIPAUHead(res.head_config); head.load_state_dict(res.state_dict)\n"
        "predict(head, seqs, text, FAST.clip_len, FAST.stride)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_fused_adamw_agrees_with_the_plain_loop() -> None:
    from pipeline.model.head import HeadConfig
    from pipeline.model.train import make_optimizer

    seqs, labels, _, text = synthetic(n_subjects=2, per_class=2)
    x = torch.from_numpy(np.stack([s[:8] for s in seqs]))
    y = torch.from_numpy(labels)
    heads = []
    for fused in (True, False):
        torch.manual_seed(0)
        head = CLIPAUHead(HeadConfig(D, K, 2, adapter_hidden=32, classifier_hidden=16))
        opt = make_optimizer(head.parameters(), 1e-3, 1e-4, fused=fused)
        assert opt.defaults["fused"] is (True if fused else None)
        for _ in range(20):
            loss = torch.nn.functional.cross_entropy(head(x, torch.from_numpy(text)).logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        heads.append(head.state_dict())
    assert make_optimizer(CLIPAUHead(HeadConfig(D, K, 2)).parameters(), 1e-3, 1e-4).defaults["fused"]
    for name, value in heads[0].items():
        torch.testing.assert_close(value, heads[1][name], rtol=1e-5, atol=1e-6, msg=name)
