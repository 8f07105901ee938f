"""--strict beyond ingest: a sample the face stage cannot read aborts the fused faces+embed
pass (exit 2, naming the sample) before its unit commits; without it, the sample is rows."""

from __future__ import annotations

from pathlib import Path

from jobs.cli import main as cli
from pipeline.workspace import Workspace

TINY = ["embed.model=autt-tiny", "embed.weights=random", "--executor", "local", "--quiet"]


def test_strict_aborts_the_fused_pass_on_a_sample_it_cannot_read(tmp_path, capsys):
    from pipeline.demo import make_micro

    info = make_micro(str(tmp_path / "data"), n_subjects=2, n_frames=4)
    out = tmp_path / "out"
    assert cli(["ingest", "--manifest", info["manifest"], "--classes", "neutral,pain", "--out", str(out),
                *TINY]) == 0
    bad = sorted((tmp_path / "data" / "faces").glob("*/*"))[1]  # one sample's frame folder
    (bad / "frame_2.png").write_bytes(b"not a png at all")
    capsys.readouterr()
    assert cli(["embed", "--fused", "--strict", "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert "--strict" in err and bad.name in err, err
    ws = Workspace(str(out))
    assert not ws.markers("faces") and not ws.markers(f"embeddings/{_backbone(ws)}")

    assert cli(["embed", "--fused", "--out", str(out), *TINY]) == 0  # without --strict: rows
    faces = ws.read_table("faces").to_pandas()
    mine = faces[faces["sample_id"] == bad.name]
    others = faces.loc[faces["sample_id"] != bad.name, "status"]
    assert (mine["status"] != "ok").any() and (others == "ok").all()


def _backbone(ws: Workspace) -> str:
    root = Path(ws.root) / "embeddings"
    found = [p.name for p in root.iterdir() if p.is_dir()] if root.exists() else []
    return found[0] if found else "none"


def test_changed_prompts_refuse_the_text_features_unless_recompute(tmp_path, capsys):
    from pipeline.demo import make_micro

    info = make_micro(str(tmp_path / "data"), n_subjects=2, n_frames=4)
    out = tmp_path / "out"
    assert cli(["ingest", "--manifest", info["manifest"], "--classes", "neutral,pain", "--out", str(out),
                *TINY]) == 0
    assert cli(["embed", "--fused", "--out", str(out), *TINY]) == 0
    ws = Workspace(str(out))
    table = next(t for t in _tables(out) if t.startswith("text_features/"))
    before = ws.markers(table)
    changed = "prompts.class_template=a face showing {class}."
    capsys.readouterr()
    assert cli(["embed", "--fused", "--out", str(out), *TINY, changed]) == 2
    err = capsys.readouterr().err
    assert "class_template" in err and "--recompute" in err, err
    assert ws.markers(table) == before  # nothing written
    assert cli(["embed", "--fused", "--out", str(out), *TINY, changed, "--recompute"]) == 0
    after = ws.markers(table)
    assert after.keys() == before.keys() and after != before
    parts = list((out / table).glob("*.parquet"))
    assert len(parts) == 1  # the old part is replaced, never kept beside the new one
    prompts = ws.read_table(table).to_pandas()["prompt"].tolist()
    assert "a face showing pain." in prompts


def _tables(out: Path) -> list[str]:
    return [f"{p.parent.name}/{p.name}" for p in out.glob("*/*") if p.is_dir() and p.parent.name != "runs"]
