"""Layer pruning measured: val loss after dropping K whole blocks, per block selector.

The blocks come from the one registry (``analysis.selection``); this module sweeps K for several
selectors and plots the result. Blocks are chosen on train-split windows; the val loss of a
pruned model is the one yardstick, ``evaluation.val_loss.val_loss``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from inheritune.analysis import selection
from inheritune.data.shards import TokenData, open_data
from inheritune.errors import InherituneError
from inheritune.evaluation.val_loss import val_loss
from inheritune.models.families import num_layers
from inheritune.models.surgery import drop_blocks
from inheritune.reporting.plots import curves

# The selectors a sweep compares by default: every one that needs no parameter.
SWEEP: tuple[str, ...] = tuple(name for name, s in selection.SELECTORS.items() if s.arg is None)
PLOT_CLIP = 8.0  # nats above the unpruned model's val loss where the sweep plot's axis stops


def check_drop(k: int, layers: int) -> None:
    """K in 0..L-1: every selector keeps at least one block."""
    if not 0 <= k < layers:
        raise InherituneError(f"--drop-layers must be in 0..{layers - 1} for a {layers}-layer model, not {k}")


def drops_up_to(max_drop: int, step: int = 1) -> list[int]:
    """0, step, 2 step, ... up to ``max_drop`` (always included): the K values of a sweep."""
    if max_drop < 0 or step < 1:
        raise InherituneError(f"need max_drop >= 0 and step >= 1, not {max_drop} and {step}")
    return sorted(set(range(0, max_drop + 1, step)) | {max_drop})


def sweep(
    model: PreTrainedModel,
    data: str | Path | TokenData,
    windows: torch.Tensor,
    criteria: Sequence[str] = SWEEP,
    max_drop: int = 8,
    step: int = 1,
    batch_size: int = 8,
) -> dict:
    """Val loss (the yardstick, on ``data``'s val split) after dropping K = 0, step, ... max_drop
    blocks by each selector, scored on ``windows`` (take them from another split than val).

    Returns ``{"drops", "val_loss": {selector: [...]}, "dropped": {selector: [[layers], ...]},
    "scores": {selector: [per block] or None}, "yardstick"}``; K = 0 (the model as is) is
    evaluated once and shared by every selector, and each block score is computed once.
    """
    for by in criteria:
        selection.as_selector(by)
    drops = drops_up_to(max_drop, step)
    layers = num_layers(model.config)
    check_drop(max_drop, layers)  # before any work
    token_data = data if isinstance(data, TokenData) else open_data(data)
    scoring = selection.Scoring(model, windows)
    chosen = {by: [selection.choose(scoring, layers - k, by) for k in drops] for by in criteria}
    plans = {by: [c.dropped for c in chosen[by]] for by in criteria}
    losses: dict[tuple[int, ...], dict] = {}
    todo = sorted({tuple(plan) for by in criteria for plan in plans[by]})
    for plan in tqdm(todo, desc="layer-prune sweep", unit="model", disable=None):
        pruned = drop_blocks(model, plan) if plan else model
        losses[plan] = val_loss(pruned, token_data, batch_size)
    return {
        "drops": drops,
        "val_loss": {by: [losses[tuple(plan)]["loss"] for plan in plans[by]] for by in criteria},
        "dropped": plans,
        "scores": {by: chosen[by][-1].scores for by in criteria},
        "yardstick": losses[()]["yardstick"],
    }


def plot_sweep(result: dict, path: str | Path, title: str = "Val loss after dropping K blocks") -> Path:
    """Val loss vs blocks dropped, one line per selector; the axis stops ``PLOT_CLIP`` nats above
    the model as is (K = 0), so that a criterion that breaks the model does not flatten the others."""
    series = {by: (result["drops"], losses) for by, losses in result["val_loss"].items()}
    base = next(iter(result["val_loss"].values()))[0]
    return curves(
        series,
        path,
        title=title,
        xlabel="blocks dropped (K)",
        ylabel="val loss (nats)",
        hlines={f"no block dropped ({base:.2f})": base},
        ylim=(base - 0.25, base + PLOT_CLIP),
    )
