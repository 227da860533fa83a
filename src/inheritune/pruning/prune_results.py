"""What a prune job wrote: one typed result per job (a global head/FFN plan, whole blocks, uniform
width), its model card facts and the files beside the model (prune.json, sweep tables and plots).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from inheritune.analysis import layers as lp
from inheritune.atomic import atomic_write_json
from inheritune.models.surgery import spans
from inheritune.reporting.plots import panels
from inheritune.result import CommandResult

TOLERANCE = 0.05  # "prunable within 5%": relative accuracy loss (loss increase when there is no accuracy)


@dataclasses.dataclass
class PruneResult(CommandResult):
    """What ``prune`` wrote to ``out`` (the pruned model's folder); ``report()`` is prune.json."""

    out: Path
    model: str
    by: str  # the criterion: importance | induction | random (layers: a block selector, analysis/selection.py)
    ranked_by: str  # the --scores file, or "computed" (on the rank split here)
    source: str  # which source's importance ranked the units
    overlap: int  # ranking examples that are also scoring examples (0 unless --allow-overlap)
    iterative: int  # re-scoring steps (1: one-shot)
    heads_percent: float
    ffn_percent: float
    pruned_heads: list[list[int]]  # [[layer, head], ...]
    pruned_ffn: list[int]  # [layer, ...]
    heads_total: int
    ffn_total: int
    steps: list  # iterative: per step, the head importance it ranked by ([layers][heads])
    physical: str  # what --physical did ("" when not asked)
    before: dict  # source -> pr.score() on its score split
    after: dict  # the saved weights themselves
    masked: dict  # the same plan applied by hooks (must equal ``after``)
    sweep: dict  # source -> criterion -> {"heads"|"ffn": {"percent", "points"}}
    prunable: dict  # source -> criterion -> {"metric", "heads", "ffn"}: % prunable within 5%
    seconds: float

    def summary(self) -> str:
        """What the CLI prints (the files hold the rest)."""
        lines = []
        for name, before in self.before.items():
            after = self.after[name]
            text = f"{name}: loss {before['loss']:.4f} -> {after['loss']:.4f}"
            if before["accuracy"] is not None:
                text += (
                    f", accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f} (chance {before['chance']:.3f})"
                )
            lines.append(text)
            for by, row in self.prunable.get(name, {}).items():
                ffn = f", {row['ffn']:g}% of FFNs" if "ffn" in row else ""
                lines.append(f"  by {by}: within 5% {row['metric']}: up to {row['heads']:g}% of heads{ffn}")
        overlap = f", overlap {self.overlap}" if self.overlap else ""
        lines.append(
            f"pruned {len(self.pruned_heads)}/{self.heads_total} heads, {len(self.pruned_ffn)}/"
            f"{self.ffn_total} FFNs (by {self.by}, ranked on {self.source}{overlap}) -> {self.out} in "
            f"{self.seconds:.1f}s"
        )
        return "\n".join(lines)


@dataclasses.dataclass
class LayerPruneResult(CommandResult):
    """What ``prune --drop-layers K`` wrote to ``out``: the model without K whole blocks."""

    out: Path
    model: str
    by: str  # the block selector (analysis/selection.py)
    drop_layers: int
    dropped_layers: list[int]  # the blocks removed
    layer_scores: dict  # analysis.selection.Selection.to_json()
    before: dict  # {"val": {"loss": ...}}: the yardstick on the data's val split
    after: dict
    sweep: dict  # --sweep: {"layers": val loss vs K per selector}
    seconds: float

    def summary(self) -> str:
        """What the CLI prints (the files hold the rest)."""
        return (
            f"dropped blocks {self.dropped_layers} (by {self.by}): val loss {self.before['val']['loss']:.4f} -> "
            f"{self.after['val']['loss']:.4f} -> {self.out} in {self.seconds:.1f}s"
        )


@dataclasses.dataclass
class WidthPruneResult(CommandResult):
    """What ``prune --width-heads/--width-ffn`` wrote to ``out``: a narrower model, smaller files."""

    out: Path
    model: str
    by: str  # the ranking: activation | gradient
    head_unit: str  # group | query
    heads_percent: float
    ffn_percent: float
    geometry: dict  # {"before"|"after": {"heads", "kv_heads", "head_width", "ffn_neurons"}}
    params: dict  # {"before"|"after": parameter count}
    plan: dict  # models.width_cut.WidthPlan.to_json(): the units each layer keeps
    before: dict  # {"val": {"loss": ...}}: the reference
    after: dict  # the saved, cut model
    masked: dict  # the (depth-cut) model with the cut units masked (must equal ``after``)
    seconds: float
    dropped_layers: list[int] = dataclasses.field(default_factory=list)  # --budget-by both: the blocks dropped first
    layers_by: str = ""  # ... and the selector that chose them

    def summary(self) -> str:
        """What the CLI prints (the files hold the rest)."""
        a, b = self.geometry["before"], self.geometry["after"]
        dropped = (
            f"dropped blocks {spans(self.dropped_layers)} (by {self.layers_by}), then " if self.dropped_layers else ""
        )
        return (
            f"{dropped}cut width (by {self.by}): heads {a['heads']} -> {b['heads']} (key/value {a['kv_heads']} -> "
            f"{b['kv_heads']}), FFN neurons {a['ffn_neurons']} -> {b['ffn_neurons']} in every block; params "
            f"{self.params['before']:,} -> {self.params['after']:,}\n"
            f"val loss {self.before['val']['loss']:.4f} -> {self.after['val']['loss']:.4f} (masked reference "
            f"{self.masked['val']['loss']:.4f}) -> {self.out} in {self.seconds:.1f}s"
        )


def card_facts(result: PruneResult | LayerPruneResult | WidthPruneResult) -> dict:
    """The pruned model's card facts."""
    if isinstance(result, WidthPruneResult):
        a, b = result.geometry["before"], result.geometry["after"]
        depth = (
            f"dropped blocks {spans(result.dropped_layers)} by {result.layers_by}, then "
            if result.dropped_layers
            else ""
        )
        cut = (
            f"{depth}kept {b['heads']} of {a['heads']} query heads ({b['kv_heads']} of {a['kv_heads']} key/value "
            f"heads) and {b['ffn_neurons']} of {a['ffn_neurons']} FFN neurons in every block, ranked by {result.by}"
        )
    elif isinstance(result, LayerPruneResult):
        cut = f"dropped blocks {spans(result.dropped_layers)} by {result.by}"
    else:
        cut = (
            f"masked {len(result.pruned_heads)}/{result.heads_total} heads and {len(result.pruned_ffn)}/"
            f"{result.ffn_total} FFNs by {result.by}"
        )
    first = next(iter(result.after))
    return {
        "command": "prune",
        "pruning": cut,
        "training tokens": 0,
        f"{first} loss before": round(result.before[first]["loss"], 4),
        f"{first} loss after": round(result.after[first]["loss"], 4),
    }


def write_files(folder: Path, result: PruneResult | LayerPruneResult | WidthPruneResult) -> None:
    """prune.json and, per source and metric, the sweep: one panel per criterion, heads and FFNs
    with their 95% bands, the chance line (accuracy) and the 5% tolerance line."""
    atomic_write_json(folder / "prune.json", result.report())
    if isinstance(result, WidthPruneResult):
        return
    if isinstance(result, LayerPruneResult):
        if result.sweep:
            lp.plot_sweep(
                result.sweep["layers"],
                folder / "sweep_layers.png",
                "val loss after dropping K blocks, per criterion (first-n: Inheritune's choice)",
            )
        return
    for name, by_criterion in result.sweep.items():
        base = result.before[name]
        for metric in ("loss", "accuracy"):
            if base[metric] is None:
                continue
            plots = {
                by: {
                    ("heads" if kind == "heads" else "FFNs") + " pruned": (
                        c["percent"],
                        [p[metric] for p in c["points"]],
                        [p[f"{metric}_ci"] for p in c["points"]],
                    )
                    for kind, c in kinds.items()
                }
                for by, kinds in by_criterion.items()
            }
            limit = base[metric] * (1 - TOLERANCE if metric == "accuracy" else 1 + TOLERANCE)
            hlines = {f"-5% ({limit:.3f})" if metric == "accuracy" else f"+5% ({limit:.3f})": limit}
            if metric == "accuracy":
                hlines[f"chance ({base['chance']:.3f})"] = base["chance"]
            panels(
                plots,
                folder / f"sweep_{name.replace('/', '_')}_{metric}.png",
                title=f"pruning {name}: {metric} on the held-out score split (95% intervals)",
                xlabel="percent pruned",
                ylabel=metric,
                hlines=hlines,
            )
