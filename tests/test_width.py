"""Width pruning that ships smaller models (models/width_cut.py, analysis/width_ranking.py, prune --width-*):
the cut model is an ordinary, smaller folder that computes what the masked reference computes."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import FAMILY_NAMES, TINY_CONFIGS, VOCAB, make_data_dir, save_tiny, tiny_model
from inheritune import WidthPruneResult, prune
from inheritune.analysis.width_ranking import activation_scores, gradient_scores, masked, unit_scores
from inheritune.errors import InherituneError
from inheritune.models.families import blocks, family_of
from inheritune.models.budget import cut_within, ffn_percent_within, layers_within
from inheritune.models.surgery import stack_blocks
from inheritune.models.width_cut import cut, geometry, plan

HEAD_FAMILIES = [f for f in FAMILY_NAMES if family_of(TINY_CONFIGS[f](1)).head_width is not None]
NO_HEAD_FAMILIES = [f for f in FAMILY_NAMES if f not in HEAD_FAMILIES]


def random_plan(model, heads_pct: float, ffn_pct: float, unit: str, seed: int = 0):
    heads, _kv, _w, neurons = geometry(model.config)
    layers = model.config.num_hidden_layers
    rng = np.random.default_rng(seed)
    return plan(model.config, rng.random((layers, heads)), rng.random((layers, neurons)), heads_pct, ffn_pct, unit)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_cut_model_reloads_without_inheritune_and_matches_the_masked_one(family, tmp_path):
    model = tiny_model(family, layers=3)
    heads_pct = 50 if family in HEAD_FAMILIES else 0
    width = random_plan(model, heads_pct, 25, "query")
    ids = torch.randint(2, VOCAB, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(input_ids=ids).logits
        with masked(model, width):
            expected = model(input_ids=ids).logits
    small = cut(model, width)
    small.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # plain transformers: no inheritune code
    with torch.no_grad():
        got = reloaded(input_ids=ids).logits
    assert (full - expected).abs().max() > 1e-3  # the cut changes the function: the comparison below means something
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert sum(p.numel() for p in reloaded.parameters()) < sum(p.numel() for p in model.parameters())
    heads, kv, width_, neurons = geometry(reloaded.config)
    assert neurons == geometry(model.config)[3] * 3 // 4
    if heads_pct:
        assert (heads, kv, width_) == (geometry(model.config)[0] // 2, geometry(model.config)[1], geometry(model.config)[2])


@pytest.mark.parametrize("family", [f for f in HEAD_FAMILIES if f != "phi3"])
def test_whole_groups_are_cut_and_kept_weights_are_copied_bit_for_bit(family):
    model = tiny_model(family, layers=2)
    width = random_plan(model, 50, 50, "group", seed=3)
    small = cut(model, width)
    heads, kv, head_width, neurons = geometry(model.config)
    assert geometry(small.config)[:2] == (heads // 2, kv // 2)
    for layer, (big, little) in enumerate(zip(blocks(model), blocks(small))):
        group = heads // kv
        assert width.heads[layer] == [g * group + q for g in width.kv_heads[layer] for q in range(group)]
        rows = torch.tensor([h * head_width + j for h in width.kv_heads[layer] for j in range(head_width)])
        assert torch.equal(little.self_attn.k_proj.weight, big.self_attn.k_proj.weight[rows])
        cols = torch.tensor([h * head_width + j for h in width.heads[layer] for j in range(head_width)])
        assert torch.equal(little.self_attn.o_proj.weight, big.self_attn.o_proj.weight[:, cols])
        assert torch.equal(little.mlp.down_proj.weight, big.mlp.down_proj.weight[:, width.neurons[layer]])
        assert torch.equal(little.mlp.up_proj.weight, big.mlp.up_proj.weight[width.neurons[layer]])
        assert len(width.neurons[layer]) == neurons // 2
    assert torch.equal(small.get_input_embeddings().weight, model.get_input_embeddings().weight)


@pytest.mark.parametrize("family", NO_HEAD_FAMILIES)
def test_families_whose_config_cannot_express_fewer_heads_are_refused_in_one_line(family):
    model = tiny_model(family, layers=1)
    with pytest.raises(InherituneError, match="no head_dim.*--width-ffn") as error:
        random_plan(model, 50, 0, "query")
    assert "\n" not in str(error.value)


def test_cuts_that_remove_nothing_or_everything_are_refused():
    model = tiny_model("llama", layers=1)  # 4 query heads in 2 groups, 64 neurons
    with pytest.raises(InherituneError, match="removes 0"):
        random_plan(model, 10, 0, "group")
    with pytest.raises(InherituneError, match="removes 2.*keep at least one"):
        random_plan(model, 100, 0, "group")
    with pytest.raises(InherituneError, match="64 FFN neurons removes 64"):
        random_plan(model, 0, 100, "group")
    with pytest.raises(InherituneError, match="--head-unit"):
        random_plan(model, 50, 0, "rows")


def silence(model, layer: int, neuron: int, group: int) -> None:
    """Make one FFN neuron and one key/value group of ``layer`` output exactly zero."""
    block = blocks(model)[layer]
    _h, _kv, head_width, _n = geometry(model.config)
    with torch.no_grad():
        block.mlp.up_proj.weight[neuron] = 0.0
        block.self_attn.v_proj.weight[group * head_width:(group + 1) * head_width] = 0.0


@pytest.mark.parametrize("ranking", ["activation", "gradient"])
def test_both_rankings_cut_the_units_that_do_nothing_first(ranking):
    model = tiny_model("llama", layers=2)
    silence(model, layer=1, neuron=17, group=1)
    windows = torch.randint(2, VOCAB, (4, 16), generator=torch.Generator().manual_seed(1))
    head_scores, neuron_scores = unit_scores(model, windows, ranking)
    assert neuron_scores[1, 17] == 0 and (neuron_scores[1] > 0).sum() == neuron_scores.shape[1] - 1
    assert np.all(head_scores[1, 2:4] == 0) and np.all(head_scores[1, :2] > 0)  # group 1 = query heads 2, 3
    width = plan(model.config, head_scores, neuron_scores, 50, 100 / 64, "group")
    assert width.kv_heads[1] == [0] and 17 not in width.neurons[1] and len(width.neurons[1]) == 63


def test_activation_and_gradient_scores_have_the_model_shapes():
    model = tiny_model("gemma3_text", layers=2)
    windows = torch.randint(2, VOCAB, (2, 12), generator=torch.Generator().manual_seed(2))
    for heads, neurons in (activation_scores(model, windows), gradient_scores(model, windows)):
        assert heads.shape == (2, 4) and neurons.shape == (2, 64) and np.all(heads >= 0) and heads.sum() > 0


@pytest.fixture(scope="module")
def reference_and_data(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("width")
    return save_tiny(root / "ref", "llama", layers=2, tok=tokenizer), make_data_dir(root / "data", tokenizer)


def test_prune_width_writes_a_smaller_folder_with_its_losses(reference_and_data, tmp_path):
    ref, data = reference_and_data
    result = prune(ref, data=data, width_heads=50, width_ffn=50, out=tmp_path / "out", examples=4, seq_len=32)
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert geometry(saved.config)[:2] == (2, 1) and geometry(saved.config)[3] == 32
    assert isinstance(result, WidthPruneResult) and result.by == "activation"
    assert result.params["after"] == sum(p.numel() for p in saved.parameters()) < result.params["before"]
    # The saved weights score what the masked reference scored, on the val split.
    assert result.after["val"]["loss"] == pytest.approx(result.masked["val"]["loss"], abs=1e-5)
    assert result.after["val"]["loss"] != pytest.approx(result.before["val"]["loss"], abs=1e-4)
    report = json.loads((tmp_path / "out" / "prune.json").read_text())
    assert report == result.report() and all(len(kv) == 1 for kv in report["plan"]["kv_heads"])
    card = (tmp_path / "out" / "README.md").read_text()
    assert "library_name: transformers" in card and "2 of 4 query heads" in card


def test_prune_width_bad_input_is_one_line_and_writes_nothing(reference_and_data, tmp_path):
    ref, data = reference_and_data
    cases = [
        ["--width-heads", "50", "--heads", "10"],  # two kinds of pruning at once
        ["--width-ffn", "50", "--width-by", "magnitude"],
        ["--width-heads", "10"],  # removes no group
        ["--params", "0.5", "--budget-by", "tall"],
        ["--params", "0.5", "--budget-by", "width", "--by", "angular"],  # --by chooses blocks, width has none
        ["--params", "0.5", "--budget-by", "both", "--width-by", "magnitude"],
        ["--params", "0", "--budget-by", "both"],
        ["--params", "0.5", "--budget-by", "depth", "--width-ffn", "10"],
    ]
    for extra in cases:
        r = subprocess.run([sys.executable, "-m", "inheritune", "prune", str(ref), "--data", str(data),
                            "--out", str(tmp_path / "out"), *extra], capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (extra, r.stderr)
        assert not (tmp_path / "out").exists()


# ---- a parameter budget -----------------------------------------------------------------------------

def counted(model) -> int:
    """Non-embedding parameters counted on real weights (the budget module counts on the meta device)."""
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    return sum(p.numel() for p in model.parameters()) - embed.numel() - (0 if head is embed else head.numel())


@pytest.mark.parametrize("family", ["llama", "gpt2", "phi3", "gemma3_text"])
@pytest.mark.parametrize("share", [0.5, 0.7])
def test_a_budget_gives_the_largest_cut_model_within_it(family, share):
    full = tiny_model(family, layers=4)
    keep = layers_within(full.config, share)
    assert counted(tiny_model(family, layers=keep)) <= share * counted(full) < counted(tiny_model(family, layers=keep + 1))
    percent = ffn_percent_within(full.config, share)
    narrow = cut(full, random_plan(full, 0, percent, "group"))
    neurons = geometry(narrow.config)[3]
    assert counted(narrow) <= share * counted(full)
    wider = cut(full, plan(full.config, np.zeros((4, geometry(full.config)[0])),
                           np.arange(4 * geometry(full.config)[3]).reshape(4, -1), 0,
                           100 * (geometry(full.config)[3] - neurons - 1) / geometry(full.config)[3], "group"))
    assert counted(wider) > share * counted(full)  # one more neuron per block would break the budget


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3_text"])
def test_a_budget_by_both_drops_blocks_to_about_its_square_root_then_cuts_neurons_to_it(family):
    full = tiny_model(family, layers=8)
    both = cut_within(full.config, 0.4, "both")
    assert both.drop_layers == 8 - layers_within(full.config, 0.4 ** 0.5) and 0 < both.ffn_percent < 100
    shallow = stack_blocks(full, [(full, i) for i in range(8 - both.drop_layers)])
    small = cut(shallow, random_plan(shallow, 0, both.ffn_percent, "group"))
    assert counted(small) <= 0.4 * counted(full) < counted(shallow)
    assert cut_within(full.config, 0.4, "depth").ffn_percent == 0 and cut_within(full.config, 0.4, "width").drop_layers == 0


def test_prune_to_a_budget_by_both_ships_a_shallower_narrower_model(tokenizer, tmp_path):
    ref = save_tiny(tmp_path / "ref", "llama", layers=4, tok=tokenizer)
    data = make_data_dir(tmp_path / "data", tokenizer)
    full = counted(AutoModelForCausalLM.from_pretrained(ref))
    result = prune(ref, data=data, params=0.4, budget_by="both", by="angular", out=tmp_path / "both", examples=4,
                   seq_len=32)
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "both")
    assert isinstance(result, WidthPruneResult) and len(result.dropped_layers) == 2 and result.layers_by == "angular"
    assert saved.config.num_hidden_layers == 2 and geometry(saved.config)[3] < geometry(tiny_model().config)[3]
    assert counted(saved) <= 0.4 * full
    assert result.after["val"]["loss"] == pytest.approx(result.masked["val"]["loss"], abs=1e-5)
    assert "dropped blocks" in result.summary() and "FFN neurons" in result.summary()


def test_prune_to_a_budget_by_depth_and_by_width(reference_and_data, tmp_path):
    ref, data = reference_and_data
    full = counted(AutoModelForCausalLM.from_pretrained(ref))
    deep = prune(ref, data=data, params=0.6, budget_by="depth", by="first-n", out=tmp_path / "depth", examples=4, seq_len=32)
    wide = prune(ref, data=data, params=0.6, budget_by="width", out=tmp_path / "width", examples=4, seq_len=32)
    assert deep.dropped_layers == [1] and isinstance(wide, WidthPruneResult)
    for out in ("depth", "width"):
        assert counted(AutoModelForCausalLM.from_pretrained(tmp_path / out)) <= 0.6 * full
    with pytest.raises(InherituneError, match="--params sets the cut itself"):
        prune(ref, data=data, params=0.6, drop_layers=1, out=tmp_path / "x")
    with pytest.raises(InherituneError, match="between 0 and 1"):
        prune(ref, data=data, params=1.5, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
