"""Pruning heads and FFNs: which units go, how the damage is measured, and how sure we are of it.

A pruning **plan** names the heads (``[layer, head]`` pairs) and whole FFN layers removed. Every
criterion gives each unit a *keep score*, and a plan for p% removes the p% lowest, ranked globally:

- ``importance``: the gradient head importance and the FFN knock-out loss increase (the least
  important go first);
- ``induction``: heads in order of *descending* prefix-matching score, i.e. the induction heads are
  knocked out first (the OPT-66B study's comparison); induction is a head property, so FFNs go by
  importance under this criterion;
- ``random``: a seeded random order, for heads and FFNs (the baseline any criterion must beat).

**One-shot** pruning ranks once; **iterative** pruning (``iterative_plan``) goes to the target in
steps and re-scores after each step with the units pruned so far masked, so a unit whose partner
was just removed can become important (two redundant heads: each alone looks dispensable).

Two ways to apply a plan, which must agree exactly:
- ``masked`` (hooks, reversible) for sweeps: many percentages, no weight copies;
- ``bake`` (in place) for the saved model: a pruned head's input columns of the attention output
  projection and a pruned FFN's output projection are set to zero, so the folder loads with plain
  transformers and computes what the masked model computes. Weights stay in place:
  ``physical_removal_refusal`` says why no family can drop them physically in transformers 5.

Damage is measured on the held-out **score** examples (``score``): mean loss with a bootstrap 95%
interval, accuracy with a Wilson 95% interval, and the chance accuracy (mean of 1 / options).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import transformers
from transformers import PreTrainedModel

from inheritune.analysis.hooks import ffn_knockout, head_mask
from inheritune.analysis.unit_importance import Example, per_example
from inheritune.errors import InherituneError
from inheritune.models.families import blocks, family_of, input_features, input_weights, num_heads

CRITERIA = ("importance", "induction", "random")
Z95 = 1.959964  # two-sided 95% normal quantile
Scores = tuple[np.ndarray, np.ndarray]  # keep scores: heads [layers, heads], FFNs [layers]


def check_percent(value: float, what: str) -> float:
    if not 0 <= value <= 100:
        raise InherituneError(f"{what} must be a percentage between 0 and 100, not {value:g}")
    return float(value)


def least_important(scores: np.ndarray, percent: float, already: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask (same shape as ``scores``) of the ``percent``% lowest-scoring units, ranked
    globally (ties keep index order). Units ``already`` pruned stay pruned and count towards it."""
    scores = np.array(scores, dtype=float)
    if already is not None:
        scores[already] = -np.inf
    k = round(check_percent(percent, "pruning percentage") / 100 * scores.size)
    pruned = np.zeros(scores.size, dtype=bool)
    pruned[np.argsort(scores.ravel(), kind="stable")[:k]] = True
    return pruned.reshape(scores.shape)


def _as_masks(pruning: dict, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    heads, ffn = np.zeros(shape, dtype=bool), np.zeros(shape[0], dtype=bool)
    for layer, head in pruning["heads"]:
        heads[layer, head] = True
    ffn[list(pruning["ffn"])] = True
    return heads, ffn


def plan(
    head_scores: np.ndarray, ffn_scores: np.ndarray, heads_pct: float, ffn_pct: float, previous: dict | None = None
) -> dict:
    """Which heads (``[layer, head]`` pairs) and FFN layers to prune: the lowest keep scores, on top
    of a ``previous`` plan when given (iterative pruning never restores a unit)."""
    head_scores = np.asarray(head_scores, dtype=float)
    old_heads, old_ffn = _as_masks(previous or {"heads": [], "ffn": []}, head_scores.shape)
    heads = least_important(head_scores, heads_pct, old_heads)
    ffn = least_important(ffn_scores, ffn_pct, old_ffn)
    return {
        "heads": [[int(layer), int(h)] for layer, h in zip(*np.nonzero(heads), strict=True)],
        "ffn": [int(layer) for layer in np.nonzero(ffn)[0]],
    }


def keep_scores(
    criterion: str, importance: Scores | None, induction_prefix: np.ndarray | None, shape: tuple[int, int], seed: int
) -> Scores:
    """Per-unit keep scores of a criterion (lowest pruned first; see the module docstring)."""
    if criterion == "importance":
        assert importance is not None  # the criteria that read the importance scores are given them
        return importance
    if criterion == "induction":
        assert importance is not None
        return -np.asarray(induction_prefix, dtype=float), importance[1]
    if criterion == "random":
        rng = np.random.default_rng(seed)
        return rng.random(shape), rng.random(shape[0])
    raise InherituneError(f"--by: '{criterion}' is not one of {', '.join(CRITERIA)}")


def iterative_plan(
    rescore: Callable[[dict], Scores], heads_pct: float, ffn_pct: float, steps: int, previous: dict | None = None
) -> tuple[dict, list[Scores]]:
    """Reach ``heads_pct``/``ffn_pct`` in ``steps`` equal steps, re-scoring (``rescore(plan)``, with
    that plan's units masked) before each; the plan and the scores each step ranked by."""
    pruning = previous or {"heads": [], "ffn": []}
    history = []
    for step in range(1, steps + 1):
        scores = rescore(pruning)
        history.append(scores)
        pruning = plan(*scores, heads_pct * step / steps, ffn_pct * step / steps, previous=pruning)
    return pruning, history


def keep_mask(model: PreTrainedModel, pruned_heads: list[list[int]]) -> torch.Tensor:
    """``[layers, heads]`` of ones with zeros at the pruned heads, on the model's (first) device."""
    mask = torch.ones(len(blocks(model)), num_heads(model.config), device=model.device)
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


def physical_removal_refusal(model: PreTrainedModel) -> str:
    """Why a global plan's units stay as zeroed weights instead of being cut out of the tensors.

    Cutting heads out needs a config that holds a head count per layer: transformers up to 4.x
    had ``prune_heads`` and ``config.pruned_heads``, transformers 5 removed both, and no family's
    config takes per-layer head counts or FFN widths, so a global plan, which prunes a different
    number of units in each layer, cannot be saved smaller and reload as an ordinary folder. A
    uniform cut can (``--width-heads``/``--width-ffn``)."""
    return (
        f"--physical: kept as zeroed weights: transformers {transformers.__version__} has no prune_heads/"
        f"pruned_heads and {model.config.model_type}'s config holds one head count and one FFN width for "
        "every layer, so a folder with per-layer widths would not reload; --width-heads/--width-ffn cut the "
        "same number of units from every block and save a smaller model"
    )


def wilson(hits: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (sound at 0 and 1, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    p, z2 = hits / n, Z95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def bootstrap_mean(values: Sequence[float], seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    """95% percentile-bootstrap interval of a mean, resampling examples (seeded, reproducible)."""
    array = np.asarray(values, dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(array), size=(resamples, len(array)))
    means = array[draws].mean(axis=1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def score(model: PreTrainedModel, examples: list[Example]) -> dict:
    """Mean loss (bootstrap 95% CI) and, for multiple-choice examples, accuracy (Wilson 95% CI)
    and chance accuracy (mean of 1 / number of options)."""
    losses, correct = per_example(model, examples)
    hits = [c for c in correct if c is not None]
    result = {
        "loss": float(np.mean(losses)),
        "loss_ci": list(bootstrap_mean(losses)),
        "accuracy": None,
        "accuracy_ci": None,
        "chance": None,
    }
    if hits:
        chance = [1 / len(ex.choices) for ex, c in zip(examples, correct, strict=True) if c is not None]
        result.update(
            accuracy=float(np.mean(hits)), accuracy_ci=list(wilson(sum(hits), len(hits))), chance=float(np.mean(chance))
        )
    return result


def sweep(
    model: PreTrainedModel,
    percents: Sequence[float],
    choose: Callable[[float, dict], dict],
    evaluate: Callable[[PreTrainedModel], dict],
    progress: Callable[[], None] = lambda: None,
) -> list[dict]:
    """``evaluate`` at each percentage (ascending) with the plan ``choose(percent, previous plan)``
    masked: one-shot criteria ignore the previous plan, iterative ones build on it."""
    pruning: dict = {"heads": [], "ffn": []}
    points: list[dict] = []
    for p in sorted(percents):
        pruning = choose(p, pruning)
        with masked(model, pruning):
            points.append(evaluate(model))
        progress()
    return points


def tolerated_percent(
    percents: Sequence[float],
    values: Sequence[float],
    base: float,
    tolerance: float = 0.05,
    higher_is_better: bool = False,
) -> float:
    """The largest swept percentage up to which ``values`` never fell more than ``tolerance``
    (relative) behind ``base``: accuracy at least base * (1 - tol), or loss at most base * (1 + tol)."""
    best = 0.0
    for p, value in sorted(zip(percents, values, strict=True)):
        if (value < base * (1 - tolerance)) if higher_is_better else (value > base * (1 + tolerance)):
            break
        best = p
    return best
