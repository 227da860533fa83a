"""What the study reads off the joined tables: Spearman correlations with permutation p-values, said in
words, and the three findings (where importance sits in depth, whether induction heads matter,
whether lazy layers are the dispensable ones).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inheritune.analysis import overlap as ov
from inheritune.analysis.unit_importance import THIRDS

PERMUTATIONS = 2000


SIGNIFICANT = 0.05


def permutation_p(x: np.ndarray, y: np.ndarray, rho: float, rng: np.random.Generator) -> float:
    """Two-sided p-value of Spearman's rho: the share of shuffles of ``y`` at least as extreme."""
    rx, ry = ov.ranks(x), ov.ranks(y)
    rx, ry = (rx - rx.mean()) / rx.std(), (ry - ry.mean()) / ry.std()
    shuffled = np.stack([rng.permutation(ry) for _ in range(PERMUTATIONS)])
    extreme = np.sum(np.abs(shuffled @ rx / rx.size) >= abs(rho) - 1e-12)
    return float((1 + extreme) / (1 + PERMUTATIONS))


def strength(rho: float | None, p: float | None) -> str:
    """Plain words for a correlation: its size, and whether it could be chance."""
    if rho is None:
        return "undefined (one side is constant)"
    assert p is not None  # a defined rho comes with its p-value (see correlation)
    size = abs(rho)
    word = "negligible" if size < 0.1 else "weak" if size < 0.3 else "moderate" if size < 0.5 else "strong"
    sign = "positive" if rho > 0 else "negative"
    verdict = "significant" if p < SIGNIFICANT else "not significant"
    return f"{word} {sign}, {verdict} (p = {p:.3g})"


def correlation(x_name: str, y_name: str, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> dict:
    """Spearman's rho of two per-unit arrays, with n and a permutation p-value."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    rho = ov.spearman(x, y)
    p = None if rho is None else permutation_p(x, y, rho, rng)
    return {"x": x_name, "y": y_name, "n": int(x.size), "spearman": rho, "p_value": p, "strength": strength(rho, p)}


def depth_finding(clusters: dict) -> dict:
    """Which third of the depth holds most of the aggregate head and FFN importance mass."""
    found: dict[str, Any] = {}
    for kind, c in clusters.items():
        peak = max(THIRDS, key=lambda t: c["mass_share"][t])
        found[kind] = {"peak_third": peak, "mass_share": c["mass_share"]}
    found["text"] = "; ".join(
        f"{'heads' if kind == 'heads' else 'FFNs'}: the {f['peak_third']} third holds "
        f"{f['mass_share'][f['peak_third']]:.0%} of the importance mass"
        for kind, f in found.items()
    )
    return found


def induction_finding(importance: np.ndarray, prefix: np.ndarray, corr: dict) -> dict:
    """Are the top induction heads among the top-importance heads? Top-k (20% of heads) overlap
    against what random sets of k would share (k * k / n)."""
    n = importance.size
    k = ov.top_count(n)
    shared = len(ov.top_k(importance, k) & ov.top_k(prefix, k))
    chance = k * k / n
    best = int(np.argmax(prefix))
    best_rank = int(ov.rank_descending(importance).ravel()[best])
    layer, head = divmod(best, importance.shape[1])
    jaccard = ov.jaccard(importance, prefix, k)
    text = (
        f"{shared} of the top {k} induction heads are among the top {k} heads by importance "
        f"(random sets would share {chance:.1f}; Jaccard {jaccard:.2f}); "
        f"the strongest induction head {layer}.{head} (prefix {prefix.ravel()[best]:.2f}) ranks "
        f"{best_rank} of {n} by importance; importance vs prefix score: {corr['strength']}"
    )
    return {
        "top_k": k,
        "shared": shared,
        "chance": chance,
        "jaccard": jaccard,
        "best_induction_head": [layer, head],
        "best_induction_head_importance_rank": best_rank,
        "text": text,
    }


def lazy_finding(layer_importance: np.ndarray, ffn_importance: np.ndarray, lazy: np.ndarray, corr: dict) -> dict:
    """Do lazy layers carry less importance? Mean summed head importance and mean FFN importance,
    lazy vs other layers."""
    if not lazy.any() or lazy.all():
        which = "no layer is" if not lazy.any() else "every layer is"
        return {
            "lazy_layers": int(lazy.sum()),
            "heads": None,
            "ffn": None,
            "text": f"{which} lazy: no comparison is possible",
        }
    means = {
        kind: {"lazy": float(v[lazy].mean()), "other": float(v[~lazy].mean())}
        for kind, v in (("heads", layer_importance), ("ffn", ffn_importance))
    }
    parts = [
        f"{'less' if m['lazy'] < m['other'] else 'more'} {label} importance (mean {m['lazy']:.3g} vs "
        f"{m['other']:.3g} per layer)"
        for label, m in (("head", means["heads"]), ("FFN", means["ffn"]))
    ]
    text = (
        f"the {int(lazy.sum())} lazy layers carry {parts[0]} and {parts[1]} than the other "
        f"{int((~lazy).sum())}; summed head importance vs lazy verdict: {corr['strength']}"
    )
    return {"lazy_layers": int(lazy.sum()), **means, "text": text}
