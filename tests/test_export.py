"""GGUF export: every family of the family table either writes a GGUF file that transformers' own
GGUF loader reads back to the same logits (f32 exactly, f16/bf16/q8_0 within their rounding), or is
refused in one line; the tokenizer travels with it; a failed export leaves no file behind."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3Config

from conftest import generated_text, make_tokenizer, save_tiny, tiny_model
from inheritune.commands.export import export
from inheritune.errors import InherituneError
from inheritune.models.families import FAMILIES
from inheritune.models.gguf_export import export_gguf
from inheritune.models.width_cut import cut, geometry, plan

EXPORTED = sorted(name for name, family in FAMILIES.items() if not isinstance(family.gguf, str))
REFUSED = sorted(name for name, family in FAMILIES.items() if isinstance(family.gguf, str))
TOLERANCE = {"f32": 1e-5, "f16": 2e-3, "bf16": 2e-2, "q8_0": 3e-2}  # max |logit difference| on the tiny models


def _qwen3():
    config = Qwen3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=128, max_position_embeddings=256)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


def _model(family: str):
    return _qwen3() if family == "qwen3" else tiny_model(family, 3)


def _reloaded(folder, name):
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=name).eval()


def test_every_family_is_exportable_or_refused_with_a_reason():
    assert {"llama", "mistral", "qwen2", "qwen3"} <= set(EXPORTED)
    assert all(len(FAMILIES[name].gguf) > 20 for name in REFUSED)  # a reason a user can act on


@pytest.mark.parametrize("kind", ["f32", "f16", "bf16", "q8_0"])
@pytest.mark.parametrize("family", EXPORTED)
def test_export_reloads_through_transformers_with_the_same_logits(tmp_path, family, kind):
    model = _model(family).eval()
    written = export_gguf(model, make_tokenizer(), tmp_path / "m.gguf", kind)
    assert written.path.is_file() and written.tensors > 0 and not list(tmp_path.glob(".*"))
    back = _reloaded(tmp_path, "m.gguf")
    assert back.config.num_hidden_layers == model.config.num_hidden_layers
    tokens = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = (model(tokens).logits - back(tokens).logits).abs().max().item()
    assert difference <= TOLERANCE[kind], (family, kind, difference)


def test_smaller_types_make_smaller_files(tmp_path):
    model = tiny_model("llama", 3)
    sizes = {kind: export_gguf(model, None, tmp_path / f"{kind}.gguf", kind).bytes for kind in ("f32", "f16", "q8_0")}
    assert sizes["f32"] > sizes["f16"] > sizes["q8_0"]


def test_a_width_cut_with_fewer_kv_heads_and_explicit_head_width_exports(tmp_path):
    """prune --width-*: half the key/value groups and FFN neurons cut out of every block, so the
    heads are no longer hidden_size / heads wide; the file says their width and reloads exactly."""
    model = tiny_model("llama", 3).eval()
    heads, kv, _, neurons = geometry(model.config)
    rng = np.random.default_rng(0)
    width = plan(model.config, rng.random((3, heads)), rng.random((3, neurons)), 50, 50, "group")
    narrow = cut(model, width).eval()
    assert narrow.config.num_key_value_heads == kv // 2
    assert narrow.config.num_attention_heads * narrow.config.head_dim != narrow.config.hidden_size
    export_gguf(narrow, None, tmp_path / "w.gguf", "f32")
    back = _reloaded(tmp_path, "w.gguf")
    assert back.config.num_key_value_heads == narrow.config.num_key_value_heads
    tokens = torch.randint(0, narrow.config.vocab_size, (1, 16))
    with torch.no_grad():
        assert torch.allclose(narrow(tokens).logits, back(tokens).logits, atol=1e-5)


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_heads_the_gguf_reader_would_misread_are_refused(tmp_path, family):
    """Qwen's GGUF readers take a head's width from hidden_size / heads (qwen2) or as 128 (qwen3): a
    width cut's narrower heads could be written but not read back the same, so they are refused."""
    model = _model(family)
    config = model.config
    config.head_dim = (getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads) // 2
    with pytest.raises(InherituneError, match="cannot be read back"):
        export_gguf(model, None, tmp_path / "x.gguf", "f32")
    assert not list(tmp_path.iterdir())


def test_the_tokenizer_travels_with_the_weights(tmp_path):
    tok = make_tokenizer()
    export_gguf(tiny_model("llama", 2), tok, tmp_path / "t.gguf", "f16")
    back = AutoTokenizer.from_pretrained(tmp_path, gguf_file="t.gguf")
    for text in generated_text(5, seed=9):
        assert back(text)["input_ids"] == tok(text)["input_ids"]
    assert back.eos_token_id == tok.eos_token_id


@pytest.mark.parametrize("family", REFUSED)
def test_a_family_gguf_cannot_express_is_refused_in_one_line(tmp_path, family):
    with pytest.raises(InherituneError, match=f"model type {family} cannot be written") as e:
        export_gguf(tiny_model(family, 2), None, tmp_path / "x.gguf", "f16")
    assert "\n" not in str(e.value) and not list(tmp_path.iterdir())


def test_the_command_writes_a_folder_model_and_refuses_bad_input_in_one_line(tmp_path):
    folder = save_tiny(tmp_path / "model", "llama", 2, tok=make_tokenizer())
    result = export(folder, gguf=tmp_path / "m.gguf", type="q8_0")
    assert result.tokenizer and result.arch == "llama" and result.bytes == (tmp_path / "m.gguf").stat().st_size
    before = (tmp_path / "m.gguf").read_bytes()
    for argv, message in [
        ([str(folder), "--gguf", str(tmp_path / "m.gguf")], "exists; pass --overwrite"),
        ([str(folder), "--gguf", str(tmp_path / "m.bin")], "must end in .gguf"),
        ([str(folder), "--gguf", str(tmp_path / "x.gguf"), "--type", "q4"], "invalid choice"),
        ([str(tmp_path / "nothing"), "--gguf", str(tmp_path / "x.gguf")], "nothing"),
    ]:
        r = subprocess.run([sys.executable, "-m", "inheritune", "export", *argv], capture_output=True, text=True)
        assert r.returncode != 0 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    assert (tmp_path / "m.gguf").read_bytes() == before and not (tmp_path / "x.gguf").exists()


def test_a_failed_export_leaves_nothing_and_the_earlier_file_as_it_was(tmp_path, monkeypatch):
    from inheritune.models import gguf_export

    model = tiny_model("llama", 2)
    earlier = export_gguf(model, None, tmp_path / "m.gguf", "f32").path.read_bytes()

    def broken(*args, **kwargs):
        raise InherituneError("GGUF export: injected failure while writing tensors")

    monkeypatch.setattr(gguf_export, "_tensors", broken)
    with pytest.raises(InherituneError, match="injected"):
        export_gguf(model, None, tmp_path / "m.gguf", "q8_0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]
    assert (tmp_path / "m.gguf").read_bytes() == earlier
