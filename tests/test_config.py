"""Typed configs: YAML + overrides, unknown keys and bad values fail naming them."""

from __future__ import annotations

import os

import pytest

from jobs.cli import main as cli
from pipeline.config import SHIPPED, Config, ConfigError, config_hash, load_config, to_yaml


def test_defaults_and_overrides_are_typed():
    cfg = load_config(None, ["faces.min_prob=0.9", "ingest.classes=[neutral, pain]",
                             "run.num_cpus=2", "protocol.target_subjects=a,b"])
    assert isinstance(cfg, Config)
    assert cfg.faces.min_prob == 0.9
    assert cfg.ingest.classes == ("neutral", "pain")
    assert cfg.run.num_cpus == 2
    assert cfg.protocol.target_subjects == ("a", "b")


@pytest.mark.parametrize("override, message", [
    ("faces.min_prob=1.5", "faces.min_prob must be in (0, 1], got 1.5"),
    ("faces.nope=1", "unknown config key faces.nope"),
    ("nosection.x=1", "unknown config key nosection"),
    ("run.num_cpus=two", "run.num_cpus must be an integer, got 'two'"),
    ("run.executor=spark", "run.executor must be one of ['ray', 'local'], got 'spark'"),
    ("protocol.window=30", "protocol.window must be <= protocol.clip_len (20), got 30"),
    ("embed.dtype=int8", "embed.dtype must be one of"),
    ("run.recompute=maybe", "run.recompute must be true or false, got 'maybe'"),
    ("justtext", "must look like section.key=value"),
])
def test_bad_keys_and_values_name_themselves(override, message):
    with pytest.raises(ConfigError) as exc:
        load_config(None, [override])
    assert message in str(exc.value)


@pytest.mark.parametrize("word, value", [("off", "off"), ("on", "on"), ("auto", "auto"),
                                         ("yes", "on"), ("'off'", "off")])
def test_on_off_words_that_yaml_reads_as_booleans_stay_words(word, value, tmp_path):
    assert load_config(None, [f"faces.prefetch={word}"]).faces.prefetch == value
    path = tmp_path / "c.yaml"
    path.write_text(f"faces:\n  prefetch: {word}\n")
    assert load_config(str(path)).faces.prefetch == value
    with pytest.raises(ConfigError, match="faces.prefetch must be one of .* got 'maybe'"):
        load_config(None, ["faces.prefetch=maybe"])
    with pytest.raises(ConfigError, match="run.executor must be one of .* got True"):
        load_config(None, ["run.executor=on"])  # no word of that field means true


def test_bare_key_shorthand_resolves_unique_fields():
    assert load_config(None, ["root=/data/x"]).ingest.root == "/data/x"
    with pytest.raises(ConfigError, match="needs a section"):
        load_config(None, ["seed=3"])  # demo.seed and embed.seed both exist


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("faces:\n  min_prob: 0.8\nrun:\n  out: /tmp/x\n")
    cfg = load_config(str(path), ["faces.min_prob=0.85"])
    assert cfg.faces.min_prob == 0.85 and cfg.run.out == "/tmp/x"
    path.write_text("faces:\n  min_prb: 0.8\n")
    with pytest.raises(ConfigError, match="unknown config key faces.min_prb"):
        load_config(str(path))


def test_resolved_config_round_trips_and_hash_is_stable(tmp_path):
    cfg = load_config(None, ["faces.margin=0.3"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    again = load_config(str(path))
    assert again == cfg
    assert config_hash(again.faces) == config_hash(cfg.faces)
    assert config_hash(cfg.faces) != config_hash(load_config(None).faces)


def test_every_shipped_config_loads():
    names = [f for f in os.listdir(SHIPPED) if f.endswith(".yaml")]
    assert {"biovid.yaml", "stressid.yaml", "bah.yaml"} <= set(names)
    for name in names:
        load_config(name[:-5])
    with pytest.raises(ConfigError, match="no shipped config named 'nope'"):
        load_config("nope")


def test_cli_reports_config_errors_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(["ingest", "--manifest", "x.csv", "--out", str(out), "faces.min_face=0"]) == 2
    assert "faces.min_face must be >= 1, got 0" in capsys.readouterr().err
    assert not out.exists()
