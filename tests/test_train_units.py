"""CLIP-AU as units of work on the micro dataset (real MTCNN-free face folders, the tiny
random CLIP): tables conform, reruns do no work, training never calls the image tower,
same seed gives the same tables, an interrupted unit ends the same, target labels change no
model, folds and failures behave, and data that cannot train is a clear message."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import schemas
from jobs.cli import main as cli
from pipeline.workspace import Workspace
from tests.reference_format import to_reference

SMALL = ["train.epochs=2", "protocol.clip_len=4", "protocol.window=2", "protocol.min_face_frames=2"]
TINY = ["embed.model=autt-tiny", "embed.weights=random", "--executor", "local", "--quiet"]


def autt(out, command, *extra):
    return cli([command, "--out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from pipeline.demo import make_micro

    root = tmp_path_factory.mktemp("train")
    info = make_micro(str(root / "data"), n_subjects=4, n_frames=8)
    out = root / "embedded"
    assert autt(out, "ingest", "--manifest", info["manifest"], "--split", info["split"],
                "--classes", "neutral,pain") == 0
    assert autt(out, "embed", "--fused") == 0
    return {**info, "embedded": out}


@pytest.fixture
def ws_copy(micro, tmp_path):
    """A fresh copy of the embedded workspace (no models yet)."""
    out = tmp_path / "out"
    shutil.copytree(micro["embedded"], out)
    return out


def predictions(out) -> dict:
    t = Workspace(str(out)).read_table("predictions").to_pandas()
    return {(r.sample_id, r.method): tuple(np.round(r.probs, 6)) for r in t.itertuples()}


def model_tensors(out) -> dict:
    """The trained weights (safetensors' header order is not stable: compare tensors)."""
    from pipeline.model.checkpoint import read_checkpoint

    ws = Workspace(str(out))
    (unit, marker), = ws.markers("models").items()
    return {k: v.numpy() for k, v in read_checkpoint(ws.files("models", unit, marker)["checkpoint"])[1].items()}


def test_train_writes_conforming_tables_without_the_image_tower(ws_copy, monkeypatch, capsys):
    import open_clip

    def forbidden(*a, **k):
        raise AssertionError("training must never call the image tower")

    monkeypatch.setattr(open_clip.model.CLIP, "encode_image", forbidden)
    assert autt(ws_copy, "train", *SMALL) == 0
    ws = Workspace(str(ws_copy))
    models = ws.read_table("models")
    schemas.check(models.replace_schema_metadata(None).cast(schemas.get("models")), schemas.get("models"))
    assert models.num_rows == 1 and models.column("status").to_pylist() == ["ok"]
    preds = ws.read_table("predictions").to_pandas()
    assert set(preds["method"]) == {"clip-au", "zero-shot", "pn-prompts", "au-probe"}
    assert set(preds["subject_id"]) == {"s04"}  # the target subject only
    assert (preds["status"] == "ok").all()
    assert np.allclose([sum(p) for p in preds["probs"]], 1.0, atol=1e-5)
    acts = ws.read_table("au_activations")
    assert acts.num_rows == 2 * 4  # two target samples x T frames
    assert len(acts.column("activations")[0].as_py()) == 47
    for table in ("models", "predictions", "au_activations"):
        for unit, m in ws.markers(table).items():
            schemas.check(__import__("pipeline.parquet", fromlist=["read"]).read(
                ws.files(table, unit, m)["data"]).replace_schema_metadata(None).cast(
                schemas.get(table)), schemas.get(table))
    assert "label" not in preds.columns  # labels are joined by reports, never copied
    capsys.readouterr()
    before = {t: ws.markers(t) for t in ("models", "predictions", "au_activations")}
    assert autt(ws_copy, "train", *SMALL) == 0  # a rerun does no work
    assert {t: ws.markers(t) for t in before} == before


def test_same_seed_same_tables_and_interrupted_unit_ends_the_same(micro, tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(micro["embedded"], a)
    shutil.copytree(micro["embedded"], b)
    assert autt(a, "train", *SMALL) == 0
    monkeypatch.setenv("AUTT_FAULT", "before_done:train/")
    assert autt(b, "train", *SMALL, "train.max_retries=0") == 1
    assert Workspace(str(b)).markers("models") == {}
    monkeypatch.delenv("AUTT_FAULT")
    assert autt(b, "train", *SMALL) == 0
    ta, tb = model_tensors(a), model_tensors(b)
    assert ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta)
    assert predictions(a) == predictions(b)


def test_target_labels_change_no_model(micro, ws_copy):
    assert autt(ws_copy, "train", *SMALL) == 0
    before = {t: Workspace(str(ws_copy)).markers(t) for t in ("models", "predictions")}
    rows = Path(micro["manifest"]).read_text().splitlines()
    swapped = [r.replace(",neutral,", ",TMP,").replace(",pain,", ",neutral,").replace(",TMP,", ",pain,")
               if ",s04," in r else r for r in rows]
    changed = Path(micro["manifest"]).parent / "relabelled.csv"  # same folder: same media paths
    changed.write_text("\n".join(swapped) + "\n")
    assert autt(ws_copy, "ingest", "--manifest", str(changed), "--split", micro["split"],
                "--classes", "neutral,pain", "--recompute") == 0
    assert autt(ws_copy, "embed", "--fused") == 0
    assert autt(ws_copy, "train", *SMALL) == 0
    after = {t: Workspace(str(ws_copy)).markers(t) for t in before}
    assert after == before


def test_loso_folds_and_a_failing_fold_is_recorded_while_others_finish(ws_copy, monkeypatch):
    monkeypatch.setenv("AUTT_FAULT", "shard_start:loso-s02")
    assert autt(ws_copy, "train", *SMALL, "protocol.split=loso", "train.max_retries=1") == 1
    ws = Workspace(str(ws_copy))
    done = sorted(ws.markers("models"))
    assert len(done) == 3 and not any("loso-s02" in m for m in done)  # the others finished
    log = next((ws_copy / "runs").glob("*/errors.log")).read_text()
    assert "loso-s02" in log and "InjectedFault" in log
    monkeypatch.delenv("AUTT_FAULT")
    assert autt(ws_copy, "train", *SMALL, "protocol.split=loso") == 0
    models = ws.read_table("models").to_pandas()
    assert len(models) == 4
    for r in models.itertuples():  # each fold's held-out subject is its target, never a source
        assert list(r.target_subjects) == [r.model_id.split("loso-")[1].split(".")[0]]
        assert r.target_subjects[0] not in list(r.source_subjects)
    preds = ws.read_table("predictions").to_pandas()
    assert set(preds.loc[preds["method"] == "clip-au", "subject_id"]) == {"s01", "s02", "s03", "s04"}


def test_a_failed_fold_is_retried(ws_copy, monkeypatch, tmp_path):
    monkeypatch.setenv("AUTT_FAULT", "shard_start:train/")
    monkeypatch.setenv("AUTT_FAULT_ONCE", str(tmp_path / "fired"))
    assert autt(ws_copy, "train", *SMALL) == 0
    assert (tmp_path / "fired").exists() and len(Workspace(str(ws_copy)).markers("models")) == 1


def test_insufficient_faces_is_a_row(ws_copy, capsys):
    assert autt(ws_copy, "train", *SMALL) == 0
    # With 9 required face frames no sample qualifies: the model cannot retrain (its unit
    # fails and is recorded), and every target sample is a row saying why it has no scores.
    capsys.readouterr()
    assert autt(ws_copy, "train", *SMALL[:-1], "protocol.min_face_frames=9", "--recompute",
                "train.max_retries=0") == 1
    assert "no samples to train on" in capsys.readouterr().err
    preds = Workspace(str(ws_copy)).read_table("predictions").to_pandas()
    rows = preds[preds["method"].isin(["zero-shot", "pn-prompts", "au-probe"])]
    assert len(rows) == 6 and (rows["status"] == "insufficient_faces").all()
    assert rows["probs"].isna().all() and rows["error"].str.contains("min_face_frames=9").all()


def test_data_that_cannot_train(micro, tmp_path, capsys):
    out = tmp_path / "noroles"
    capsys.readouterr()
    assert autt(out, "run", "--manifest", micro["manifest"], "--classes", "neutral,pain", *SMALL) == 0
    assert "training skipped: no target subjects" in capsys.readouterr().err
    assert autt(out, "train", *SMALL) == 2
    assert "cannot train: no target subjects" in capsys.readouterr().err
    assert autt(tmp_path / "empty", "train", *SMALL) == 2


def test_predict_applies_a_model_to_another_workspace_and_refuses_a_foreign_one(micro, ws_copy,
                                                                               tmp_path, capsys):
    assert autt(ws_copy, "train", *SMALL) == 0
    ws = Workspace(str(ws_copy))
    (unit, marker), = ws.markers("models").items()
    ckpt = ws.files("models", unit, marker)["checkpoint"]
    other = tmp_path / "other"
    shutil.copytree(micro["embedded"], other)
    assert autt(other, "predict", "--model", ckpt, *SMALL) == 0
    preds = Workspace(str(other)).read_table("predictions").to_pandas()
    assert set(preds["subject_id"]) == {"s01", "s02", "s03", "s04"} and (preds["status"] == "ok").all()
    # the same model on the same target samples: the same numbers, up to float32 rounding
    # (predict batches the clips otherwise than training's own predictions did)
    trained = predictions(ws_copy)
    for r in preds[preds["subject_id"] == "s04"].itertuples():
        np.testing.assert_allclose(r.probs, trained[(r.sample_id, "clip-au")], rtol=0, atol=5e-6)
    before = Workspace(str(other)).markers("predictions")
    assert autt(other, "predict", "--model", ckpt, *SMALL) == 0  # a rerun does no work
    assert Workspace(str(other)).markers("predictions") == before
    capsys.readouterr()
    assert autt(other, "predict", "--model", str(tmp_path), *SMALL) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err


def test_import_reference_then_predict(micro, tmp_path, capsys):  # noqa: C901
    """A reference-format checkpoint (torch.save of the head's state dicts, temporal_proj
    included) for the tiny backbone imports, and predicts like the same weights loaded
    directly through this project's head."""
    import torch

    from pipeline.model.checkpoint import load_checkpoint
    from pipeline.model.head import CLIPAUHead, HeadConfig

    d, k = 32, 47
    head = CLIPAUHead(HeadConfig(embed_dim=d, n_aus=k, n_classes=2))
    flat = {k_: v for k_, v in head.state_dict().items()}
    ref = to_reference(flat, d)
    src = tmp_path / "ref.pth"
    torch.save(ref, src)
    out = tmp_path / "imported"
    capsys.readouterr()
    # the tiny model with the default bank: 47 prompts, the reference head of this test too
    code = cli(["import-reference", str(src), "--classes", "neutral,pain", "--out", str(out),
                "embed.model=autt-tiny", "embed.weights=random"])
    assert code == 2 and "46 prompts" in capsys.readouterr().err  # the reference bank has 46 AUs
    head46 = CLIPAUHead(HeadConfig(embed_dim=d, n_aus=46, n_classes=2))
    f46 = head46.state_dict()
    ref["temporal_classifier"]["0.weight"] = f46["classifier.fc1.weight"]
    torch.save(ref, src)
    assert cli(["import-reference", str(src), "--classes", "neutral,pain", "--out", str(out),
                "embed.model=autt-tiny", "embed.weights=random"]) == 0
    loaded, info = load_checkpoint(str(out))
    assert info.au_bank.name == "reference" and info.weights_digest == "unknown"
    assert "temporal_proj" in str(info.origin["dropped"])
    x, t = torch.randn(3, 5, d), torch.randn(46, d)
    head46.load_state_dict({**f46, **{k_: v for k_, v in flat.items()
                                      if not k_.startswith("classifier.fc1.w")}})
    with torch.no_grad():
        assert torch.allclose(loaded(x, t).logits, head46(x, t).logits, atol=1e-6)
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"\x80\x04junk")
    assert cli(["import-reference", str(bad), "--classes", "neutral,pain", "--out", str(tmp_path / "x"),
                "embed.model=autt-tiny", "embed.weights=random"]) == 2
    # made for the reference bank: a workspace with the default 47-prompt bank refuses it
    other = tmp_path / "ws"
    shutil.copytree(micro["embedded"], other)
    capsys.readouterr()
    assert autt(other, "predict", "--model", str(out), *SMALL) == 2
    assert "AU bank" in capsys.readouterr().err
