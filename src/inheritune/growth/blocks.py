"""Which reference blocks a grow round holds, and the model it starts from: round 1 keeps what the
selector keeps; growing adds back the blocks it ranks next (at their reference positions);
shrinking drops the ones it drops first from the healed model."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from inheritune.analysis.selection import BlockSelector, select
from inheritune.models.families import num_layers
from inheritune.models.surgery import deepen, origins, stack_blocks


def choose_blocks(
    ref: PreTrainedModel,
    trained: PreTrainedModel | None,
    layers: int,
    by: BlockSelector,
    windows: torch.Tensor | None,
    direction: str,
) -> dict:
    """The reference blocks a round's model holds, and the selection behind them.

    Round 1 keeps what ``by`` keeps of the reference. Growing adds back the blocks ``by`` ranks
    next among those the trained model lacks; shrinking re-scores the trained (healed) model's own
    blocks and drops the ones ``by`` drops first."""
    if trained is None:
        chosen = select(ref, layers, by, windows)
        return {"blocks": chosen.keep, "selection": chosen.to_json()}
    held = origins(trained)
    if direction == "grow":
        chosen = select(ref, layers, by, windows, droppable=[i for i in range(num_layers(ref.config)) if i not in held])
        return {"blocks": chosen.keep, "selection": chosen.to_json()}
    chosen = select(trained, layers, by, windows)
    return {"blocks": [held[p] for p in chosen.keep], "selection": chosen.to_json()}


def round_model(
    ref: PreTrainedModel, reference: str, trained: PreTrainedModel | None, blocks: list[int], mode: str, seed: int
) -> PreTrainedModel:
    """The model a round starts from: the reference's ``blocks`` (round 1), the trained model
    grown to hold them (new ones at their original positions), or shrunk to them."""
    if trained is None:
        return stack_blocks(ref, [(ref, i) for i in blocks], seed=seed, reference=reference)
    held = origins(trained)
    if len(blocks) > len(held):
        return deepen(trained, ref, blocks, mode=mode)
    return stack_blocks(trained, [(trained, held.index(i)) for i in blocks])
