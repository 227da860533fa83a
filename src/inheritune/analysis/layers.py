"""Layer pruning: which whole blocks to drop, and what dropping them costs in val loss.

Four criteria (``CRITERIA``), each a per-layer score from one pass over some token windows and a
rule that turns scores into the K blocks to drop:

- ``block-influence`` (ShortGPT, Men et al. 2024): BI_l = 1 - mean cos(input of block l, its
  output); drop the K blocks of lowest BI, wherever they are.
- ``angular`` (Gromov et al. 2024): d(l, l+K) = arccos(cos(x_l, x_{l+K})) / pi between the input
  of block l and the input of block l+K; drop the contiguous slice of K blocks starting at the l
  that minimises it. The slice never includes the last block: the paper keeps the final layer
  (it maps the residual stream onto the output space), and so do we.
- ``lazy`` (ours, from ``analyze``): a layer's mean over heads of the heaviest column's share of
  its attention averaged over the windows (``column_mass_mean`` in analyze's layer table, the
  sink measure of its lazy verdict); drop the K laziest layers, never layer 0.
- ``first-n`` (Inheritune's choice): keep the first L - K blocks, i.e. drop the last K.

The residual-stream statistics come from ``depth`` and the attention from ``hooks``; the val
loss of a pruned model is the one yardstick, ``evaluation.loss.val_loss``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from inheritune.analysis import attention as metrics, memory
from inheritune.analysis.depth import angular_distance, block_influence, cosine_sums, residual_states
from inheritune.analysis.hooks import attention_probs
from inheritune.analysis.sampling import sample_sequences
from inheritune.data.shards import TokenData, open_data
from inheritune.errors import InherituneError
from inheritune.evaluation.loss import val_loss
from inheritune.models.families import num_layers
from inheritune.models.surgery import drop_blocks
from inheritune.reporting.plots import curves

CRITERIA: tuple[str, ...] = ("block-influence", "angular", "lazy", "first-n")
MEANING = {
    "block-influence": "1 - mean cos(block input, block output); the lowest are dropped",
    "angular": "arccos(mean cos(x_l, x_l+1)) / pi of each block alone; the dropped slice of K blocks "
               "minimises arccos(mean cos(x_l, x_l+K)) / pi (distance matrix), never including the last block",
    "lazy": "mean over heads of the heaviest column's share of the window-averaged attention; "
            "the highest are dropped, never layer 0",
    "first-n": "the block's index; the last K blocks are dropped (keep the first n)",
}
PLOT_CLIP = 8.0  # nats above the unpruned model's val loss where the sweep plot's axis stops


@dataclasses.dataclass(frozen=True)
class LayerScores:
    """One criterion's scores of one model's blocks: what :func:`choose` reads and reports show."""

    by: str  # one of CRITERIA
    per_layer: list[float]  # one number per block (see MEANING[by])
    distance: list[list[float]] | None = None  # angular only: [L+1, L+1] distances between residual states

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "meaning": MEANING[self.by]}


def check_criterion(by: str) -> str:
    if by not in CRITERIA:
        raise InherituneError(f"--by must be one of {', '.join(CRITERIA)}, not '{by}'")
    return by


@torch.no_grad()
def mean_cosines(model: PreTrainedModel, windows: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Mean over tokens of cos(x_i, x_j) between every pair of the L+1 residual states, ``[L+1, L+1]``."""
    def run(batch: torch.Tensor) -> torch.Tensor:
        with residual_states(model) as states:
            model(input_ids=batch.to(model.device), use_cache=False)
        return cosine_sums(states).cpu()

    pieces = memory.Batcher(batch_size, "residual cosines").pieces(windows, len, run, unit="window")
    return sum(pieces) / windows.numel()


@torch.no_grad()
def column_mass(model: PreTrainedModel, windows: torch.Tensor) -> list[float]:
    """Per layer: mean over heads of the heaviest column's share of the attention averaged over the windows."""
    n, t = windows.shape

    def run(batch: torch.Tensor) -> torch.Tensor:
        probs = attention_probs(model, batch.to(model.device))
        return torch.stack([p.sum(0).cpu() for p in probs])  # [L, H, T, T]

    batcher = memory.Batcher(max(1, memory.budget(model) // memory.attention_bytes(model, t)), "attention")
    total = sum(batcher.pieces(windows, len, run, unit="window"))
    mass, _column = metrics.heaviest_column(total / n)  # [L, H]
    return mass.mean(1).tolist()


def criteria_scores(model: PreTrainedModel, windows: torch.Tensor, by: str, batch_size: int = 8) -> LayerScores:
    """Score every block of ``model`` by criterion ``by`` on ``windows`` (``[N, T]`` token ids, any device)."""
    check_criterion(by)
    if by == "first-n":
        return LayerScores(by, [float(i) for i in range(num_layers(model.config))])
    was_training = model.training
    model.eval()
    try:
        if by == "lazy":
            return LayerScores(by, column_mass(model, windows))
        cos = mean_cosines(model, windows, batch_size)
    finally:
        model.train(was_training)
    if by == "block-influence":
        return LayerScores(by, block_influence(cos))
    distance = angular_distance(cos)
    return LayerScores(by, [float(distance[i, i + 1]) for i in range(len(distance) - 1)], distance.tolist())


def check_drop(k: int, layers: int) -> None:
    """K in 0..L-1: every rule keeps at least one block (angular the last, lazy the first)."""
    if not 0 <= k < layers:
        raise InherituneError(f"--drop-layers must be in 0..{layers - 1} for a {layers}-layer model, not {k}")


def best_slice(distance: Sequence[Sequence[float]], k: int) -> int:
    """Gromov et al.: the start l of the k-block slice, ending before the last block, minimising d(l, l+k)."""
    layers = len(distance) - 1
    starts = range(layers - k)  # l + k <= L - 1: the last block stays
    return min(starts, key=lambda l: distance[l][l + k])


def choose(scores: LayerScores, k: int) -> list[int]:
    """The ``k`` blocks to drop by ``scores.by``'s rule, sorted (see the module docstring)."""
    layers = len(scores.per_layer)
    check_drop(k, layers)
    if k == 0:
        return []
    if scores.by == "angular":
        start = best_slice(scores.distance, k)
        return list(range(start, start + k))
    if scores.by == "block-influence":
        order = sorted(range(layers), key=lambda i: scores.per_layer[i])
    elif scores.by == "lazy":
        order = sorted(range(1, layers), key=lambda i: -scores.per_layer[i])
    else:  # first-n
        order = list(range(layers - 1, -1, -1))
    return sorted(order[:k])


def scoring_windows(data: str | Path | TokenData, n: int = 32, seq_len: int = 256, seed: int = 0) -> torch.Tensor:
    """``[n, seq_len]`` windows of the data folder's train split: the blocks are chosen on other
    tokens than the val split that scores the pruned model."""
    token_data = data if isinstance(data, TokenData) else open_data(data)
    return sample_sequences(token_data.tokens("train"), n, seq_len, seed)


def drops_up_to(max_drop: int, step: int = 1) -> list[int]:
    """0, step, 2 step, ... up to ``max_drop`` (always included): the K values of a sweep."""
    if max_drop < 0 or step < 1:
        raise InherituneError(f"need max_drop >= 0 and step >= 1, not {max_drop} and {step}")
    return sorted(set(range(0, max_drop + 1, step)) | {max_drop})


def sweep(model: PreTrainedModel, data: str | Path | TokenData, windows: torch.Tensor,
          criteria: Sequence[str] = CRITERIA, max_drop: int = 8, step: int = 1, batch_size: int = 8) -> dict:
    """Val loss (the yardstick, on ``data``'s val split) after dropping K = 0, step, ... max_drop
    blocks by each criterion, scored on ``windows`` (take them from another split than val).

    Returns ``{"drops", "val_loss": {criterion: [...]}, "dropped": {criterion: [[layers], ...]},
    "scores": {criterion: LayerScores.to_json()}, "yardstick"}``; K = 0 (the model as is) is
    evaluated once and shared by every criterion.
    """
    criteria = [check_criterion(by) for by in criteria]
    drops = drops_up_to(max_drop, step)
    check_drop(max_drop, num_layers(model.config))  # before any work
    token_data = data if isinstance(data, TokenData) else open_data(data)
    scores = {by: criteria_scores(model, windows, by, batch_size) for by in criteria}
    plans = {by: [choose(scores[by], k) for k in drops] for by in criteria}
    losses: dict[tuple[int, ...], dict] = {}
    todo = sorted({tuple(plan) for by in criteria for plan in plans[by]})
    for plan in tqdm(todo, desc="layer-prune sweep", unit="model", disable=None):
        pruned = drop_blocks(model, plan) if plan else model
        losses[plan] = val_loss(pruned, token_data, batch_size)
    return {
        "drops": drops,
        "val_loss": {by: [losses[tuple(plan)]["loss"] for plan in plans[by]] for by in criteria},
        "dropped": plans,
        "scores": {by: scores[by].to_json() for by in criteria},
        "yardstick": losses[()]["yardstick"],
    }


def plot_sweep(result: dict, path: str | Path, title: str = "Val loss after dropping K blocks") -> Path:
    """Val loss vs blocks dropped, one line per criterion; the axis stops ``PLOT_CLIP`` nats above
    the model as is (K = 0), so that a criterion that breaks the model does not flatten the others."""
    series = {by: (result["drops"], losses) for by, losses in result["val_loss"].items()}
    base = next(iter(result["val_loss"].values()))[0]
    return curves(series, path, title, "blocks dropped (K)", "val loss (nats)",
                  hlines={f"no block dropped ({base:.2f})": base}, ylim=(base - 0.25, base + PLOT_CLIP))
