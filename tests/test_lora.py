"""LoRA healing (train --lora RANK): only the adapters train, the loss falls, the final folder is a
plain model with them merged (or the untouched base plus peft's adapter folder), a resumed run ends
where an uninterrupted one does, distillation works with it, and what it cannot combine with is
refused in one line."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from conftest import make_data_dir, make_tokenizer, save_tiny
from inheritune.commands.export import export
from inheritune.commands.train import train
from inheritune.data.shards import open_data
from inheritune.errors import InherituneError
from inheritune.evaluation.val_loss import val_loss
from inheritune.models.loading import load_model

FAST = dict(seq_len=32, batch_size=4, lr=1e-2, precision="fp32", progress=False)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    tok = make_tokenizer()
    model = save_tiny(root / "model", "llama", layers=2, tok=tok)
    data = make_data_dir(root / "data", tok, n_docs=150, val_docs=15)
    return root, model, data


def test_adapters_alone_train_and_merge_into_a_plain_folder(setup):
    root, model, data = setup
    result = train(model, data, root / "merged", steps=16, eval_every=8, lora=8, **FAST)
    assert result.final_val_loss < result.val_history[0].val_loss - 0.1
    config = json.loads((root / "merged" / "config.json").read_text())
    assert 0 < config["trainable_parameters"] <= 0.5 * config["parameters"]  # tiny model: adapters are a large share
    weights = load_file(root / "merged" / "final" / "model.safetensors")
    assert not any("lora" in k or "base_layer" in k for k in weights)  # merged: a plain folder
    start, final = load_model(model), load_model(result.model_dir)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(start.state_dict()[q], final.state_dict()[q])  # the merge changed the weights
    assert torch.equal(start.state_dict()["model.norm.weight"], final.state_dict()["model.norm.weight"])  # frozen
    assert val_loss(final, open_data(data), batch_size=4)["loss"] == pytest.approx(result.final_val_loss, abs=1e-4)
    card = (result.model_dir / "README.md").read_text()
    assert "LoRA adapters of rank 8" in card


def test_the_result_measures_what_training_holds_and_lora_holds_a_fraction(setup):
    """Gradients and AdamW's two moments, read off the tensors: 4 + 8 bytes per trainable fp32 parameter
    (plus AdamW's step counters), so adapters hold a small share of what full fine-tuning holds."""
    root, model, data = setup
    runs = {name: train(model, data, root / f"mem-{name}", steps=2, **FAST, **extra)
            for name, extra in (("full", {}), ("lora", {"lora": 2}))}
    for name, result in runs.items():
        memory = result.memory
        assert memory.gradient_bytes == 4 * memory.trainable_parameters, name
        assert 8 * memory.trainable_parameters <= memory.optimizer_bytes <= 8 * memory.trainable_parameters + 2**12
        assert memory.peak_bytes > memory.weight_bytes > 0
        assert json.loads((root / f"mem-{name}" / "result.json").read_text())["memory"]["optimizer_bytes"] == \
            memory.optimizer_bytes
    full, lora = runs["full"].memory, runs["lora"].memory
    assert full.trainable_parameters == sum(p.numel() for p in load_model(model).parameters())
    assert lora.training_bytes < 0.5 * full.training_bytes
    assert lora.weight_bytes > full.weight_bytes  # the frozen weights stay, the adapters come on top


def test_kept_apart_the_base_is_untouched_and_the_folder_loads_as_the_trained_model(setup, tmp_path):
    """--no-lora-merge: the folder's weights are the untouched base, peft's adapters sit in adapter/, and
    every command that loads the folder (eval, export, a further train) gets the adapters merged back."""
    from peft import PeftModel

    root, model, data = setup
    result = train(model, data, root / "apart", steps=8, lora=4, lora_targets="q_proj,v_proj", lora_merge=False,
                   **FAST)
    start = load_model(model)
    base = load_file(result.model_dir / "model.safetensors")
    assert all(torch.equal(v, start.state_dict()[k]) for k, v in base.items())
    adapted = PeftModel.from_pretrained(start, str(result.model_dir / "adapter")).merge_and_unload()
    assert val_loss(adapted, open_data(data), batch_size=4)["loss"] == pytest.approx(result.final_val_loss, abs=1e-4)
    loaded = load_model(result.model_dir)
    assert val_loss(loaded, open_data(data), batch_size=4)["loss"] == pytest.approx(result.final_val_loss, abs=1e-4)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(loaded.state_dict()[q], base[q])
    exported = export(result.model_dir, gguf=tmp_path / "apart.gguf", type="f32")
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="apart.gguf")
    assert torch.allclose(back.state_dict()[q], loaded.state_dict()[q], atol=1e-6) and exported.tensors > 0


def test_a_resumed_lora_run_ends_where_an_uninterrupted_one_does(setup):
    root, model, data = setup
    whole = train(model, data, root / "whole", steps=6, checkpoint_every=2, lora=4, **FAST)
    cut = root / "cut"
    shutil.copytree(root / "whole", cut)
    for gone in ("result.json", "final", "checkpoints/step-0000006"):  # as if killed after step 4's checkpoint
        path = cut / gone
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert (cut / "checkpoints" / "step-0000004").is_dir()
    resumed = train(model, data, cut, steps=6, checkpoint_every=2, lora=4, resume=True, **FAST)
    assert resumed.final_val_loss == pytest.approx(whole.final_val_loss, abs=1e-6)


def test_lora_heals_by_distillation_too_through_the_teacher_cache(setup):
    """The teacher's states computed once (cold), then read (warm): the same adapters learn the same."""
    root, model, data = setup
    teacher = save_tiny(root / "teacher", "llama", layers=3, seed=5, tok=make_tokenizer())
    kd = dict(steps=12, lora=8, distill_from=str(teacher), teacher_states="top:8", **FAST)
    plain = train(model, data, root / "kd", teacher_cache="off", **kd)
    assert plain.final_val_loss < plain.val_history[0].val_loss
    cold = train(model, data, root / "kd-cold", teacher_cache=str(root / "cache"), **kd)
    warm = train(model, data, root / "kd-warm", teacher_cache=str(root / "cache"), **kd)
    assert cold.teacher_cache.windows_computed > 0 and cold.teacher_cache.windows_read == 0
    assert warm.teacher_cache.windows_computed == 0 and warm.teacher_cache.windows_read > 0
    for run in (cold, warm):
        assert run.final_val_loss == pytest.approx(plain.final_val_loss, abs=1e-5)


@pytest.mark.parametrize("options,message", [
    ({"lora": -1}, "lora must be a rank >= 1"),
    ({"lora": 4, "train_blocks": "last:1"}, "give one of them"),
    ({"lora": 4, "fsdp": True}, "lora with fsdp is not supported"),
    ({"lora": 4, "lora_targets": "nonexistent_proj"}, "'nonexistent_proj': llama has no module named nonexistent_proj"),
    ({"lora": 4, "lora_targets": "q_proj,,v_proj"}, "must be all-linear or module names"),
    ({"lora": 4, "lora_targets": "lm_head"}, "lm_head is an embedding or the LM head"),
    ({"lora": 4, "lora_targets": "q_proj,embed_tokens"}, "model.embed_tokens is an embedding or the LM head"),
    ({"lora_merge": False}, "lora_merge is set but lora is 0"),
    ({"lora_targets": "q_proj"}, "lora_targets is set but lora is 0"),
])
def test_what_lora_cannot_do_is_refused_in_one_line(setup, options, message):
    root, model, data = setup
    out = root / f"bad-{'-'.join(map(str, options.values()))}"
    with pytest.raises(InherituneError, match=message) as e:
        train(model, data, out, steps=2, **(FAST | options))
    assert "\n" not in str(e.value) and not out.exists()
