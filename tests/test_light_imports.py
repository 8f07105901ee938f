"""Layering: the config primitives import no stage code; the storage layer and config loading
import nothing heavy (no torch, PIL, media decoders or model libraries), in a fresh process;
the torch-free CLIP token count that lets prompt settings validate there equals open_clip's
tokenizer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import SHIPPED
from pipeline.embed.prompts import AU_BANK, REFERENCE_BANK, PromptConfig, au_prompts, class_prompts
from pipeline.embed.tokens import count_tokens

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "PIL", "open_clip", "facenet_pytorch", "decord", "av", "skimage",
         "scipy", "cv2", "ray")
SHIPPED_NAMES = sorted(name[:-5] for name in os.listdir(SHIPPED) if name.endswith(".yaml"))

PROBE = """
import sys
import pipeline.config_core
stages = sorted(m for m in sys.modules if m.startswith(("pipeline.ingest", "pipeline.faces",
                                                         "pipeline.embed", "pipeline.demo")))
if stages:
    sys.exit(f"the config primitives imported stage code {stages}")
import pipeline.io, pipeline.parquet, pipeline.workspace, pipeline.shards, pipeline.config, schemas
from pipeline import config
from pipeline.planning import CODE_VERSION, Fingerprint
import pipeline.ingest.batches, pipeline.ingest.manifest, pipeline.ingest.stage, pipeline.demo

heavy = set(sys.argv[1].split(","))
def loaded(step):
    found = sorted(heavy & set(sys.modules))
    if found:
        sys.exit(f"{step} imported {found}")

loaded("importing the storage layer and config")
for name in sys.argv[2].split(","):
    cfg = config.load_config(name, ["prompts.template=a person with an expression of {phrase}.",
                                    "prompts.n_ctx=6"])
    config.config_hash(cfg.faces), config.to_yaml(cfg)
    config.diff(config.to_dict(cfg.embed), config.to_dict(config.Config().embed))
    Fingerprint(config=config.to_dict(cfg.ingest), inputs={}).value
    loaded(f"loading shipped config {name!r}")
assert CODE_VERSION == pipeline.__version__
print("light", sys.argv[2])
"""


def test_storage_layer_and_config_loading_import_nothing_heavy():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(HEAVY), ",".join(SHIPPED_NAMES)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"light {','.join(SHIPPED_NAMES)}"
    assert SHIPPED_NAMES == ["bah", "biovid", "biovid-reference", "stressid"]


def test_probe_catches_a_heavy_import():
    """The same probe fails, naming the module, when a module it forbids is loaded (pyarrow
    here: the storage layer needs it; importing torch for this would cost seconds)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "pyarrow,torch", "biovid"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "importing the storage layer and config imported ['pyarrow']" in result.stderr


ODD = [
    "", "   ", "a", "A Human FACE", "a   human\tface\nwith lips.", "don't can't we'll they're",
    "pain", "ambivalence", "CLIP-AUTT 2026 v3.1, 47 AUs!", "café naïve façade", "東京 の 顔",
    "émotion 😀 🙂", "&amp; &lt;tag&gt; &amp;amp;", "<start_of_text>x<end_of_text>",
    "nostrils_compressedtongue_show", "supercalifragilisticexpialidocious-ly",
]


@pytest.mark.parametrize("texts", [
    [p for p, _ in AU_BANK] + au_prompts(PromptConfig()),
    [p for p, _ in REFERENCE_BANK],
    class_prompts(PromptConfig(), ["neutral", "pain", "stress", "ambivalence"])
    + class_prompts(PromptConfig(), ["neutral", "pain"], negative=True),
    ODD,
], ids=["au", "reference", "classes", "odd"])
def test_token_count_equals_open_clip(texts):
    from open_clip import SimpleTokenizer

    reference = SimpleTokenizer()
    got = [count_tokens(t) for t in texts]
    assert got == [len(reference.encode(t)) + 2 for t in texts]
    assert max(got) > 2
