"""The block-selection registry: every selector picks the blocks a constructed model makes obvious,
growth only adds back dropped blocks, derive writes the chosen blocks bit for bit with a model card,
and partial healing trains exactly the blocks it names."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import make_data_dir, save_tiny, tiny_model
from inheritune.analysis import selection
from inheritune.analysis.block_scores import skipped, window_loss
from inheritune.analysis.selection import Scoring, choose, select
from inheritune.cli import main
from inheritune.errors import InherituneError
from inheritune.models.card import card_text
from inheritune.models.families import blocks, family_of
from inheritune.models.surgery import drop_blocks, inherit, origins, spans
from inheritune.recipe import recipe_from_dict
from inheritune.commands.train import train
from inheritune.training import TrainConfig
from inheritune.training.healing import cuts, focus
from inheritune.specs import TrainBlocks
from test_layer_prune import make_identity

pytestmark = pytest.mark.usefixtures("one_thread")


def windows(n: int = 4, t: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(2, 300, (n, t), generator=torch.Generator().manual_seed(seed))


# ---- the registry -----------------------------------------------------------------------------------

def test_every_name_parses_and_help_lists_it():
    for name in selection.NAMES:
        spec = name.replace(":K", ":2").replace(":SPEC", ":0-1")
        assert selection.as_selector(spec).name == name.split(":")[0]
        assert name in selection.HELP
    with pytest.raises(InherituneError, match=r"not a block selector \(did you mean 'angular'\?\)"):
        selection.as_selector("angulr")
    with pytest.raises(InherituneError, match=r"needs a parameter \(first-last:K\)"):
        selection.as_selector("first-last")
    with pytest.raises(InherituneError, match="takes no parameter"):
        selection.as_selector("angular:3")


@pytest.mark.parametrize("family", ("llama", "gpt2", "gemma3_text"))
def test_skipping_a_block_is_removing_it(family):
    model = tiny_model(family, layers=5)
    ids = windows(2, 12)
    with skipped(model, [1, 3]):
        torch.testing.assert_close(model(ids).logits, drop_blocks(model, [1, 3])(ids).logits)
    assert not torch.allclose(model(ids).logits, drop_blocks(model, [1, 3])(ids).logits, atol=1e-4)  # hooks removed


@torch.no_grad()
def own_text(model, n: int = 32, t: int = 48) -> torch.Tensor:
    """Windows the model samples itself: the unchanged model is the best predictor of them, so any
    block that changes its output costs loss, and only blocks that do nothing are free."""
    torch.manual_seed(0)
    ids = torch.randint(2, 300, (n, 1))
    for _ in range(t - 1):
        probs = torch.softmax(model(ids).logits[:, -1].float(), -1)
        ids = torch.cat([ids, torch.multinomial(probs, 1)], 1)
    return ids


def peaked(model):
    """Sharper next-token distributions (a larger LM head), so a block that changes them costs clearly more."""
    with torch.no_grad():
        model.lm_head.weight.mul_(8)
    return model


def test_loss_selectors_pick_the_blocks_that_cost_nothing():
    model = peaked(tiny_model("llama", layers=6))
    make_identity(model, [1, 4])
    w = own_text(model)
    assert window_loss(model, w, [1, 4]) == pytest.approx(window_loss(model, w), abs=1e-5)
    assert select(model, 4, "loss-greedy", w).dropped == [1, 4]
    contiguous = peaked(tiny_model("llama", layers=6))
    make_identity(contiguous, [2, 3])
    assert select(contiguous, 4, "loss", own_text(contiguous)).dropped == [2, 3]


def test_greedy_removal_is_nested_and_reused():
    model = tiny_model("llama", layers=6, seed=3)
    scoring = Scoring(model, windows())
    three = choose(scoring, 3, "loss-greedy").dropped
    order = list(scoring.greedy[tuple(range(6))])
    one = choose(scoring, 5, "loss-greedy").dropped
    assert set(one) <= set(three) and len(order) == 3 and one == [order[0]]
    assert select(model, 3, "loss-greedy", windows()).dropped == three  # a fresh scoring agrees


def test_importance_drops_blocks_with_no_head_or_ffn_effect():
    model = tiny_model("llama", layers=5)
    make_identity(model, [2])
    chosen = select(model, 4, "importance", windows())
    assert chosen.dropped == [2] and chosen.scores[2] == pytest.approx(0, abs=1e-6)
    assert min(s for i, s in enumerate(chosen.scores) if i != 2) > 1e-4


def test_growth_only_adds_back_dropped_blocks_the_selector_ranks_next():
    model = tiny_model("llama", layers=6)
    make_identity(model, [1, 4])
    w = windows()
    held = [0, 2, 5]  # dropped: 1, 3, 4; the selector adds back 3 first (1 and 4 do nothing)
    grown = select(model, 4, "block-influence", w, droppable=[1, 3, 4])
    assert grown.keep == [0, 2, 3, 5] and set(held) <= set(grown.keep)
    assert select(model, 4, "first-n", droppable=[3, 4, 5]).keep == [0, 1, 2, 3]
    assert select(model, 4, "first-last:1", droppable=[2, 3, 4]).keep == [0, 1, 2, 5]  # held 0, 1 + tail 5
    with pytest.raises(InherituneError, match="cannot drop 2 blocks: only 1 may go"):
        select(model, 4, "block-influence", w, droppable=[3])


def test_list_and_first_last_keep_what_they_say():
    model = tiny_model("llama", layers=5)
    assert select(model, 2, "list:1,3").keep == [1, 3]
    assert select(model, 3, "first-last:2").keep == [0, 3, 4]
    with pytest.raises(InherituneError, match="keeps 2 blocks"):
        select(model, 3, "list:1,3")
    with pytest.raises(InherituneError, match="'first-last:x': K must be a whole number"):
        select(model, 3, "first-last:x")
    with pytest.raises(InherituneError, match="give --data"):
        select(model, 3, "angular")
    assert spans([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


# ---- derive, provenance and model cards --------------------------------------------------------------

def test_derive_by_a_selector_copies_its_blocks_bit_for_bit_with_a_card(tmp_path, tokenizer, capsys):
    reference = save_tiny(tmp_path / "ref", "llama", 6, tok=tokenizer)
    data = make_data_dir(tmp_path / "data", tokenizer)
    ref = AutoModelForCausalLM.from_pretrained(reference)
    code = main(["derive", str(reference), "--layers", "4", "--by", "block-influence", "--data", str(data),
                 "--out", str(tmp_path / "d")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "d" / "derive.json").read_text())
    expected = select(ref, 4, "block-influence", selection.scoring_windows(data)).keep
    assert report["blocks"] == expected and report["by"] == "block-influence" and len(report["scores"]) == 6
    derived = AutoModelForCausalLM.from_pretrained(tmp_path / "d")
    assert origins(derived) == expected and derived.config.inheritune["reference_layers"] == 6
    for i, j in enumerate(expected):
        for a, b in zip(blocks(derived)[i].parameters(), blocks(ref)[j].parameters()):
            assert torch.equal(a, b)
    card = (tmp_path / "d" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: transformers" in card
    assert f"`{', '.join(map(str, expected))}`" in card and "selector: block-influence" in card


def test_derive_refuses_a_scoring_selector_without_data_and_writes_nothing(tmp_path, tokenizer, capsys):
    reference = save_tiny(tmp_path / "ref", "llama", 4, tok=tokenizer)
    code = main(["derive", str(reference), "--layers", "2", "--by", "angular", "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2 and "give --data" in err and err.count("\n") == 1 and not (tmp_path / "d").exists()
    code = main(["derive", str(reference), "--layers", "0-1", "--by", "angular", "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2 and "lists the blocks itself" in err and not (tmp_path / "d").exists()


def test_card_names_the_hub_model_of_a_packaged_reference():
    record = {"reference": "smollm2-135m", "reference_layers": 30, "blocks": [0, 1, 29]}
    text = card_text(record, {"val loss": 3.1}, source="smollm2-135m")
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in text and "Holds 3 of the 30 blocks" in text
    assert "base_model" not in card_text({"reference": "/tmp/folder", "reference_layers": 4, "blocks": [0]}, {}, "/tmp")


def test_provenance_follows_surgery():
    ref = tiny_model("llama", layers=6)
    small = inherit(ref, [0, 2, 5])
    assert origins(small) == [0, 2, 5] and origins(drop_blocks(small, [1])) == [0, 5]
    assert origins(ref) == list(range(6))  # a model inheritune did not build is its own reference


# ---- healing: which blocks train ------------------------------------------------------------------------

def test_cuts_are_where_reference_blocks_are_skipped():
    ref = tiny_model("llama", layers=6)
    spec = TrainBlocks("cuts:1", "--train-blocks")
    assert cuts(inherit(ref, [0, 1, 4, 5]).config, spec) == [2]  # blocks 2, 3 skipped before position 2
    assert cuts(inherit(ref, [0, 1, 2]).config, spec) == [3]  # first-n: one cut, after the end
    assert cuts(inherit(ref, [2, 3, 5]).config, spec) == [0, 2]
    assert focus(inherit(ref, [0, 1, 4, 5]).config, spec) == {1, 2}
    assert focus(inherit(ref, [0, 1, 2]).config, TrainBlocks("last:2", "k")) == {1, 2}
    with pytest.raises(InherituneError, match="^--train-blocks 'cuts:1': cuts:K needs a model built by inheritune"):
        focus(ref.config, spec)


def test_partial_training_moves_only_the_named_blocks(tmp_path, tokenizer):
    data = make_data_dir(tmp_path / "data", tokenizer)
    model = inherit(tiny_model("llama", layers=5), [0, 1, 3, 4])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(seq_len=16, batch_size=2, steps=3, lr=1e-2, precision="fp32", peak_flops=1e12,
                         progress=False, train_blocks="cuts:1")  # cuts at positions 2 (3 skipped): blocks 1, 2
    train(model, data, tmp_path / "run", config, tokenizer=tokenizer)
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")
    prefix = family_of(trained.config).blocks
    for name, tensor in trained.state_dict().items():
        moves = name.startswith((f"{prefix}.1.", f"{prefix}.2.", "model.norm.")) and not name.endswith("bias")
        assert torch.equal(tensor, before[name]) != moves, name
    state = torch.load(next((tmp_path / "run" / "checkpoints").glob("step-*")) / "trainer_state.pt", weights_only=False)
    slots = sum(len(group["params"]) for group in state["optimizer"]["param_groups"])
    focus_params = sum(1 for n, _ in model.named_parameters() if n.startswith((f"{prefix}.1.", f"{prefix}.2.", "model.norm.")))
    assert slots == focus_params  # the frozen rest holds no optimizer state


def test_rest_lr_scale_trains_everything_slower(tmp_path, tokenizer):
    data = make_data_dir(tmp_path / "data", tokenizer)
    model = inherit(tiny_model("llama", layers=3), [0, 1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(seq_len=16, batch_size=2, steps=2, lr=1e-2, precision="fp32", peak_flops=1e12,
                         progress=False, train_blocks="last:1", rest_lr_scale=0.1)
    train(model, data, tmp_path / "run", config, tokenizer=tokenizer)
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final").state_dict()
    step = {k: (trained[k] - before[k]).abs().max().item() for k in before}
    assert step["model.layers.0.mlp.down_proj.weight"] > 0  # the rest moves, at a tenth of the rate
    assert step["model.layers.1.mlp.down_proj.weight"] > 3 * step["model.layers.0.mlp.down_proj.weight"]


@pytest.mark.parametrize("spec", ["last:0", "cuts", "some", "1-x"])
def test_bad_train_blocks_is_one_line(spec):
    with pytest.raises(InherituneError, match=f"^train_blocks {spec!r}: must be all, last:K"):
        TrainConfig(steps=1, train_blocks=spec).validate()


# ---- the recipe ----------------------------------------------------------------------------------------

def test_recipe_reads_inherit_by_and_names_moved_keys():
    assert recipe_from_dict({"reference": "r", "inherit": {"by": "first-last:3"}}).inherit.by == "first-last:3"
    with pytest.raises(InherituneError, match=r"'grow.keep_last' is gone: use inherit.by: first-last:K"):
        recipe_from_dict({"reference": "r", "grow": {"keep_last": 3}})
    with pytest.raises(InherituneError, match=r"^inherit.by 'lazzy': not a block selector \(did you mean 'lazy'\?\)"):
        recipe_from_dict({"reference": "r", "inherit": {"by": "lazzy"}})
    with pytest.raises(InherituneError, match=r"recipe key 'grow.direction' must be one of grow, shrink"):
        recipe_from_dict({"reference": "r", "grow": {"direction": "down"}})
