"""How much the important units agree across sources (tasks x shot counts), and one ranking for all.

The OPT-66B study compares head importance across tasks and shot counts with Spearman's rank
correlation (do the sources order the units alike?) and finds a task-agnostic core; the top-k
Jaccard index says the same of the units that pruning would keep. Pure numpy, any unit shape:
heads ``[layers, heads]`` and FFNs ``[layers]`` alike are flattened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

TOP_SHARE = 0.2  # top-k Jaccard: k = 20% of the units


def ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (what Spearman's coefficient needs)."""
    values = np.asarray(values, dtype=float).ravel()
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    result = np.empty(values.size)
    start = 0
    for end in range(1, values.size + 1):
        if end == values.size or sorted_values[end] != sorted_values[start]:
            result[order[start:end]] = (start + end + 1) / 2
            start = end
    return result


def rank_descending(values: np.ndarray) -> np.ndarray:
    """1 = the highest value (ties by position, as in pruning), in ``values``' shape."""
    flat = np.asarray(values, dtype=float).ravel()
    order = np.empty(flat.size, dtype=int)
    order[np.argsort(-flat, kind="stable")] = np.arange(1, flat.size + 1)
    return order.reshape(np.shape(values))


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation; None when either side is constant (no order to compare)."""
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def top_k(values: np.ndarray, k: int) -> set[int]:
    """Flat indices of the ``k`` highest values (ties broken by position, as in pruning)."""
    return set(np.argsort(-np.asarray(values, dtype=float).ravel(), kind="stable")[:k].tolist())


def top_count(units: int, top_share: float = TOP_SHARE) -> int:
    return max(1, round(top_share * units))


def jaccard(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """|top-k(a) & top-k(b)| / |top-k(a) | top-k(b)|: 1.0 when both keep the same units."""
    sa, sb = top_k(a, k), top_k(b, k)
    return len(sa & sb) / len(sa | sb)


def normalised(values: np.ndarray) -> np.ndarray:
    """Scores as shares of their source's total (negatives, a knock-out that helps, count as 0).

    Sources differ in scale (a task with a higher loss has larger gradients; an LM window scores
    255 tokens, a prompt one), so raw scores would let the loudest source dominate an average.
    Shares of the total weigh every source equally, keep a useless unit at exactly 0 and keep
    each source's ratios between units (a z-score would do neither).
    """
    values = np.clip(np.asarray(values, dtype=float), 0, None)
    total = values.sum()
    return values / total if total > 0 else values


def aggregate(scores: Mapping[str, np.ndarray]) -> np.ndarray:
    """One ranking for all sources: the mean of their normalised scores."""
    return np.mean([normalised(s) for s in scores.values()], axis=0)


def off_diagonal_mean(matrix: Sequence[Sequence[float | None]]) -> float | None:
    """Mean of the defined off-diagonal entries (None with fewer than two sources)."""
    values = [v for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j and v is not None]
    return float(np.mean(values)) if values else None


def compare(scores: Mapping[str, np.ndarray], top_share: float = TOP_SHARE) -> dict:
    """Spearman and top-k Jaccard matrices across sources (in ``sources`` order), their
    off-diagonal means, and k."""
    names = list(scores)
    units = np.asarray(scores[names[0]]).size
    k = top_count(units, top_share)
    rho = [[spearman(scores[a], scores[b]) for b in names] for a in names]
    jac = [[jaccard(scores[a], scores[b], k) for b in names] for a in names]
    return {
        "sources": names,
        "top_k": k,
        "spearman": rho,
        "jaccard": jac,
        "mean_spearman": off_diagonal_mean(rho),
        "mean_jaccard": off_diagonal_mean(jac),
    }
