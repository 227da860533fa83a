"""A parameter budget turned into a cut: how many blocks to keep, how many FFN neurons to keep in
every block, or both, so that a model holds at most a given share of its reference's non-embedding
parameters (the parameters depth and width pruning can remove; embeddings and LM head stay).

Counts are exact, read off models built on the meta device (no memory, no weights), so every
family's own layout (biases, norms, fused projections) is counted as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from transformers import PretrainedConfig

from inheritune.errors import InherituneError
from inheritune.models.families import config_of_blocks, num_layers
from inheritune.models.loading import skeleton
from inheritune.models.width_cut import WidthPlan, geometry, smaller_config
from inheritune.options import shown
from inheritune.specs import Choice


class BudgetShape(Choice):
    """The shape of a cut to a parameter budget (``--budget-by``, ``budget.by``)."""

    choices = ("depth", "width", "both")


SHAPES = BudgetShape.choices


@dataclass(frozen=True)
class Cut:
    """What a budget asks of a model: drop ``drop_layers`` blocks, then cut ``ffn_percent`` of every
    remaining block's FFN neurons."""

    drop_layers: int
    ffn_percent: float


def cut_within(config: PretrainedConfig, share: float, shape: str | BudgetShape) -> Cut:
    """The cut of ``shape`` that keeps at most ``share`` of the non-embedding parameters: depth drops
    the fewest blocks, width cuts FFN neurons only, both splits the budget evenly in log space (the
    blocks keep about sqrt(share), the FFN cut of the shallower model brings it to ``share``)."""
    shape = shape if isinstance(shape, BudgetShape) else BudgetShape(shape, shown("budget_by"))
    layers = num_layers(config)
    if shape == "depth":
        return Cut(layers - layers_within(config, share), 0.0)
    if shape == "width":
        return Cut(0, ffn_percent_within(config, share))
    keep = layers_within(config, check_share(share) ** 0.5)
    shallow = config_of_blocks(config, [(config, i) for i in range(keep)])
    rest = share * non_embedding(config) / non_embedding(shallow)
    return Cut(layers - keep, ffn_percent_within(shallow, rest) if rest < 1 else 0.0)


def non_embedding(config: PretrainedConfig) -> int:
    """Parameters outside the token embedding and the LM head (tied or not)."""
    model = skeleton(config)
    embed = cast(torch.Tensor, model.get_input_embeddings().weight)
    head = cast(torch.Tensor, model.get_output_embeddings().weight)
    unique = {id(p): p for p in model.parameters()}
    return sum(p.numel() for p in unique.values()) - embed.numel() - (head.numel() if head is not embed else 0)


def check_share(share: float) -> float:
    if not 0 < share < 1:
        raise InherituneError(
            f"--params must be a share of the non-embedding parameters between 0 and 1, not {share:g}"
        )
    return float(share)


def layers_within(config: PretrainedConfig, share: float) -> int:
    """The most blocks a model of ``config``'s shape keeps within ``share`` of its non-embedding parameters."""
    limit = check_share(share) * non_embedding(config)
    for keep in range(num_layers(config) - 1, 0, -1):
        if non_embedding(config_of_blocks(config, [(config, i) for i in range(keep)])) <= limit:
            return keep
    raise InherituneError(f"--params {share:g}: even one block holds more than that share")


def ffn_percent_within(config: PretrainedConfig, share: float) -> float:
    """The FFN share (percent of every block's neurons) to cut so that the model keeps at most
    ``share`` of its non-embedding parameters; heads stay. Parameters are affine in the FFN width,
    so two counts give the exact width."""
    limit = check_share(share) * non_embedding(config)
    _heads, _kv, _w, neurons = geometry(config)

    def count(width: int) -> int:
        layers = num_layers(config)
        keep = WidthPlan(
            heads=[list(range(_heads))] * layers,
            kv_heads=[list(range(_kv))] * layers,
            neurons=[list(range(width))] * layers,
        )
        return non_embedding(smaller_config(config, keep))

    per_neuron = count(neurons) - count(neurons - 1)
    fixed = count(neurons) - per_neuron * neurons
    width = int((limit - fixed) // per_neuron)
    if width < 1:
        raise InherituneError(f"--params {share:g}: attention alone holds more than that share; cut depth instead")
    return 100 * (neurons - width) / neurons
