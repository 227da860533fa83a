"""Pruning by masks: remove the globally least important heads and FFNs, then measure the damage.

Two ways to apply the same plan, which must agree exactly:
- ``masked`` (hooks, reversible) for sweeps: many percentages, no weight copies;
- ``bake`` (in place) for the saved model: a pruned head's input columns of the attention output
  projection and a pruned FFN's output projection are set to zero, so the folder loads with plain
  transformers and computes what the masked model computes. Weights stay in place (no physical
  removal): shapes, configs and every family keep working.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from transformers import PreTrainedModel

from inheritune.analysis.hooks import ffn_knockout, head_mask
from inheritune.errors import InherituneError
from inheritune.models.families import blocks, family_of, input_features, input_weights, num_heads


def check_percent(value: float, what: str) -> float:
    if not 0 <= value <= 100:
        raise InherituneError(f"{what} must be a percentage between 0 and 100, not {value:g}")
    return float(value)


def least_important(scores: np.ndarray, percent: float) -> np.ndarray:
    """Boolean mask (same shape as ``scores``) of the ``percent``% lowest-scoring units, ranked
    globally (ties keep index order)."""
    scores = np.asarray(scores, dtype=float)
    k = int(round(check_percent(percent, "pruning percentage") / 100 * scores.size))
    pruned = np.zeros(scores.size, dtype=bool)
    pruned[np.argsort(scores.ravel(), kind="stable")[:k]] = True
    return pruned.reshape(scores.shape)


def plan(head_scores: np.ndarray, ffn_scores: np.ndarray, heads_pct: float, ffn_pct: float) -> dict:
    """Which heads (``[layer, head]`` pairs) and FFN layers to prune."""
    heads = least_important(head_scores, heads_pct)
    ffn = least_important(ffn_scores, ffn_pct)
    return {"heads": [[int(l), int(h)] for l, h in zip(*np.nonzero(heads))],
            "ffn": [int(l) for l in np.nonzero(ffn)[0]]}


def keep_mask(model: PreTrainedModel, pruned_heads: list[list[int]]) -> torch.Tensor:
    """``[layers, heads]`` of ones with zeros at the pruned heads."""
    mask = torch.ones(len(blocks(model)), num_heads(model.config))
    for layer, head in pruned_heads:
        mask[layer, head] = 0.0
    return mask


@contextmanager
def masked(model: PreTrainedModel, pruning: dict) -> Iterator[PreTrainedModel]:
    """The model with the plan's heads masked and FFNs knocked out, restored afterwards."""
    with head_mask(model, keep_mask(model, pruning["heads"])), ffn_knockout(model, pruning["ffn"]):
        yield model


@torch.no_grad()
def bake(model: PreTrainedModel, pruning: dict) -> PreTrainedModel:
    """Write the plan into the weights (in place): pruned heads and FFNs output exactly zero."""
    family = family_of(model.config)
    all_blocks = blocks(model)
    heads = num_heads(model.config)
    for layer, head in pruning["heads"]:
        proj = all_blocks[layer].get_submodule(family.attn_out)
        width = input_features(model.config, proj) // heads
        input_weights(model.config, proj, head * width, (head + 1) * width).zero_()
    for layer in pruning["ffn"]:
        proj = all_blocks[layer].get_submodule(family.ffn_proj)
        proj.weight.zero_()
        if proj.bias is not None:
            proj.bias.zero_()
    return model


def sweep(model: PreTrainedModel, head_scores: np.ndarray, ffn_scores: np.ndarray, percents: list[float],
          evaluate: Callable[[PreTrainedModel], dict]) -> dict:
    """Degradation curves: ``evaluate`` with p% of heads masked (FFNs intact), and with p% of FFNs
    knocked out (heads intact), for each p."""
    curves: dict[str, list] = {"percent": list(percents), "heads": [], "ffn": []}
    for p in percents:
        with masked(model, plan(head_scores, ffn_scores, p, 0)):
            curves["heads"].append(evaluate(model))
        with masked(model, plan(head_scores, ffn_scores, 0, p)):
            curves["ffn"].append(evaluate(model))
    return curves


def tolerated_percent(percents: list[float], losses: list[float], base: float, tolerance: float = 0.05) -> float:
    """The largest swept percentage before which the loss never exceeded ``base * (1 + tolerance)``."""
    best = 0.0
    for p, loss in sorted(zip(percents, losses)):
        if loss > base * (1 + tolerance):
            break
        best = p
    return best
