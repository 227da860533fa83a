"""`analyze`: see lazy layers and layer redundancy on your own model, and how many layers to inherit.

One pass over N sequences of T tokens captures, per layer, the post-softmax attention of every
head (through the model's eager attention, restored afterwards) and the residual stream (block
hooks). From them:

- per head: approximate rank at energy tau of the matrix averaged over the sequences (as the
  authors do) and the per-sequence rank distribution; the heaviest column's share of attention,
  which column it is and how often it is the first token; the fewest columns holding 90% of the
  squared mass; the normalised row entropy;
- per layer: max and mean over heads, Block Influence, the angular distance to the next layer,
  and the lazy verdict: max-over-heads rank <= ``lazy_rank`` * T AND mean-over-heads heaviest
  column share >= ``lazy_mass``;
- a recommendation of how many leading layers to inherit: the layers before the first lazy layer
  at depth >= ``min_depth`` * L (rule stated in the output), and, as a second opinion, the depth
  where cumulative Block Influence reaches ``bi_share``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import numpy as np
import torch
from transformers import PreTrainedModel

from inheritune.analysis import attention as metrics
from inheritune.analysis import batching
from inheritune.analysis.depth import angular_distance, best_slices, block_influence, cosine_sums, residual_states
from inheritune.analysis.hooks import attention_probs, hooks
from inheritune.atomic import atomic_dir, atomic_write_json, atomic_write_text
from inheritune.errors import InherituneError
from inheritune.models.families import family_of, module, num_heads, num_layers
from inheritune.reporting import plots

FORMAT = "inheritune-analysis/1"
# Defaults of the lazy verdict, chosen for T ~ 100 (see the README): diffuse (uniform causal)
# attention already has rank ~5 at T=100, so rank alone cannot flag a layer; a head whose
# heaviest column takes half of all attention is a sink, which random or local heads never are.
LAZY_RANK = 0.1  # max over heads of the rank <= 0.1 * T (10 at T=100)
LAZY_MASS = 0.5  # mean over heads of the heaviest-column share >= 0.5
MIN_DEPTH = 0.25  # the recommendation looks for lazy layers from depth ceil(0.25 * L) on
BI_SHARE = 0.9  # secondary rule: depth where cumulative Block Influence reaches this share
PLOTS = {
    "rank": "rank_per_layer.png",
    "column_mass": "column_mass.png",
    "block_influence": "block_influence.png",
    "angular_distance": "angular_distance.png",
    "attention_maps": "attention_maps.png",
}
# Per-head arrays written to analysis.json and to one CSV each.
HEAD_METRICS = {
    "rank": "approximate rank at energy tau of the head's attention averaged over the sequences",
    "rank_seq_mean": "mean over sequences of the per-sequence rank",
    "rank_seq_q10": "10th percentile of the per-sequence rank",
    "rank_seq_q50": "median of the per-sequence rank",
    "rank_seq_q90": "90th percentile of the per-sequence rank",
    "column_mass": "share of attention on the heaviest column of the averaged matrix",
    "column_mass_seq_mean": "mean over sequences of the per-sequence heaviest-column share",
    "heaviest_column": "index of the heaviest column of the averaged matrix (0 = first token)",
    "first_token_share": "fraction of sequences whose heaviest column is the first token",
    "columns_90": "fewest columns holding 90% of the squared mass of the averaged matrix",
    "entropy": "mean over sequences and rows of the normalised row entropy (1 = uniform)",
}


def check_options(
    sequences: int,
    seq_len: int,
    tau: float,
    batch_size: int | None,
    lazy_rank: float,
    lazy_mass: float,
    bi_share: float,
    min_depth: float,
) -> None:
    if not 0 <= min_depth < 1:
        raise InherituneError(f"--min-depth must be in [0, 1), not {min_depth}")
    if not 0 < tau <= 1:
        raise InherituneError(f"--tau must be in (0, 1], not {tau}")
    if sequences < 1:
        raise InherituneError(f"--sequences must be at least 1, not {sequences}")
    if seq_len < 2:
        raise InherituneError(f"--seq-len must be at least 2, not {seq_len}")
    if batch_size is not None and batch_size < 1:
        raise InherituneError(f"--batch-size must be at least 1, not {batch_size}")
    for name, value in (("--lazy-rank", lazy_rank), ("--lazy-mass", lazy_mass), ("--bi-share", bi_share)):
        if not 0 < value <= 1:
            raise InherituneError(f"{name} must be in (0, 1], not {value}")


@contextmanager
def _last_position_logits(model: PreTrainedModel) -> Iterator[None]:
    """Feed the LM head only the last position: the analysis needs no logits, and the head
    (vocabulary x hidden) can cost as much as all blocks together (Gemma-3: 262k x 640)."""
    head = module(model, family_of(model.config).head)
    last = lambda _m, args: (args[0][:, -1:], *args[1:])  # noqa: E731
    with hooks(pre=[(head, last)] if head is not None else []):
        yield


@torch.no_grad()
def _capture(model: PreTrainedModel, ids: torch.Tensor, tau: float, batch_size: int) -> dict:
    """One pass over the sequences; keeps only sums and per-sequence scalars, never all matrices."""
    n, t = ids.shape
    device = next(model.parameters()).device

    def run(batch: torch.Tensor) -> dict:
        with residual_states(model) as states, _last_position_logits(model):
            probs = torch.stack(attention_probs(model, batch.to(device))).cpu()  # [L, B, H, T, T]
        mass, column = metrics.heaviest_column(probs)
        return {
            "attn": probs.sum(1),
            "cos": cosine_sums(cast(list[torch.Tensor], states)).cpu(),  # every state is recorded by the pass
            "rank": metrics.approx_rank_fast(probs, tau),
            "mass": mass,
            "column": column,
            "entropy": metrics.row_entropy(probs),
        }

    sum_attn = sum_cos = 0
    ranks, masses, columns, entropies = [], [], [], []
    for part in batching.Batcher(batch_size, "attention").pieces(ids, len, run, unit="sequence"):
        sum_attn, sum_cos = sum_attn + part["attn"], sum_cos + part["cos"]
        ranks.append(part["rank"])
        masses.append(part["mass"])
        columns.append(part["column"])
        entropies.append(part["entropy"])
    return {
        "mean_attn": sum_attn / n,  # [L, H, T, T]
        "mean_cos": sum_cos / (n * t),  # [L+1, L+1]
        "ranks": torch.cat(ranks, 1).float(),  # [L, N, H]
        "masses": torch.cat(masses, 1),
        "columns": torch.cat(columns, 1),
        "entropies": torch.cat(entropies, 1),
    }


def _head_metrics(c: dict, tau: float) -> dict[str, np.ndarray]:
    """Every per-head metric as an ``[L, H]`` array."""
    mean = c["mean_attn"]
    mass, column = metrics.heaviest_column(mean)
    q = torch.quantile(c["ranks"], torch.tensor([0.1, 0.5, 0.9]), dim=1)  # [3, L, H]
    out = {
        "rank": metrics.approx_rank(mean, tau),
        "rank_seq_mean": c["ranks"].mean(1),
        "rank_seq_q10": q[0],
        "rank_seq_q50": q[1],
        "rank_seq_q90": q[2],
        "column_mass": mass,
        "column_mass_seq_mean": c["masses"].mean(1),
        "heaviest_column": column,
        "first_token_share": (c["columns"] == 0).float().mean(1),
        "columns_90": metrics.columns_for_energy(mean, 0.9),
        "entropy": c["entropies"].mean(1),
    }
    return {k: v.numpy() for k, v in out.items()}


def _recommend(lazy: list[bool], bi: list[float], bi_share: float, min_depth: float) -> dict:
    """Primary rule: inherit the layers before the first lazy layer at depth >= ``min_depth`` * L;
    secondary: cumulative Block Influence.

    Lazy layers in the first quarter (e.g. an early layer whose heads all watch BOS) are not the
    deep-layer degeneration the recipe rests on, and inheriting fewer than L/4 layers is far
    outside where it was tested (the papers keep half or more).
    """
    n_layers = len(lazy)
    start = max(1, math.ceil(min_depth * n_layers))
    first_lazy = next((i for i in range(start, n_layers) if lazy[i]), None)
    cumulative = np.cumsum(bi) / max(sum(bi), 1e-12)
    by_bi = min(int(np.searchsorted(cumulative, bi_share - 1e-9)) + 1, n_layers)
    primary = n_layers if first_lazy is None else first_lazy
    rule = (
        f"number of layers before the first lazy layer at or after layer {start}"
        if first_lazy is not None
        else f"no lazy layer at or after layer {start}: keep every layer (see by_block_influence)"
    )
    return {
        "recommended_layers": primary,
        "rule": rule,
        "first_lazy_layer": first_lazy,
        "by_block_influence": by_bi,
        "by_block_influence_rule": f"fewest leading layers holding {bi_share:g} of the total Block Influence",
    }


def _csv(matrix: np.ndarray, header: str) -> str:
    rows = [f"layer,{header}"]
    for layer, row in enumerate(matrix):
        rows.append(f"{layer}," + ",".join(f"{v:.6g}" for v in row))
    return "\n".join(rows) + "\n"


def write(
    result: dict,
    heads: dict[str, np.ndarray],
    mean_attn: torch.Tensor,
    distance: np.ndarray,
    out: Path,
    overwrite: bool,
) -> None:
    """analysis.json (``result``), one CSV per metric, the PNGs; all or nothing (atomic folder)."""
    n_layers, n_heads = heads["rank"].shape
    t = result["seq_len"]
    layers = result["layers"]
    lazy = result["lazy_layers"]
    with atomic_dir(out, overwrite) as tmp:
        head_cols = ",".join(f"head_{h}" for h in range(n_heads))
        for name, matrix in heads.items():
            atomic_write_text(tmp / f"{name}.csv", _csv(matrix, head_cols))
        summary_keys = [
            "rank_max",
            "rank_mean",
            "column_mass_max",
            "column_mass_mean",
            "columns_90_max",
            "entropy_mean",
            "first_token_share_mean",
            "block_influence",
            "angular_distance_next",
            "lazy",
        ]
        atomic_write_text(
            tmp / "layers.csv",
            _csv(np.array([[float(row[k]) for k in summary_keys] for row in layers]), ",".join(summary_keys)),
        )
        atomic_write_text(
            tmp / "angular_distance.csv", _csv(distance, ",".join(f"x_{i}" for i in range(len(distance))))
        )

        x = list(range(n_layers))
        plots.curves(
            {"max over heads": (x, heads["rank"].max(1)), "mean over heads": (x, heads["rank"].mean(1))},
            tmp / result["plots"]["rank"],
            title=f"Attention rank at {result['tau']:g} energy (T={t})",
            xlabel="layer",
            ylabel="approximate rank",
            hlines={
                f"lazy threshold ({result['thresholds']['lazy_rank_max']})": result["thresholds"]["lazy_rank_max"],
                f"uniform causal ({result['uniform_causal_rank']})": result["uniform_causal_rank"],
            },
        )
        plots.heatmap(
            heads["column_mass"],
            tmp / result["plots"]["column_mass"],
            "Heaviest-column share of attention",
            cbar="share",
            vmin=0,
            vmax=1,
        )
        plots.bars(
            [row["block_influence"] for row in layers],
            tmp / result["plots"]["block_influence"],
            title="Block Influence (1 - cos(input, output)); lazy layers in red",
            xlabel="layer",
            ylabel="Block Influence",
            highlight=lazy,
        )
        plots.heatmap(
            distance,
            tmp / result["plots"]["angular_distance"],
            "Angular distance between residual states",
            xlabel="state (input of layer)",
            ylabel="state (input of layer)",
            cbar="arccos(cos)/pi",
            vmin=0,
        )
        ex = result["example_heads"]
        plots.matrices(
            {
                f"{label}: layer {ex[kind][0]} head {ex[kind][1]}": mean_attn[ex[kind][0], ex[kind][1]].numpy()
                for kind, label in (("lazy", "most sink-like head"), ("non_lazy", "highest-rank head"))
            },
            tmp / result["plots"]["attention_maps"],
            "Attention averaged over the sequences",
            cbar="probability",
        )
        atomic_write_json(tmp / "analysis.json", result)


def measure_attention(
    model: PreTrainedModel,
    ids: torch.Tensor,
    *,
    tau: float,
    batch_size: int | None,
    lazy_rank: float,
    lazy_mass: float,
    bi_share: float,
    min_depth: float,
) -> tuple[dict, dict[str, np.ndarray], torch.Tensor, np.ndarray]:
    """The analysis of ``model`` on the token windows ``ids`` ``[N, T]``: the analysis.json fields
    that depend on the model, the per-head metrics, the mean attention maps and the angular distances."""
    n_layers, n_heads = num_layers(model.config), num_heads(model.config)
    sequences, seq_len = ids.shape
    if batch_size is None:  # the attention probabilities, on the device and their copy on the host
        batch_size = max(1, min(sequences, batching.budget(model) // batching.attention_bytes(model, seq_len)))
    was_training = model.training
    model.eval()
    try:
        captured = _capture(model, ids, tau, batch_size)
    finally:
        model.train(was_training)
    heads = _head_metrics(captured, tau)
    distance = angular_distance(captured["mean_cos"])
    rank_max = max(1, math.floor(lazy_rank * seq_len))
    layers = _layer_rows(
        heads, block_influence(captured["mean_cos"]), distance=distance, rank_max=rank_max, lazy_mass=lazy_mass
    )
    flat_mass, flat_rank = heads["column_mass"].ravel(), heads["rank"].ravel()
    result = {
        "model_type": model.config.model_type,
        "num_layers": n_layers,
        "num_heads": n_heads,
        "thresholds": {
            "lazy_rank": lazy_rank,
            "lazy_rank_max": rank_max,
            "lazy_mass": lazy_mass,
            "bi_share": bi_share,
            "min_depth": min_depth,
        },
        "lazy_rule": f"lazy = max-over-heads rank <= {rank_max} (lazy_rank * T) AND mean-over-heads "
        f"heaviest-column share >= {lazy_mass:g}",
        "uniform_causal_rank": metrics.uniform_causal_rank(seq_len, tau),
        "lazy_layers": [row["layer"] for row in layers if row["lazy"]],
        **_recommend([row["lazy"] for row in layers], [row["block_influence"] for row in layers], bi_share, min_depth),
        "layers": layers,
        "head_metrics": HEAD_METRICS,
        "angular_distance": distance.tolist(),
        "best_slices_to_drop": best_slices(distance),
        # Example maps: the most sink-like head of all, and the highest-rank head.
        "example_heads": {
            "lazy": list(divmod(int(np.argmax(flat_mass)), n_heads)),
            "non_lazy": list(divmod(int(np.lexsort((flat_mass, -flat_rank))[0]), n_heads)),
        },
        "plots": dict(PLOTS),
        "csv": [f"{k}.csv" for k in HEAD_METRICS] + ["layers.csv", "angular_distance.csv"],
    }
    return result, heads, captured["mean_attn"], distance.numpy()


def _layer_rows(
    heads: dict[str, np.ndarray], bi: list[float], distance: torch.Tensor, rank_max: int, lazy_mass: float
) -> list[dict]:
    """One row per layer: every head's metrics, their max and mean, Block Influence, the angular
    distance to the next layer and the lazy verdict."""
    layers = []
    for layer in range(len(bi)):
        row: dict = {"layer": layer}
        for key, matrix in heads.items():
            row[key] = matrix[layer].tolist()
        for key in ("rank", "rank_seq_mean", "column_mass", "columns_90", "entropy", "first_token_share"):
            row[f"{key}_max"] = float(heads[key][layer].max())
            row[f"{key}_mean"] = float(heads[key][layer].mean())
        row["block_influence"] = bi[layer]
        row["angular_distance_next"] = float(distance[layer, layer + 1])
        row["lazy"] = bool(row["rank_max"] <= rank_max and row["column_mass_mean"] >= lazy_mass)
        layers.append(row)
    return layers
