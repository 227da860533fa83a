"""derive: bit-for-bit inheritance for every family, init ablations, reload without inheritune."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import FAMILY_NAMES, save_tiny, tiny_model
from inheritune import inherit
from inheritune.models.families import FAMILIES, module
from inheritune.models.loading import save_model
from inheritune.models.surgery import parse_layers

L = 5


def _state(m, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in m.state_dict().items() if k.startswith(prefix)}


def _assert_equal_modules(a, b, path):
    sa, sb = module(a, path).state_dict(), module(b, path).state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{path}.{k} differs"


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_derive_copies_first_blocks_bit_for_bit(family, tmp_path, tokenizer):
    ref = tiny_model(family, L)
    fam = FAMILIES[ref.config.model_type]
    small = inherit(ref, layers=3)
    assert small.config.num_hidden_layers == 3
    assert len(small.get_submodule(fam.blocks)) == 3
    for i in range(3):
        _assert_equal_modules(small, ref, f"{fam.blocks}.{i}")
    for path in (fam.embed, fam.final_norm, fam.head, fam.pos_embed):
        if path:
            _assert_equal_modules(small, ref, path)
    for key in fam.layer_lists:
        if getattr(ref.config, key, None) is not None:
            assert getattr(small.config, key) == getattr(ref.config, key)[:3]

    save_model(small, tokenizer, tmp_path / "small")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "small")
    for k, v in small.state_dict().items():
        assert torch.equal(reloaded.state_dict()[k], v), k
    text = "The cat sat on the mat. The dog ran."
    assert AutoTokenizer.from_pretrained(tmp_path / "small").encode(text) == tokenizer.encode(text)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_full_depth_derivation_gives_identical_logits(family):
    ref = tiny_model(family, L)
    full = inherit(ref, layers=L)
    ids = torch.randint(0, ref.config.vocab_size, (2, 12))
    with torch.no_grad():
        assert torch.equal(full(ids).logits, ref(ids).logits)


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("init", ["attention", "mlp", "none"])
def test_partial_init_copies_only_the_named_parts(family, init):
    ref = tiny_model(family, L)
    fam = FAMILIES[ref.config.model_type]
    small = inherit(ref, layers=2, init=init, seed=7)
    copied = {"attention": fam.attn_parts, "mlp": fam.mlp_parts, "none": ()}[init]
    fresh = {"attention": fam.mlp_parts, "mlp": fam.attn_parts, "none": fam.attn_parts + fam.mlp_parts}[init]
    block = f"{fam.blocks}.1"
    for part in copied:
        _assert_equal_modules(small, ref, f"{block}.{part}")
    # Fresh parts differ wherever the family initialises them randomly (norm weights start at 1 in both).
    weights = [(k, v) for part in fresh for k, v in _state(small, f"{block}.{part}.").items() if v.dim() == 2]
    assert weights, f"no fresh matrices found for {family}/{init}"
    for k, v in weights:
        ref_v = None
        for part in fresh:
            ref_v = _state(ref, f"{block}.{part}.").get(k, ref_v)
        assert ref_v is not None and not torch.equal(v, ref_v), f"{k} was copied but should be fresh"


def test_explicit_layer_list_copies_in_order():
    ref = tiny_model("llama", 6)
    small = inherit(ref, layers="0-1,4")
    for new_i, ref_i in enumerate([0, 1, 4]):
        new, old = small.model.layers[new_i].state_dict(), ref.model.layers[ref_i].state_dict()
        assert all(torch.equal(new[k], old[k]) for k in old)
    assert small.config.num_hidden_layers == 3


def test_derivation_is_reproducible_for_a_seed():
    ref = tiny_model("gpt2", L)
    a, b = inherit(ref, 2, init="attention", seed=3), inherit(ref, 2, init="attention", seed=3)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])


@pytest.mark.parametrize(
    "spec, message",
    [(0, "out of range"), (6, "out of range"), ("0-2,9", "out of range"), ("0,1,1", "repeated"), ("a-b", "cannot parse")],
)
def test_bad_layer_specs(spec, message):
    from inheritune import InherituneError

    with pytest.raises(InherituneError, match=message):
        parse_layers(spec, 5)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "inheritune", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_derive_writes_a_loadable_folder(tmp_path):
    ref = save_tiny(tmp_path / "ref", "qwen2", L)
    out = tmp_path / "small"
    r = _cli("derive", str(ref), "--layers", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    # Loads in a fresh interpreter with no inheritune import.
    code = f"from transformers import AutoModelForCausalLM as A; print(A.from_pretrained({str(out)!r}).config.num_hidden_layers)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "2"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def _assert_one_line_error(r, needle):
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert needle in lines[0], lines[0]


def test_cli_bad_inputs_fail_cleanly(tmp_path):
    ref = save_tiny(tmp_path / "ref", "llama", L)
    out = tmp_path / "out"
    _assert_one_line_error(_cli("derive", str(ref), "--layers", "0", "--out", str(out)), "out of range")
    _assert_one_line_error(_cli("derive", str(ref), "--layers", "9", "--out", str(out)), "out of range")
    _assert_one_line_error(_cli("derive", str(ref), "--layers", "0,0", "--out", str(out)), "repeated")
    _assert_one_line_error(_cli("derive", str(tmp_path / "nope"), "--layers", "2", "--out", str(out)), "no such")
    (tmp_path / "empty").mkdir()
    _assert_one_line_error(_cli("derive", str(tmp_path / "empty"), "--layers", "2", "--out", str(out)), "not a model folder")
    assert not out.exists()

    # A truncated safetensors file and a truncated gguf file.
    weights = ref / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    _assert_one_line_error(_cli("derive", str(ref), "--layers", "2", "--out", str(out)), "could not load model")
    bad_gguf = tmp_path / "broken.gguf"
    bad_gguf.write_bytes(b"GGUF" + b"\x00" * 64)
    _assert_one_line_error(_cli("derive", str(bad_gguf), "--layers", "2", "--out", str(out)), "could not load")
    assert not out.exists()


def test_cli_refuses_to_overwrite_and_keeps_existing_files(tmp_path):
    ref = save_tiny(tmp_path / "ref", "gpt2", L)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    _assert_one_line_error(_cli("derive", str(ref), "--layers", "2", "--out", str(out)), "--overwrite")
    assert (out / "keep.txt").read_text() == "precious"
    # A failing derive with --overwrite leaves the old contents too.
    _assert_one_line_error(_cli("derive", str(ref), "--layers", "7", "--out", str(out), "--overwrite"), "out of range")
    assert (out / "keep.txt").read_text() == "precious"
    r = _cli("derive", str(ref), "--layers", "2", "--out", str(out), "--overwrite")
    assert r.returncode == 0, r.stderr
    assert not (out / "keep.txt").exists() and (out / "config.json").exists()


def test_unsupported_architecture_names_the_supported_ones():
    from transformers import BertConfig, BertLMHeadModel

    from inheritune import InherituneError

    model = BertLMHeadModel(BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=32, is_decoder=True))
    with pytest.raises(InherituneError, match="supported: .*llama"):
        inherit(model, 1)
