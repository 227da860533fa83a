"""References are loaded as they are or refused in one line: weights that do not match their
config, custom code, pickles; and weights-only folders (no tokenizer) derive for every family."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import FAMILY_NAMES, VOCAB, make_data_dir, make_tokenizer, save_tiny, tiny_model
from inheritune.cli import main
from inheritune.errors import InherituneError
from inheritune.models.loading import has_tokenizer, load_model, load_tokenizer

LAYER_KEY = {"gpt2": "transformer.h.4.attn.c_attn.bias", "llama": "model.layers.4.input_layernorm.weight",
             "opt": "model.decoder.layers.4.fc1.bias"}


def _cli_error(capsys, *argv) -> str:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "\x1b" not in err, err
    return err.strip()


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _deeper_config(folder: Path, family: str, layers: int) -> None:
    """Make config.json name ``layers`` blocks while the weights keep theirs."""
    key = "n_layer" if family == "gpt2" else "num_hidden_layers"
    _edit_config(folder, **{key: layers})


@pytest.mark.parametrize("family", sorted(LAYER_KEY))
def test_config_with_more_layers_than_the_weights_is_refused(family, tmp_path, capsys, tokenizer):
    ref = save_tiny(tmp_path / "ref", family, layers=4, tok=tokenizer)
    _deeper_config(ref, family, 6)
    err = _cli_error(capsys, "derive", ref, "--layers", "6", "--out", tmp_path / "out")
    assert f"{LAYER_KEY[family]} is missing from {ref / 'model.safetensors'}" in err
    assert "the config names 6 layers, the file holds 4" in err
    assert not (tmp_path / "out").exists()
    # even the layers the file does hold are not derived from a lying folder
    _cli_error(capsys, "derive", ref, "--layers", "2", "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_config_with_fewer_layers_than_the_weights_is_refused(tmp_path, capsys, tokenizer):
    ref = save_tiny(tmp_path / "ref", "llama", layers=6, tok=tokenizer)
    _deeper_config(ref, "llama", 4)
    err = _cli_error(capsys, "derive", ref, "--layers", "2", "--out", tmp_path / "out")
    assert "model.layers.4." in err and "the config implies no such tensor" in err
    assert "the config names 4 layers, the file holds 6" in err


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_one_edited_size_is_refused_naming_tensor_and_shapes(family, tmp_path, capsys, tokenizer):
    ref = save_tiny(tmp_path / "ref", family, layers=3, tok=tokenizer)
    weights = load_file(ref / "model.safetensors")
    key = "model.layers.1.self_attn.q_proj.weight" if family == "llama" else "transformer.h.1.mlp.c_fc.weight"
    shape = list(weights[key].shape)
    weights[key] = weights[key][:-4].contiguous()
    save_file(weights, ref / "model.safetensors", metadata={"format": "pt"})
    edited = [shape[0] - 4, *shape[1:]]
    err = _cli_error(capsys, "derive", ref, "--layers", "2", "--out", tmp_path / "out")
    assert f"{key} has shape {edited} in {ref / 'model.safetensors'} but the config implies {shape}" in err


def test_sharded_weights_name_the_shard_or_index(tmp_path, tokenizer):
    ref = tmp_path / "ref"
    tiny_model("llama", 4).save_pretrained(ref, max_shard_size="20KB")
    tokenizer.save_pretrained(ref)
    assert (ref / "model.safetensors.index.json").is_file()
    load_model(ref)  # a good sharded folder loads
    _deeper_config(ref, "llama", 5)
    with pytest.raises(InherituneError, match=r"model\.layers\.4\.\S+ is missing from .*model\.safetensors\.index\.json"):
        load_model(ref)


def test_matching_folders_of_every_family_load_unchanged(tmp_path):
    for family in FAMILY_NAMES:
        model = tiny_model(family, 2)
        model.save_pretrained(tmp_path / family)
        loaded = load_model(tmp_path / family)
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), (family, key)


def test_custom_code_names_the_flag(tmp_path, capsys, tokenizer):
    ref = save_tiny(tmp_path / "ref", "llama", layers=2, tok=tokenizer)
    _edit_config(ref, model_type="my_arch", auto_map={"AutoConfig": "configuration_my.MyConfig",
                                                      "AutoModelForCausalLM": "modeling_my.MyForCausalLM"})
    expected = f"{ref} runs custom code (auto_map in config.json): pass --trust-remote-code if you trust it"
    with pytest.raises(InherituneError) as e:
        load_model(ref)
    assert str(e.value) == expected
    for argv in (["derive", ref, "--layers", "1", "--out", tmp_path / "o"],
                 ["analyze", ref, "--data", tmp_path / "d", "--out", tmp_path / "o"],
                 ["induction", ref, "--out", tmp_path / "o"]):
        assert _cli_error(capsys, *argv) == f"inheritune: error: {expected}"


def test_auto_map_with_a_known_architecture_loads_without_the_flag(tmp_path, tokenizer):
    ref = save_tiny(tmp_path / "ref", "llama", layers=2, tok=tokenizer)
    _edit_config(ref, auto_map={"AutoModelForCausalLM": "modeling_my.MyForCausalLM"})
    assert load_model(ref).config.num_hidden_layers == 2


class Gadget:  # pickled by reference: torch's weights-only unpickler refuses it
    pass


def test_a_refused_pickle_is_one_clean_line(tmp_path, capsys, tokenizer):
    ref = save_tiny(tmp_path / "ref", "llama", layers=2, tok=tokenizer)
    (ref / "model.safetensors").unlink()
    state = collections.OrderedDict(tiny_model("llama", 2).state_dict())
    state["gadget"] = Gadget()
    torch.save(state, ref / "pytorch_model.bin")
    err = _cli_error(capsys, "derive", ref, "--layers", "1", "--out", tmp_path / "out")
    assert "holds objects other than tensors" in err and "convert it to safetensors" in err


# --- weights-only folders --------------------------------------------------------------------------

def _weights_only(path: Path, family: str, layers: int = 3) -> Path:
    tiny_model(family, layers).save_pretrained(path)
    return path


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_weights_only_folders_derive_for_every_family(family, tmp_path, capsys):
    ref = _weights_only(tmp_path / "ref", family)
    assert not has_tokenizer(ref)
    capsys.readouterr()
    assert main(["derive", str(ref), "--layers", "2", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"{ref} has no tokenizer: {tmp_path / 'out'} holds weights only (attach one with --tokenizer REF)" in out
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "out").config.num_hidden_layers == 2
    assert not has_tokenizer(tmp_path / "out")


def test_tokenizer_attaches_one(tmp_path, tokenizer, capsys):
    ref = _weights_only(tmp_path / "ref", "llama")
    source = tmp_path / "tok"
    tokenizer.save_pretrained(source)
    assert main(["derive", str(ref), "--layers", "2", "--out", str(tmp_path / "out"), "--tokenizer", str(source)]) == 0
    assert "no tokenizer" not in capsys.readouterr().out
    text = "The cat sat on the mat."
    assert AutoTokenizer.from_pretrained(tmp_path / "out").encode(text) == tokenizer.encode(text)


def test_a_tokenizer_too_big_for_the_model_is_refused(tmp_path, capsys):
    ref = _weights_only(tmp_path / "ref", "llama")
    big = tmp_path / "big"
    tok = make_tokenizer(VOCAB + 40)
    assert len(tok) > VOCAB
    tok.save_pretrained(big)
    err = _cli_error(capsys, "derive", ref, "--layers", "2", "--out", tmp_path / "out", "--tokenizer", big)
    assert f"the tokenizer of {big} has {len(tok)} tokens but the model embeds only {VOCAB}" in err


def test_commands_that_need_a_tokenizer_say_so(tmp_path, capsys):
    ref = _weights_only(tmp_path / "ref", "llama")
    with pytest.raises(InherituneError, match="has no tokenizer .*--tokenizer REF"):
        load_tokenizer(ref)
    assert load_tokenizer(ref, required=False) is None
    text = tmp_path / "t.txt"
    text.write_text("The cat sat on the mat. " * 50)
    for argv in (["analyze", ref, "--text", text, "--out", tmp_path / "a"],
                 ["importance", ref, "--text", text, "--out", tmp_path / "i"]):
        err = _cli_error(capsys, *argv)
        assert f"{ref} has no tokenizer" in err and "--tokenizer REF" in err
    assert main(["analyze", str(ref), "--text", str(text), "--out", str(tmp_path / "a2"), "--sequences", "2",
                 "--seq-len", "16", "--tokenizer", str(_tokenizer_folder(tmp_path))]) == 0


def _tokenizer_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tokenizer"
    if not folder.exists():
        make_tokenizer().save_pretrained(folder)
    return folder


def test_weights_only_analyze_prune_and_induction_work(tmp_path, tokenizer, capsys):
    ref = _weights_only(tmp_path / "ref", "llama")
    data = make_data_dir(tmp_path / "data", tokenizer, n_docs=40, val_docs=20)
    capsys.readouterr()
    assert main(["analyze", str(ref), "--data", str(data), "--out", str(tmp_path / "a"),
                 "--sequences", "4", "--seq-len", "16"]) == 0
    assert f"{ref} has no tokenizer" in capsys.readouterr().out
    assert json.loads((tmp_path / "a" / "analysis.json").read_text())["model"] == str(ref)
    assert main(["prune", str(ref), "--data", str(data), "--out", str(tmp_path / "p"), "--examples", "2",
                 "--seq-len", "16", "--heads", "25"]) == 0
    assert "the output holds weights only" in capsys.readouterr().out
    assert not has_tokenizer(tmp_path / "p") and (tmp_path / "p" / "model.safetensors").is_file()
    assert main(["induction", str(ref), "--out", str(tmp_path / "i"), "--seeds", "2", "--seg-len", "6"]) == 0
    assert "come from its config" in capsys.readouterr().out
