"""Checkpoints: round trips, reference import, and every refusal naming its reason."""

from __future__ import annotations

import json
import uuid

import pytest
import torch
from safetensors.torch import save as st_save

from pipeline.model.checkpoint import (
    AUBank,
    CheckpointError,
    CheckpointInfo,
    CheckpointMismatch,
    check_compatible,
    import_reference,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from pipeline.model.head import REFERENCE_NAMES, CLIPAUHead, HeadConfig
from tests.media import shared_data_dir

BANK = AUBank("test", ("brow up", "lip down", "jaw drop"), ("AU1", "AU15", None), "a face with {phrase}.",
              ("a face with brow up.", "a face with lip down.", "a face with jaw drop."))
CFG = HeadConfig(embed_dim=8, n_aus=3, n_classes=2, adapter_hidden=6, classifier_hidden=5)


def _info(**kw) -> CheckpointInfo:
    base = dict(head=CFG, classes=("neutral", "pain"), au_bank=BANK, backbone_id="autt-tiny__random-s0",
                weights_digest="ab" * 32, metrics={"val_f1": 0.75}, curve=({"epoch": 1, "val_f1": 0.75},),
                origin={"kind": "trained"})
    return CheckpointInfo(**{**base, **kw})


def _head(cfg: HeadConfig = CFG, seed: int = 0) -> CLIPAUHead:
    torch.manual_seed(seed)
    return CLIPAUHead(cfg).eval()


def _outputs(head: CLIPAUHead, seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    d, k = head.cfg.embed_dim, head.cfg.n_aus
    with torch.no_grad():
        return tuple(head(torch.randn(4, 6, d, generator=g), torch.randn(k, d, generator=g), True))


@pytest.mark.parametrize("where", ["local", "memory"])
def test_round_trip_gives_identical_outputs(tmp_path, where: str) -> None:
    out = str(tmp_path / "ckpt") if where == "local" else f"memory://ckpt-{uuid.uuid4().hex}/head"
    head = _head()
    save_checkpoint(out, head, _info())
    loaded, info = load_checkpoint(out)
    for a, b in zip(_outputs(head), _outputs(loaded)):
        assert torch.equal(a, b)
    assert info.classes == ("neutral", "pain") and info.au_bank == BANK and info.head == CFG
    assert info.metrics == {"val_f1": 0.75} and info.curve == ({"epoch": 1, "val_f1": 0.75},)
    assert info.versions["torch"] == torch.__version__ and "open_clip" in info.versions
    if where == "local":
        meta = json.loads((tmp_path / "ckpt" / "model.json").read_text())
        assert meta["weights"]["tensors"]["temporal.conv.weight"] == [8, 8, 3]
        assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["model.json", "model.safetensors"]


def test_loading_does_not_touch_the_global_rng(tmp_path) -> None:
    save_checkpoint(str(tmp_path), _head(), _info())
    torch.manual_seed(3)
    want = torch.rand(3)
    torch.manual_seed(3)
    load_checkpoint(str(tmp_path))
    assert torch.equal(torch.rand(3), want)


def _reference_format(head: CLIPAUHead, with_proj: bool = True) -> dict[str, dict[str, torch.Tensor]]:
    """The head's tensors under the reference code's names, as its torch.save'd dict."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    ours_to_ref = {v: k for k, v in REFERENCE_NAMES.items()}
    for name, tensor in head.state_dict().items():
        prefix = next(p for p in ours_to_ref if name.startswith(p))
        ref = ours_to_ref[prefix] + name[len(prefix):]
        group, rest = ref.split(".", 1)  # group names hold no dots
        groups.setdefault(group, {})[rest] = tensor.clone()
    if with_proj:
        d = head.cfg.embed_dim
        groups["temporal_proj"] = {"weight": torch.randn(d, d), "bias": torch.zeros(d)}
    return groups


def test_reference_checkpoint_imports_and_predicts_like_the_same_weights(tmp_path) -> None:
    head = _head(HeadConfig(embed_dim=8, n_aus=46, n_classes=2), seed=4)
    ref = _reference_format(head)
    assert set(ref) == {"text_adapter", "temporal", "temporal_proj", "temporal_classifier"}
    assert set(ref["temporal"]) == {"weight", "bias"} and "0.weight" in ref["text_adapter"]
    torch.save(ref, tmp_path / "ref.pth")
    info = import_reference(str(tmp_path / "ref.pth"), ["neutral", "pain"], out_dir=str(tmp_path / "out"),
                            backbone_id="ViT-B-32__openai")
    assert info.weights_digest == "unknown" and info.au_bank.name == "reference"
    assert len(info.au_bank.prompts) == 46 and info.au_bank.template is None
    assert info.origin["dropped"] == ["temporal_proj.bias", "temporal_proj.weight"]
    loaded, saved = load_checkpoint(str(tmp_path / "out"))
    assert saved.origin["kind"] == "reference-import" and "temporal_proj" in saved.origin["note"]
    for a, b in zip(_outputs(head), _outputs(loaded)):
        assert torch.equal(a, b)


def test_reference_fixture_weights_import_and_reproduce_expected(tmp_path) -> None:
    root = shared_data_dir()
    path = root / "reference/clip_au_reference.safetensors" if root else None
    if path is None or not path.is_file():
        pytest.skip("../shared/data/reference is not present")
    from safetensors.torch import load_file

    fx = load_file(str(path))
    ref: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in fx.items():
        if key.startswith("head."):
            group, rest = key[5:].split(".", 1)
            ref.setdefault(group, {})[rest] = tensor
    torch.save(ref, tmp_path / "ref.pt")
    import_reference(str(tmp_path / "ref.pt"), ["neutral", "pain"], out_dir=str(tmp_path / "out"),
                     backbone_id="ViT-B-32__openai", weights_digest="cd" * 32)
    head, info = load_checkpoint(str(tmp_path / "out"))
    assert info.weights_digest == "cd" * 32 and info.origin["dropped"] == []
    with torch.no_grad():
        out = head(fx["input.frame_features"], fx["input.au_text_features"])
    torch.testing.assert_close(out.logits, fx["expected.logits"], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.au_sim, fx["expected.au_sim"], rtol=0, atol=1e-5)


class _Payload:
    """Unpickling this would run code: weights_only loading must refuse before it does."""

    def __reduce__(self):
        return (print, ("UNPICKLED-CODE-RAN",))


def test_reference_import_refuses_foreign_files(tmp_path, capsys) -> None:
    head = _head(HeadConfig(embed_dim=8, n_aus=46, n_classes=2))
    bad = {**_reference_format(head), "temporal_proj": _Payload()}
    torch.save(bad, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        import_reference(str(tmp_path / "evil.pt"), ["a", "b"], out_dir=str(tmp_path / "o"), backbone_id="x")
    assert "UNPICKLED-CODE-RAN" not in capsys.readouterr().out
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt"):
        import_reference(str(tmp_path / "junk.pt"), ["a", "b"], out_dir=str(tmp_path / "o"), backbone_id="x")
    ref = _reference_format(head)
    torch.save({k: v for k, v in ref.items() if k != "temporal"}, tmp_path / "part.pt")
    with pytest.raises(CheckpointError, match=r"missing \['temporal'\]"):
        import_reference(str(tmp_path / "part.pt"), ["a", "b"], out_dir=str(tmp_path / "o"), backbone_id="x")
    torch.save(ref, tmp_path / "ok.pt")
    with pytest.raises(CheckpointError, match=r"gives 2 classes.*has 3"):
        import_reference(str(tmp_path / "ok.pt"), ["a", "b", "c"], out_dir=str(tmp_path / "o"), backbone_id="x")
    assert not (tmp_path / "o").exists()


def _saved(tmp_path) -> tuple[str, dict]:
    out = str(tmp_path / "ckpt")
    save_checkpoint(out, _head(), _info())
    return out, json.loads((tmp_path / "ckpt" / "model.json").read_text())


def _rewrite(tmp_path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """A weights file with a matching digest, so only the tensor check can object."""
    import hashlib

    blob = st_save(tensors)
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(blob)
    meta["weights"]["sha256"] = hashlib.sha256(blob).hexdigest()
    (tmp_path / "ckpt" / "model.json").write_text(json.dumps(meta))


def test_load_refuses_pickles_corruption_and_foreign_json(tmp_path) -> None:
    out, meta = _saved(tmp_path)
    weights, meta_file = tmp_path / "ckpt" / "model.safetensors", tmp_path / "ckpt" / "model.json"
    good = weights.read_bytes()
    torch.save(_head().state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="plain.pt is a pickled torch file"):
        load_checkpoint(str(tmp_path / "plain.pt"))
    weights.write_bytes((tmp_path / "plain.pt").read_bytes())
    with pytest.raises(CheckpointError, match="model.safetensors is a pickled torch file"):
        load_checkpoint(out)
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(out)
    flipped = bytearray(good)
    flipped[-5] ^= 0xFF
    weights.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupted or from another checkpoint"):
        load_checkpoint(out)
    weights.write_bytes(good)
    load_checkpoint(out)
    for change, message in (({"format": "open_clip"}, "format 'open_clip'"),
                            ({"format_version": 2}, "format_version 2"),
                            ({"classes": ["neutral"]}, "1 classes"),
                            ({"head": {**meta["head"], "layers": 2}}, "unknown fields")):
        meta_file.write_text(json.dumps({**meta, **change}))
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(out)
    meta_file.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(out)
    with pytest.raises(CheckpointError, match="model.json does not exist"):
        load_checkpoint(str(tmp_path / "nowhere"))


def test_load_names_missing_extra_and_misshaped_tensors(tmp_path) -> None:
    out, meta = _saved(tmp_path)
    tensors = dict(read_checkpoint(out)[1])
    tensors.pop("classifier.fc2.bias")
    tensors["temporal_proj.weight"] = torch.zeros(8, 8)
    tensors["temporal.conv.weight"] = torch.zeros(8, 8, 5)
    _rewrite(tmp_path, tensors, meta)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(out)
    text = str(err.value)
    assert "missing classifier.fc2.bias [2]" in text
    assert "unexpected temporal_proj.weight" in text
    assert "temporal.conv.weight is [8, 8, 5], expected [8, 8, 3]" in text
    with pytest.raises(CheckpointError, match="missing"):
        save_checkpoint(str(tmp_path / "other"), tensors, _info())


def test_check_compatible_names_each_mismatch() -> None:
    info = _info()
    check_compatible(info, backbone_id="autt-tiny__random-s0", classes=["neutral", "pain"],
                     au_prompts=list(BANK.prompts), weights_digest="ab" * 32)
    with pytest.raises(CheckpointMismatch) as err:
        check_compatible(info, backbone_id="ViT-B-32__openai", classes=["pain", "neutral"],
                         au_prompts=[*BANK.prompts[:2], "a face with jaw open."], weights_digest="ef" * 32)
    text = str(err.value)
    assert "backbone: checkpoint 'autt-tiny__random-s0', workspace 'ViT-B-32__openai'" in text
    assert "weights digest" in text
    assert "classes: checkpoint ['neutral', 'pain'], workspace ['pain', 'neutral']" in text
    assert "prompt 2: checkpoint 'a face with jaw drop.', workspace 'a face with jaw open.'" in text
    check_compatible(_info(weights_digest="unknown"), backbone_id="autt-tiny__random-s0",
                     classes=["neutral", "pain"], au_prompts=list(BANK.prompts), weights_digest="ef" * 32)


def test_pickle_sniffing_does_not_mistake_a_safetensors_header_length() -> None:
    import io as bytes_io
    import pickle

    from pipeline.model.checkpoint import _pickled

    assert not _pickled(b"\x80\x02" + bytes(6) + b'{"x":')  # header of 0x280 bytes, then '{'
    assert not _pickled(st_save({"x": torch.zeros(2)}))
    assert _pickled(pickle.dumps({"x": 1}, protocol=2))
    buffer = bytes_io.BytesIO()
    torch.save({"x": torch.zeros(2)}, buffer)
    assert _pickled(buffer.getvalue())


def test_au_bank_from_the_prompt_config() -> None:
    from pipeline.embed.prompts import PromptConfig

    default = AUBank.from_prompt_config(PromptConfig())
    assert len(default.prompts) == 47 and default.template == "a human face with {phrase}."
    assert default.prompts[0] == "a human face with inner eyebrows raised." and default.codes[0] == "AU1"
    reference = AUBank.from_prompt_config(PromptConfig(bank="reference"))
    assert reference == AUBank.reference()
    assert len(reference.prompts) == 46 and reference.prompts[-1] == "nostrils_compressedtongue_show"
