"""Test-time adaptation as units of work on the micro dataset (two target subjects, the tiny
random CLIP): the tables conform and hold every step, the image tower is never called, a
rerun does no work, step 0 with L = T is CLIP-AU, target labels change nothing, a subject's
result does not depend on the others or on the executor, and a failing unit is recorded
while the others finish, then redone alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import schemas
from jobs.cli import main as cli
from pipeline import parquet
from pipeline.workspace import Workspace
from tests.reference_format import to_reference

SMALL = ["train.epochs=2", "protocol.clip_len=4", "protocol.window=2", "protocol.min_face_frames=2",
         "protocol.tta_steps=3"]
TINY = ["embed.model=autt-tiny", "embed.weights=random", "--executor", "local", "--quiet"]
METHODS = {"clip-autt", "clip-au+windows", "tta-cap-frozen", "tpt"}


def autt(out, command, *extra, executor: str = "local"):
    tiny = [a if a != "local" else executor for a in TINY]
    return cli([command, "--out", str(out), *tiny, *SMALL, *extra])


def prepare(root: Path, manifest: str, split: str) -> Path:
    out = root / "trained"
    assert autt(out, "ingest", "--manifest", manifest, "--split", split, "--classes", "neutral,pain") == 0
    assert autt(out, "embed", "--fused") == 0
    assert autt(out, "train") == 0
    return out


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from pipeline.demo import make_micro

    root = tmp_path_factory.mktemp("adapt")
    info = make_micro(str(root / "data"), n_subjects=5, n_target=2, n_frames=8, extra=10)
    return {**info, "trained": prepare(root, info["manifest"], info["split"]), "root": root}


@pytest.fixture
def ws_copy(micro, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(micro["trained"], out)
    return out


def rows(out, method: str | None = None):
    t = Workspace(str(out)).read_table("adaptation").to_pandas()
    return t if method is None else t[t["method"] == method]


def keyed(frame) -> dict:
    return {(r.sample_id, r.method, None if np.isnan(r.step) else int(r.step)): np.asarray(r.probs)
            for r in frame.itertuples()}


def test_adaptation_tables_steps_contexts_and_a_rerun_without_the_image_tower(ws_copy, monkeypatch):
    import open_clip
    from safetensors.numpy import load_file

    def forbidden(*a, **k):
        raise AssertionError("adaptation must never call the image tower")

    monkeypatch.setattr(open_clip.model.CLIP, "encode_image", forbidden)
    assert autt(ws_copy, "adapt") == 0
    ws = Workspace(str(ws_copy))
    for table in ("adaptation", "adapt_units"):
        for unit, m in ws.markers(table).items():
            data = parquet.read(ws.files(table, unit, m)["data"]).replace_schema_metadata(None)
            schemas.check(data.cast(schemas.get(table)), schemas.get(table))
    t = rows(ws_copy)
    assert set(t["method"]) == METHODS and set(t["subject_id"]) == {"s04", "s05"}
    assert (t["status"] == "ok").all() and "label" not in t.columns
    autt_rows = t[t["method"] == "clip-autt"]
    for sample, g in autt_rows.groupby("sample_id"):  # steps 0..3 and the final row
        steps = sorted(int(s) for s in g["step"].dropna())
        assert steps == [0, 1, 2, 3], sample
        final = g[g["step"].isna()].iloc[0]
        last = g[g["step"] == 3].iloc[0]
        assert np.array_equal(final["probs"], last["probs"]) and final["window_start"] == last["window_start"]
        assert g["window_start"].between(0, 2).all()  # T - L + 1 = 3 windows
    zero = t[t["method"] == "clip-au+windows"]
    assert sorted(zero["step"].dropna().unique()) == [0.0]
    units = ws.read_table("adapt_units").to_pandas()
    assert len(units) == 2 * len(METHODS) and (units["status"] == "ok").all()
    assert set(units.loc[units["method"] == "clip-autt", "steps"]) == {3}
    assert units.loc[units["method"].isin(["tpt", "tta-cap-frozen"]), "model_id"].isna().all()
    for unit, m in ws.markers("adaptation").items():
        files = ws.files("adaptation", unit, m)
        if unit.startswith("clip-autt."):
            ctx = load_file(files["context"] + "/context.safetensors")["context"]
            assert ctx.shape[:2] == (47, 4) and np.isfinite(ctx).all()  # K prompts x n_ctx x width
        else:
            assert "context" not in files or unit.startswith("clip-au-windows.")
    before = {t: ws.markers(t) for t in ("adaptation", "adapt_units", "models")}
    assert autt(ws_copy, "adapt") == 0  # a rerun does no work
    assert {t: ws.markers(t) for t in before} == before


def test_the_worker_holds_the_text_tower_only(ws_copy):
    from jobs import adapt as adapt_job
    from jobs.adapt import prepare as plan_units
    from pipeline.adapt.units import AdaptRun, AdaptStage
    from pipeline.config import load_config

    cfg = load_config(None, ["embed.model=autt-tiny", "embed.weights=random", f"run.out={ws_copy}", *SMALL])
    s = plan_units(cfg)
    stage = AdaptStage(s.units, s.ctx, AdaptRun(cfg.adapt, 3, 2, cfg.embed, cfg.prompts), s.checkpoints)
    tower, _ = stage.tower()
    names = [n for n, _ in tower.named_parameters()]
    assert names and not any("visual" in n for n in names)
    assert adapt_job.describe(s) == '{"clip-au+windows": 2, "clip-autt": 2, "tpt": 2, "tta-cap-frozen": 2}'


def test_step_zero_with_the_whole_clip_as_window_is_clip_au(ws_copy):
    assert autt(ws_copy, "adapt", "protocol.window=4", "--methods", "clip-autt,clip-au+windows") == 0
    t = rows(ws_copy)
    ws = Workspace(str(ws_copy))
    clip_au = {r.sample_id: np.asarray(r.probs) for r in
               ws.read_table("predictions").to_pandas().query("method == 'clip-au'").itertuples()}
    for method in ("clip-autt", "clip-au+windows"):
        step0 = t[(t["method"] == method) & (t["step"] == 0)]
        assert set(step0["sample_id"]) == set(clip_au)
        for r in step0.itertuples():
            np.testing.assert_allclose(r.probs, clip_au[r.sample_id], atol=1e-6)
            assert r.window_start == 0  # a single window: the clip


def test_target_labels_shuffled_or_removed_change_no_adaptation_output(micro, ws_copy, tmp_path):
    assert autt(ws_copy, "adapt") == 0
    lines = Path(micro["manifest"]).read_text().splitlines()
    header = lines[0].split(",")
    col = header.index("label")
    for variant in ("shuffled", "removed"):
        out_rows = [lines[0]]
        for line in lines[1:]:
            cells = line.split(",")
            if cells[header.index("subject_id")] in ("s04", "s05"):
                cells[col] = "" if variant == "removed" else {"neutral": "pain", "pain": "neutral"}[cells[col]]
            out_rows.append(",".join(cells))
        manifest = Path(micro["manifest"]).parent / f"{variant}.csv"  # same folder: same media
        manifest.write_text("\n".join(out_rows) + "\n")
        other = prepare(tmp_path / variant, str(manifest), micro["split"])
        assert autt(other, "adapt") == 0
        a, b = keyed(rows(ws_copy)), keyed(rows(other))
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k], b[k]) for k in a), variant  # same arithmetic: bit for bit
        ctx_a = Workspace(str(ws_copy)).markers("adaptation")
        ctx_b = Workspace(str(other)).markers("adaptation")
        assert {u: m["output_digest"] for u, m in ctx_a.items()} == \
            {u: m["output_digest"] for u, m in ctx_b.items()}


@pytest.mark.slow
def test_a_subject_does_not_depend_on_the_others_or_on_the_executor(micro, tmp_path):
    alone, together, on_ray = tmp_path / "alone", tmp_path / "together", tmp_path / "ray"
    for out in (alone, together, on_ray):
        shutil.copytree(micro["trained"], out)
    assert autt(alone, "adapt", "--subjects", "s05") == 0
    assert autt(together, "adapt") == 0
    # on Ray, two subjects of one model and method sent to a worker together (a group)
    assert autt(on_ray, "adapt", "--workers", "2", "--num-cpus", "2", "adapt.subjects_per_batch=2",
                executor="ray") == 0
    a, b, c = keyed(rows(alone)), keyed(rows(together)), keyed(rows(on_ray))
    assert set(a) == {k for k in b if k[0].startswith("s05")}
    for k in a:  # the same unit, run alone or after another subject's: same arithmetic
        assert np.array_equal(a[k], b[k]), k
    assert b.keys() == c.keys()
    for k in b:  # other processes, thread counts, shared forwards: sums may round differently
        np.testing.assert_allclose(b[k], c[k], atol=1e-5, err_msg=str(k))
    units = Workspace(str(on_ray)).read_table("adapt_units").to_pandas()
    shared = [dict(r.seconds)["subjects_in_forward"] for r in units.itertuples() if r.method == "clip-autt"]
    assert shared == [2.0, 2.0]


def test_a_failing_unit_is_recorded_while_the_others_finish_and_a_rerun_redoes_it_alone(
        ws_copy, monkeypatch, capsys):
    monkeypatch.setenv("AUTT_FAULT", "shard_start:adapt/tpt.")
    assert autt(ws_copy, "adapt", "adapt.max_retries=1") == 1
    ws = Workspace(str(ws_copy))
    done = ws.markers("adaptation")
    assert len(done) == 6 and not any(u.startswith("tpt.") for u in done)
    log = next((ws_copy / "runs").glob("*/errors.log")).read_text()
    assert "tpt." in log and "InjectedFault" in log
    capsys.readouterr()
    assert cli(["status", "--out", str(ws_copy)]) == 0
    listed = capsys.readouterr().out
    assert "units whose last attempt failed (2" in listed and "InjectedFault" in listed
    assert all(f"tpt.autt-tiny__random-s0.{s}: InjectedFault" in listed for s in ("s04", "s05"))
    monkeypatch.delenv("AUTT_FAULT")
    assert autt(ws_copy, "adapt") == 0
    after = ws.markers("adaptation")
    assert len(after) == 8 and all(after[u] == m for u, m in done.items())  # only tpt ran again
    capsys.readouterr()
    assert cli(["status", "--out", str(ws_copy)]) == 0
    listed = capsys.readouterr().out
    assert "adaptation" in listed and "failed" in listed and "units whose last attempt failed" not in listed


def test_nothing_to_adapt_is_a_clear_error(micro, tmp_path, capsys):
    out = tmp_path / "untrained"
    shutil.copytree(micro["trained"], out)
    shutil.rmtree(out / "models")
    capsys.readouterr()
    assert autt(out, "adapt", "--methods", "clip-autt") == 2
    assert "cannot adapt: nothing to adapt" in capsys.readouterr().err
    assert autt(out, "adapt", "--subjects", "nobody") == 2
    assert "nobody" in capsys.readouterr().err
    assert autt(out, "adapt", "--methods", "magic") == 2
    assert "magic" in capsys.readouterr().err


def reference_checkpoint(path: Path, d: int, k: int = 46) -> None:
    """A checkpoint in the public reference code's format (random weights) for width ``d``."""
    import torch

    from pipeline.model.head import CLIPAUHead, HeadConfig

    torch.manual_seed(0)
    flat = CLIPAUHead(HeadConfig(embed_dim=d, n_aus=k, n_classes=2)).state_dict()
    torch.save(to_reference(flat, d), path)


def test_reference_recipe_import_then_adapt_with_the_reference_option(micro, tmp_path, capsys):
    """README's recipe on the micro data: a workspace embedded with the reference bank, the
    authors'-format checkpoint imported, then `autt adapt --model` with the reference option:
    its final prediction is the forward before the last update."""
    out, model = tmp_path / "ref", tmp_path / "ref-model"
    bank = "prompts.bank=reference"
    assert autt(out, "ingest", "--manifest", micro["manifest"], "--split", micro["split"],
                "--classes", "neutral,pain") == 0
    assert autt(out, "embed", "--fused", bank) == 0
    reference_checkpoint(tmp_path / "ref.pth", d=32)
    assert cli(["import-reference", str(tmp_path / "ref.pth"), "--classes", "neutral,pain", "--out",
                str(model), "embed.model=autt-tiny", "embed.weights=random"]) == 0
    capsys.readouterr()
    assert autt(out, "adapt", "--model", str(model), bank, "--methods", "clip-autt") == 2
    assert "no template prefix" in capsys.readouterr().err
    assert autt(out, "adapt", "--model", str(model), bank, "--methods", "clip-autt-reference,tpt") == 0
    t = rows(out, "clip-autt-reference")
    assert set(t["subject_id"]) == {"s04", "s05"} and (t["status"] == "ok").all()
    units = Workspace(str(out)).read_table("adapt_units").to_pandas().set_index("method")
    assert units.loc["clip-autt-reference", "final_step"].tolist() == [2, 2]  # 3 steps: before the 3rd
    for _, g in t.groupby("sample_id"):
        final, before_last = g[g["step"].isna()].iloc[0], g[g["step"] == 2].iloc[0]
        assert np.array_equal(final["probs"], before_last["probs"])
    before = Workspace(str(out)).markers("adaptation")
    assert autt(out, "adapt", "--model", str(model), bank, "--methods", "clip-autt-reference,tpt") == 0
    assert Workspace(str(out)).markers("adaptation") == before  # a rerun does no work


def test_adapted_contexts_apply_to_new_samples_of_their_subject(micro, ws_copy, tmp_path, capsys):
    assert autt(ws_copy, "adapt", "--methods", "clip-autt") == 0
    final = {r.sample_id: np.asarray(r.probs) for r in rows(ws_copy, "clip-autt").itertuples()
             if np.isnan(r.step)}
    # another workspace holding the same samples: the context reproduces the final predictions
    other = tmp_path / "other"
    shutil.copytree(micro["trained"], other)
    assert autt(other, "predict", "--contexts", str(ws_copy)) == 0
    got = rows(other, "clip-autt")
    assert set(got["unit_id"]) == {u + ".applied" for u in Workspace(str(ws_copy)).markers("adaptation")}
    for r in got[got["step"].isna()].itertuples():
        np.testing.assert_allclose(r.probs, final[r.sample_id], atol=1e-6)
    # the source's contexts are adapted again (another lr): applying them again redoes each
    # applied unit whole (its context changed), never a crash or a duplicate row
    source = tmp_path / "source"
    shutil.copytree(ws_copy, source)
    assert autt(source, "adapt", "--methods", "clip-autt", "adapt.lr=0.05", "--recompute") == 0
    before = Workspace(str(other)).markers("adaptation")
    assert autt(other, "predict", "--contexts", str(source)) == 0
    after = Workspace(str(other)).markers("adaptation")
    assert after.keys() == before.keys() and all(after[u] != before[u] for u in after)
    again = rows(other, "clip-autt")
    assert len(again) == len(got) and not again.duplicated(["sample_id", "step"]).any()
    # the same workspace, after new samples arrive: only the new ones of s04 and s05 are predicted
    assert autt(ws_copy, "ingest", "--manifest", micro["manifest_plus"], "--split", micro["split"],
                "--classes", "neutral,pain") == 0
    assert autt(ws_copy, "embed", "--fused") == 0
    assert autt(ws_copy, "predict", "--contexts", str(ws_copy)) == 0
    applied = rows(ws_copy, "clip-autt").query("unit_id.str.endswith('.applied')", engine="python")
    assert set(applied["sample_id"]) == {"s04_neutral_2", "s04_pain_2", "s05_neutral_2", "s05_pain_2"}
    assert (applied["status"] == "ok").all() and set(applied["step"].dropna()) == {0.0}
    capsys.readouterr()
    assert autt(ws_copy, "predict") == 2
    assert "exactly one of --model" in capsys.readouterr().err


def test_subjects_batched_in_one_text_forward_match_one_at_a_time(micro, tmp_path, monkeypatch):
    alone, batched, fallback = tmp_path / "alone", tmp_path / "batched", tmp_path / "fallback"
    for out in (alone, batched, fallback):
        shutil.copytree(micro["trained"], out)
    methods = ["--methods", "clip-autt,clip-au+windows"]
    assert autt(alone, "adapt", *methods, "adapt.subjects_per_batch=1") == 0
    assert autt(batched, "adapt", *methods, "adapt.subjects_per_batch=2") == 0
    units = Workspace(str(batched)).read_table("adapt_units").to_pandas()
    shared = {r.unit_id: dict(r.seconds)["subjects_in_forward"] for r in units.itertuples()}
    assert len(shared) == 4 and set(shared.values()) == {2.0}  # both target subjects in each forward
    a, b = keyed(rows(alone)), keyed(rows(batched))
    assert a.keys() == b.keys()
    for k in a:  # each subject's gradient is its own: equal within float rounding
        np.testing.assert_allclose(a[k], b[k], atol=1e-5, err_msg=str(k))

    # the shared computation fails: each unit is computed on its own, none is lost
    from pipeline.adapt.units import AdaptStage

    one_by_one = AdaptStage._clip_autt

    def refuse_groups(self, items):
        if len(items) > 1:
            raise RuntimeError("injected: batched forward failed")
        return one_by_one(self, items)

    monkeypatch.setattr(AdaptStage, "_clip_autt", refuse_groups)
    assert autt(fallback, "adapt", *methods, "adapt.subjects_per_batch=2") == 0
    c = keyed(rows(fallback))
    assert c.keys() == a.keys() and all(np.array_equal(a[k], c[k]) for k in a)


def test_mid_unit_kills_resume_and_settings_refuse_only_the_methods_they_change(ws_copy, monkeypatch,
                                                                                 capsys):
    # killed mid-unit (inputs loaded, nothing computed): the others commit, a rerun ends it
    monkeypatch.setenv("AUTT_FAULT", "mid_shard:adapt/tpt.")
    assert autt(ws_copy, "adapt", "adapt.max_retries=0") == 1
    ws = Workspace(str(ws_copy))
    first = ws.markers("adaptation")
    assert len(first) == 6 and not any(u.startswith("tpt.") for u in first)
    monkeypatch.delenv("AUTT_FAULT")
    assert autt(ws_copy, "adapt") == 0
    done = ws.markers("adaptation")
    assert len(done) == 8 and not rows(ws_copy).duplicated(["unit_id", "sample_id", "step"]).any()
    capsys.readouterr()
    # the learning rate changes CLIP-AUTT, not TPT, TTA-CaP or the 0-step method
    assert autt(ws_copy, "adapt", "--methods", "tpt,tta-cap-frozen,clip-au+windows", "adapt.lr=0.05") == 0
    assert ws.markers("adaptation") == done
    capsys.readouterr()
    assert autt(ws_copy, "adapt", "adapt.lr=0.05") == 2
    err = capsys.readouterr().err
    assert "clip-autt." in err and "lr" in err and "--recompute" in err
    assert autt(ws_copy, "adapt", "protocol.tta_steps=4") == 2
    assert "protocol.tta_steps" in capsys.readouterr().err  # the key the user sets
