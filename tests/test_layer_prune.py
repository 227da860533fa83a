"""Layer pruning: drop_blocks removes exactly the chosen blocks, and each selector of the registry
picks the blocks a constructed model makes obvious (identity blocks, a lazy sink layer)."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import make_data_dir, tiny_model
from inheritune.analysis import layers as lp
from inheritune.analysis.selection import Scoring, choose, scoring_windows, select
from inheritune.data.shards import open_data
from inheritune.errors import InherituneError
from inheritune.evaluation.val_loss import val_loss
from inheritune.models.families import blocks, family_of, num_layers
from inheritune.models.surgery import drop_blocks

pytestmark = pytest.mark.usefixtures("one_thread")
FAMILIES = ("llama", "gpt2", "gemma3_text", "qwen2")


def windows(n: int = 4, t: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(2, 300, (n, t), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def make_identity(model, layers) -> None:
    """Zero the attention output and FFN output projections (weights and biases): the block adds
    nothing to the residual stream, so its output equals its input."""
    family = family_of(model.config)
    for layer in layers:
        for path in (family.attn_out, family.ffn_proj):
            for p in blocks(model)[layer].get_submodule(path).parameters():
                p.zero_()


@torch.no_grad()
def make_sink(model, layers, scale: float = 30.0) -> None:
    """GPT-2 only (Conv1D c_attn, [in, 3 * hidden]): position 0 gets a huge position embedding,
    and in ``layers`` every query is one constant vector u while a key is u scaled by how much the
    token looks like position 0, so every head attends to the first token."""
    hidden = model.config.n_embd
    wpe = model.get_submodule(family_of(model.config).pos_embed).weight
    direction = torch.randn(hidden, generator=torch.Generator().manual_seed(1))
    wpe[0] = 50 * direction
    u = torch.ones(hidden)
    for layer in layers:
        attn = blocks(model)[layer].attn.c_attn
        attn.weight[:, :hidden] = 0
        attn.bias[:hidden] = scale * u
        attn.weight[:, hidden:2 * hidden] = torch.outer(direction / direction.norm(), u) * scale / hidden ** 0.5
        attn.bias[hidden:2 * hidden] = 0


@pytest.mark.parametrize("family", FAMILIES)
def test_drop_blocks_removes_exactly_those_blocks(family, tmp_path):
    model = tiny_model(family, layers=5)
    pruned = drop_blocks(model, [1, 3])
    assert num_layers(pruned.config) == 3
    old, new = model.state_dict(), pruned.state_dict()
    prefix = family_of(model.config).blocks
    for name, tensor in new.items():  # blocks 0, 2, 4 became 0, 1, 2; everything else unchanged
        if name.startswith(prefix + "."):
            index, rest = name[len(prefix) + 1:].split(".", 1)
            name = f"{prefix}.{[0, 2, 4][int(index)]}.{rest}"
        assert torch.equal(tensor, old[name]), name
    for key in family_of(model.config).layer_lists:
        if getattr(model.config, key, None) is not None:
            assert getattr(pruned.config, key) == [getattr(model.config, key)[i] for i in (0, 2, 4)]
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = windows(2, 12)
    assert torch.equal(reloaded(ids).logits, pruned(ids).logits)


@pytest.mark.parametrize("family", ("llama", "gpt2"))
def test_dropping_identity_blocks_changes_nothing(family):
    model = tiny_model(family, layers=5)
    make_identity(model, [2, 3])
    ids = windows(2, 12)
    torch.testing.assert_close(drop_blocks(model, [2, 3])(ids).logits, model(ids).logits)
    assert not torch.allclose(drop_blocks(model, [1, 4])(ids).logits, model(ids).logits, atol=1e-4)


def test_drop_blocks_refuses_bad_layers():
    model = tiny_model("llama", layers=3)
    with pytest.raises(InherituneError, match="layer 3"):
        drop_blocks(model, [3])
    with pytest.raises(InherituneError, match="all 3"):
        drop_blocks(model, [0, 1, 2])


def dropped(model, k: int, by: str, ids=None) -> list[int]:
    layers = num_layers(model.config)
    return select(model, layers - k, by, windows() if ids is None else ids).dropped


@pytest.mark.parametrize("family", FAMILIES)
def test_block_influence_picks_identity_blocks(family):
    model = tiny_model(family, layers=6)
    make_identity(model, [1, 4])
    scores = select(model, 6, "block-influence", windows()).scores
    assert scores[1] == pytest.approx(0, abs=1e-5) and scores[4] == pytest.approx(0, abs=1e-5)
    assert min(scores[i] for i in (0, 2, 3, 5)) > 1e-3
    assert dropped(model, 2, "block-influence") == [1, 4]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("start", (1, 2))
def test_angular_picks_the_identity_slice(family, start):
    model = tiny_model(family, layers=6)
    make_identity(model, range(start, start + 3))
    scoring = Scoring(model, windows())
    assert choose(scoring, 3, "angular").dropped == [start, start + 1, start + 2]
    assert choose(scoring, 4, "angular").dropped in ([start, start + 1], [start + 1, start + 2])  # inside it


def test_angular_keeps_the_last_block():
    model = tiny_model("llama", layers=4)
    make_identity(model, [3])  # the last block does nothing, but the paper keeps it
    scoring = Scoring(model, windows())
    assert choose(scoring, 4, "angular").scores[3] == pytest.approx(0, abs=1e-3)  # arccos near 1 amplifies fp32 rounding
    assert 3 not in choose(scoring, 3, "angular").dropped and 3 not in choose(scoring, 1, "angular").dropped


def test_lazy_picks_the_sink_layers():
    model = tiny_model("gpt2", layers=5)
    make_sink(model, [2, 3])
    scores = select(model, 5, "lazy", windows(t=24)).scores
    assert min(scores[2], scores[3]) > 0.9  # nearly all attention on the first token
    assert max(scores[i] for i in (1, 4)) < 0.5
    assert dropped(model, 2, "lazy", windows(t=24)) == [2, 3]


def test_lazy_never_drops_layer_0_and_first_n_drops_the_last():
    model = tiny_model("gpt2", layers=4)
    make_sink(model, [0, 2])  # layer 0 is the laziest, and still stays
    assert 0 not in dropped(model, 1, "lazy", windows(t=24)) and dropped(model, 3, "lazy", windows(t=24)) == [1, 2, 3]
    assert dropped(tiny_model("llama", layers=4), 3, "first-n") == [1, 2, 3]


def test_choose_refuses_bad_k_and_criteria():
    model = tiny_model("llama", layers=3)
    with pytest.raises(InherituneError, match=r"1\.\.3"):
        select(model, 0, "block-influence", windows())
    with pytest.raises(InherituneError, match="^by 'random': not a block selector"):
        select(model, 2, "random", windows())


def test_sweep_matches_val_loss_of_each_pruned_model(tmp_path, tokenizer):
    data = make_data_dir(tmp_path / "data", tokenizer)
    model = tiny_model("llama", layers=5)
    make_identity(model, [2])
    result = lp.sweep(model, data, scoring_windows(data, 4, 16), max_drop=2)
    assert result["drops"] == [0, 1, 2]
    for by in lp.SWEEP:
        assert len(result["dropped"][by]) == 3 and result["dropped"][by][0] == []
        for plan, loss in zip(result["dropped"][by], result["val_loss"][by]):
            expected = val_loss(drop_blocks(model, plan) if plan else model, open_data(data))["loss"]
            assert loss == pytest.approx(expected, rel=1e-6)
    assert result["dropped"]["block-influence"][1] == [2]
    assert result["val_loss"]["block-influence"][1] == pytest.approx(result["val_loss"]["first-n"][0], rel=1e-5)
    assert result["dropped"]["first-n"][2] == [3, 4]
    path = lp.plot_sweep(result, tmp_path / "sweep.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
