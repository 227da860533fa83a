"""The study's findings for a reader: study.md (numbers, correlations with n and p, findings) and
its plots. Every sentence is assembled from ``StudyResult`` values; nothing here is a conclusion."""

from __future__ import annotations

from pathlib import Path

from inheritune.atomic import atomic_write_text
from inheritune.reporting.plots import bars, scatter

PLOTS = {
    "importance_vs_induction": "importance_vs_induction.png",
    "layer_importance": "layer_importance.png",
    "ffn_importance": "ffn_importance.png",
}


def _number(value: float | None, digits: str = ".3f") -> str:
    return "n/a" if value is None else format(value, digits)


def markdown(result) -> str:
    """study.md: what was run, the findings, the correlations and the agreement across sources."""
    lines = [
        f"# Component study of {result.model}",
        "",
        f"{result.num_layers} layers x {result.num_heads} heads; importance sources: "
        f"{', '.join(result.sources)}. Sub-folders: analysis/, importance/, induction/; joined in "
        "heads.csv and layers.csv.",
        "",
        "## Findings",
        "",
    ]
    lines += [
        f"- **Depth.** {result.findings['depth']['text']}.",
        f"- **Induction heads.** {result.findings['induction']['text']}.",
        f"- **Lazy layers.** {result.findings['lazy']['text']}.",
        "",
        "## Correlations (Spearman, two-sided permutation p-value)",
        "",
        "| x | y | n | rho | p | reading |",
        "|---|---|---|---|---|---|",
    ]
    for c in result.correlations.values():
        lines.append(
            f"| {c['x']} | {c['y']} | {c['n']} | {_number(c['spearman'])} | "
            f"{_number(c['p_value'], '.3g')} | {c['strength']} |"
        )
    lines += [
        "",
        "## Agreement of importance across sources",
        "",
        "| units | sources | mean Spearman | mean top-k Jaccard | k |",
        "|---|---|---|---|---|",
    ]
    for kind, a in result.agreement.items():
        lines.append(
            f"| {kind} | {a['sources']} | {_number(a['mean_spearman'])} | {_number(a['mean_jaccard'])} | {a['top_k']} |"
        )
    lines += ["", "Plots: " + ", ".join(PLOTS.values()) + "."]
    return "\n".join(lines) + "\n"


def write(folder: Path, result) -> None:
    """study.md and the plots: importance vs induction prefix score per head (top induction heads
    labelled), head and FFN importance per layer (lazy layers in red)."""
    atomic_write_text(folder / "study.md", markdown(result))
    importance = [h["importance"] for h in result.heads]
    prefix = [h["prefix"] for h in result.heads]
    best = sorted(range(len(prefix)), key=lambda i: -prefix[i])[:5]
    labels = {i: f"{result.heads[i]['layer']}.{result.heads[i]['head']}" for i in best}
    lazy_heads = [i for i, h in enumerate(result.heads) if h["lazy_layer"]]
    scatter(
        prefix,
        importance,
        path=folder / PLOTS["importance_vs_induction"],
        title="head importance vs induction (red: heads of lazy layers)",
        xlabel="induction prefix-matching score",
        ylabel="aggregate head importance",
        highlight=lazy_heads,
        labels=labels,
    )
    lazy = [row["layer"] for row in result.layers if row["lazy"]]
    bars(
        [row["head_importance"] for row in result.layers],
        folder / PLOTS["layer_importance"],
        title="summed head importance per layer (red: lazy)",
        xlabel="layer",
        ylabel="importance",
        highlight=lazy,
    )
    bars(
        [row["ffn_importance"] for row in result.layers],
        folder / PLOTS["ffn_importance"],
        title="FFN importance per layer (red: lazy)",
        xlabel="layer",
        ylabel="aggregate loss increase share",
        highlight=lazy,
    )
