"""GGUF export: every family of the family table either writes a GGUF file that transformers' own
GGUF loader reads back to the same logits (f32 exactly, f16/bf16/q8_0 within their rounding), or is
refused in one line; the tokenizer travels with it; a failed export leaves no file behind."""
from __future__ import annotations

import json
import subprocess
import sys

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3TextConfig, Qwen3Config

from conftest import generated_text, make_tokenizer, save_tiny, tiny_model
from inheritune.commands.export import export
from inheritune.errors import InherituneError
from inheritune.models.families import FAMILIES
from inheritune.models.gguf_export import export_gguf
from inheritune.models.width_cut import cut, geometry, plan

EXPORTED = sorted(name for name, family in FAMILIES.items() if not isinstance(family.gguf, str))
NO_READER = {"gpt_neox"}  # transformers has no GGUF reader for it: checked against the file (and llama.cpp's logits
#                           in benchmarks/bench_llamacpp.py)
READ_BACK = sorted(set(EXPORTED) - NO_READER)
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")  # Llama 3's tokenizer.json
REFUSED = sorted(name for name, family in FAMILIES.items() if isinstance(family.gguf, str))
TOLERANCE = {"f32": 1e-5, "f16": 2e-3, "bf16": 2e-2, "q8_0": 3e-2}  # max |logit difference| on the tiny models


def _qwen3():
    config = Qwen3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=128, max_position_embeddings=256)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


def _gemma3(layers: int = 6, **changes):
    """Transformers' GGUF reader takes Gemma 3's attention scale as 1/sqrt(256) and every 6th layer as
    global, so the round trip needs 256-wide heads and that order (llama.cpp reads both from the file)."""
    config = Gemma3TextConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=256, query_pre_attn_scalar=256,
                              sliding_window=16, max_position_embeddings=256, **changes)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


def _reader_shaped(family: str):
    """A tiny model of a shape transformers' GGUF reader reads back: it takes GPT-2's positions as 1,024
    and Phi-3's padding id as 32,000 whatever the file says (llama.cpp reads both from the file)."""
    model = tiny_model(family, 3)
    if family == "gpt2":
        positions = torch.nn.Embedding(1024, model.config.n_embd)
        positions.weight.data[:128] = model.transformer.wpe.weight.data
        model.transformer.wpe, model.config.n_positions = positions, 1024
    if family == "phi3":
        model.resize_token_embeddings(32064)
    return model


def _model(family: str):
    return {"qwen3": _qwen3, "gemma3_text": _gemma3}.get(family, lambda: _reader_shaped(family))()


def _reloaded(folder, name):
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=name).eval()


def test_every_family_is_exportable_or_refused_with_a_reason():
    assert {"llama", "mistral", "qwen2", "qwen3", "gemma3_text", "phi3", "gpt2", "gpt_neox"} <= set(EXPORTED)
    assert all(len(FAMILIES[name].gguf) > 20 for name in REFUSED)  # a reason a user can act on


@pytest.mark.parametrize("kind", ["f32", "f16", "bf16", "q8_0"])
@pytest.mark.parametrize("family", READ_BACK)
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


def test_gpt_neox_is_written_as_llama_cpp_reads_it(tmp_path):
    """No GGUF reader in transformers: the file itself is checked. Every tensor is the model's, bit for bit,
    once the fused [q|k|v]-per-head rows are put back in the model's order; the rotary share (Pythia: a
    quarter of each head) and the parallel residual are stated."""
    from transformers import GPTNeoXConfig

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(GPTNeoXConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=256, rotary_pct=0.25, use_parallel_residual=True))
    export_gguf(model, make_tokenizer(), tmp_path / "n.gguf", "f32")
    reader = gguf.GGUFReader(tmp_path / "n.gguf")
    assert reader.fields["gptneox.rope.dimension_count"].parts[-1][0] == 4  # 16-wide heads, a quarter turns
    assert bool(reader.fields["gptneox.use_parallel_residual"].parts[-1][0])
    assert reader.fields["gptneox.attention.layer_norm_epsilon"].parts[-1][0] == pytest.approx(1e-5)
    tensors = {t.name: np.array(t.data).reshape(list(reversed(t.shape.tolist()))) for t in reader.tensors}
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    qkv = tensors["blk.1.attn_qkv.weight"]
    back = qkv.reshape(3, 4, 16, 64).swapaxes(0, 1).reshape(192, 64)  # every head's q, k, v together again
    assert np.array_equal(back, state["gpt_neox.layers.1.attention.query_key_value.weight"])
    assert not np.array_equal(qkv, back)  # the order did change
    assert np.array_equal(tensors["output.weight"], state["lm_head.weight"])  # its own LM head, untied
    assert np.array_equal(tensors["blk.0.ffn_up.bias"], state["gpt_neox.layers.0.mlp.dense_h_to_4h.bias"])
    assert len(tensors) == len([k for k in state if "rotary" not in k and not k.endswith("masked_bias")])


def test_smaller_types_make_smaller_files(tmp_path):
    model = tiny_model("llama", 3)
    sizes = {kind: export_gguf(model, None, tmp_path / f"{kind}.gguf", kind).bytes for kind in ("f32", "f16", "q8_0")}
    assert sizes["f32"] > sizes["f16"] > sizes["q8_0"]


# A width cut transformers' GGUF reader cannot take: it assumes GPT-2's FFN is 4 x n_embd (llama.cpp reads the file's
# width, checked in benchmarks/bench_llamacpp.py).
READER_ASSUMES = {("gpt2", "ffn")}


def _narrowed(family: str, heads_percent: int):
    """The family's tiny model with half its FFN neurons and ``heads_percent`` of its key/value groups cut
    out of every block (prune --width-*); families whose heads are hidden_size / heads wide keep their heads."""
    model = _model(family).eval()
    heads, _, _, neurons = geometry(model.config)
    layers = model.config.num_hidden_layers
    rng = np.random.default_rng(0)
    return cut(model, plan(model.config, rng.random((layers, heads)), rng.random((layers, neurons)), heads_percent,
                           50, "group")).eval()


@pytest.mark.parametrize("family, what", [(f, "ffn") for f in EXPORTED] + [  # a family whose heads are
    (f, "heads") for f in EXPORTED if FAMILIES[f].head_width is not None])   # hidden_size / heads wide keeps them all
def test_a_width_cut_states_its_narrower_shapes_and_reloads_where_the_reader_can(tmp_path, family, what):
    """prune --width-*: fewer key/value groups (so heads are no longer hidden_size / heads wide) or fewer FFN
    neurons in every block. The file states the widths llama.cpp reads (head count, key/value width, rotary
    width, FFN width) and holds the narrower tensors; where transformers' reader takes them, logits match."""
    narrow = _narrowed(family, 50 if what == "heads" else 0)
    if what == "heads" and FAMILIES[family].gguf.query_is_hidden:  # llama.cpp's loader for it cannot take one
        with pytest.raises(InherituneError, match=rf"reads a {family} query projection as hidden_size \(32\) wide, not 2 heads x 8: "):
            export_gguf(narrow, None, tmp_path / "w.gguf", "f32")
        assert not list(tmp_path.iterdir())
        return
    heads, kv_heads, width, ffn = geometry(narrow.config)
    full = geometry(_model(family).config)
    assert (heads, kv_heads, width, ffn) == (full[0] // (2 if what == "heads" else 1),
                                             full[1] // (2 if what == "heads" else 1), full[2], full[3] // 2)
    written = export_gguf(narrow, None, tmp_path / "w.gguf", "f32")
    fields = gguf.GGUFReader(tmp_path / "w.gguf").fields
    arch = written.arch
    assert fields[f"{arch}.feed_forward_length"].parts[-1][0] == ffn
    assert fields[f"{arch}.attention.head_count"].parts[-1][0] == heads
    assert fields[f"{arch}.attention.head_count_kv"].parts[-1][0] == kv_heads
    for key in FAMILIES[family].gguf.head_width_keys:
        share = 0.25 if family == "gpt_neox" and key == "rope.dimension_count" else 1  # the test model's rotary_pct
        assert fields[f"{arch}.{key}"].parts[-1][0] == int(width * share), key
    if family in NO_READER or (family, what) in READER_ASSUMES:
        return
    back = _reloaded(tmp_path, "w.gguf")
    tokens = torch.randint(0, narrow.config.vocab_size, (1, 16))
    with torch.no_grad():
        assert torch.allclose(narrow(tokens).logits, back(tokens).logits, atol=1e-5)


def test_the_tokenizer_travels_with_the_weights(tmp_path):
    tok = make_tokenizer()
    export_gguf(tiny_model("llama", 2), tok, tmp_path / "t.gguf", "f16")
    back = AutoTokenizer.from_pretrained(tmp_path, gguf_file="t.gguf")
    for text in generated_text(5, seed=9):
        assert back(text)["input_ids"] == tok(text)["input_ids"]
    assert back.eos_token_id == tok.eos_token_id


def _byte_level(pre_tokenizer):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    tok.train_from_iterator(generated_text(50, seed=1), trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


@pytest.mark.parametrize("steps,name", [
    (lambda p: p.ByteLevel(add_prefix_space=False), "gpt-2"),
    (lambda p: p.Sequence([p.Digits(individual_digits=True), p.ByteLevel(add_prefix_space=False)]), "smollm"),
    (lambda p: p.Sequence([p.Split(__import__("tokenizers").Regex(_LLAMA3), "isolated"),
                           p.ByteLevel(add_prefix_space=False, use_regex=False)]), "llama-bpe"),
])
def test_the_file_names_llama_cpps_splitting_of_the_text(tmp_path, steps, name):
    """llama.cpp splits text before merging by regexes it holds by name: the file names the one this
    tokenizer's pre-tokenizer is (SmolLM2 splits digits apart, Llama 3 has its own regex)."""
    from tokenizers import pre_tokenizers

    tok = _byte_level(steps(pre_tokenizers))
    export_gguf(tiny_model("llama", 1), tok, tmp_path / "t.gguf", "f32")
    field = gguf.GGUFReader(tmp_path / "t.gguf").fields["tokenizer.ggml.pre"]
    assert bytes(field.parts[-1]).decode() == name


def test_a_splitting_llama_cpp_does_not_know_is_refused_in_one_line(tmp_path):
    from tokenizers import pre_tokenizers

    tok = _byte_level(pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.ByteLevel()]))
    with pytest.raises(InherituneError, match="llama.cpp splits text in none of the ways") as e:
        export_gguf(tiny_model("llama", 1), tok, tmp_path / "t.gguf", "f32")
    assert "\n" not in str(e.value) and not list(tmp_path.iterdir())
    export_gguf(tiny_model("llama", 1), None, tmp_path / "t.gguf", "f32")  # --no-tokenizer: the weights alone


def test_a_sentencepiece_style_tokenizer_travels_too(tmp_path):
    """Gemma and Llama 2 spell spaces as U+2581 and fall back to byte tokens: GGUF's "llama" tokenizer,
    whose scores rank merges as the merge list does. It reads back splitting text the same, bytes included."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    trained = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    trained.pre_tokenizer = pre_tokenizers.Metaspace()
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    trained.train_from_iterator(generated_text(300, seed=123), trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<unk>", "<s>", "</s>", *byte_tokens], show_progress=False))
    spec = json.loads(trained.to_str())["model"]
    tok = LlamaTokenizer(vocab=spec["vocab"], merges=[tuple(m) for m in spec["merges"]],
                         unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    model = tiny_model("llama", 2)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    export_gguf(model, tok, tmp_path / "spm.gguf", "f16")
    fields = gguf.GGUFReader(tmp_path / "spm.gguf").fields
    assert bytes(fields["tokenizer.ggml.model"].parts[-1]).decode() == "llama"
    back = AutoTokenizer.from_pretrained(tmp_path, gguf_file="spm.gguf")
    for text in [*generated_text(5, seed=9), "  two  spaces, and bytes: é ü 😀"]:
        assert back(text)["input_ids"] == tok(text)["input_ids"], text
    assert "<0xC3>" in tok.convert_ids_to_tokens(tok("é")["input_ids"])  # the byte fallback was exercised


def test_gemma3_states_each_layers_window_so_chosen_blocks_keep_theirs(tmp_path):
    """A model of chosen Gemma 3 blocks need not have every 6th layer global: the file lists each
    layer's kind (llama.cpp reads the list), with the window, both rotary bases and Gemma's norm offset."""
    kinds = ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    model = _gemma3(4, layer_types=kinds)
    export_gguf(model, None, tmp_path / "g.gguf", "f32")
    reader = gguf.GGUFReader(tmp_path / "g.gguf")
    pattern = reader.fields["gemma3.attention.sliding_window_pattern"]
    assert [bool(pattern.parts[i][0]) for i in pattern.data] == [k == "sliding_attention" for k in kinds]
    assert reader.fields["gemma3.attention.sliding_window"].parts[-1][0] == 16
    assert reader.fields["gemma3.rope.freq_base_swa"].parts[-1][0] == 10000.0
    norm = next(t for t in reader.tensors if t.name == "blk.0.attn_norm.weight")
    assert np.allclose(norm.data, model.model.layers[0].input_layernorm.weight.detach().numpy() + 1)


def test_an_attention_scale_llama_cpp_cannot_state_is_refused(tmp_path):
    model = _gemma3(2, layer_types=["sliding_attention", "full_attention"])
    model.config.query_pre_attn_scalar = 128
    with pytest.raises(InherituneError, match="not query_pre_attn_scalar"):
        export_gguf(model, None, tmp_path / "x.gguf", "f32")
    assert not list(tmp_path.iterdir())


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
