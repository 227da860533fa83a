"""``study``: the component study in one run: analyze, importance and induction on one loaded model,
joined per head and per layer, with the correlations between them and findings read off the numbers.

``study(model, data=DIR, out=OUT)`` is ``inheritune study MODEL --data DIR --out OUT``: the same
arguments, the same folder, and a ``StudyResult``. OUT holds the three commands' own folders
(``analysis/``, ``importance/``, ``induction/``) and the join: heads.csv, layers.csv, study.json
(``result.report()``), study.md and plots (``reporting.study_report``).

Correlations are Spearman's, each with the number of units it is over and a two-sided permutation
p-value (seeded, ``PERMUTATIONS`` shuffles), so a weak or insignificant one reads as such.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedModel

from inheritune.analysis import overlap as ov
from inheritune.analysis.analyze_job import NO_TOKENIZER, analyze
from inheritune.analysis.example_sources import check_shots, check_sources
from inheritune.analysis.importance_job import importance
from inheritune.analysis.induction_job import induction
from inheritune.analysis.unit_importance import THIRDS
from inheritune.atomic import atomic_dir, atomic_write_json, atomic_write_text, check_output_dir, csv_text
from inheritune.errors import InherituneError
from inheritune.models.families import context_length
from inheritune.models.loading import load, model_name
from inheritune.options import positive
from inheritune.reporting.study_report import write
from inheritune.result import CommandResult

TASKS = ("mmlu-stem", "mmlu-humanities", "bb-sports-understanding")  # run on SmolLM2 on a CPU in minutes
PERMUTATIONS = 2000
SIGNIFICANT = 0.05
SEG_LEN, REPEATS = 25, 4  # induction's defaults, shortened to fit a short context


@dataclasses.dataclass
class StudyResult(CommandResult):
    """What ``study`` wrote to ``out``; ``report()`` is study.json."""

    out: Path
    model: str
    num_layers: int
    num_heads: int
    sources: list[str]  # importance's sources: "lm" and "task/Nshot"
    heads: list  # per (layer, head): lazy_layer, rank, column_mass, importance, importance_rank, prefix, copying
    layers: list  # per layer: lazy, block_influence, column_mass_mean, ffn_importance, head_importance
    correlations: dict  # name -> {"x", "y", "n", "spearman", "p_value", "strength"}
    agreement: dict  # importance's Spearman/Jaccard summary across sources, heads and FFNs
    findings: dict  # "depth", "induction", "lazy": numbers and one sentence each
    seconds: float

    def summary(self) -> str:
        """What the CLI prints (the files hold the rest)."""
        lines = []
        for name in ("depth", "induction", "lazy"):
            lines.append(f"{name}: {self.findings[name]['text']}")
        lines.append(f"-> {self.out} in {self.seconds:.1f}s")
        return "\n".join(lines)


def study(
    model: str | Path | PreTrainedModel,
    *,
    out: str | Path,
    data: str | Path | None = None,
    text: str | Path | None = None,
    tasks: Sequence[str] = TASKS,
    shots: int | Sequence[int] = (0, 3),
    examples: int = 16,
    seq_len: int = 128,
    sequences: int = 32,
    seeds: int = 100,
    seed: int = 0,
    include_path: str | Path | None = None,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    tokenizer=None,
    device: str = "cpu",
    device_map: str | None = None,
) -> StudyResult:
    """Load ``model`` once; run analyze (``sequences`` x ``seq_len`` tokens of ``data``/``text``),
    importance (``examples`` LM windows and prompts per task x shot count) and induction (``seeds``
    random repeated sequences) into OUT's sub-folders; join and correlate them."""
    start = time.perf_counter()
    if (data is None) == (text is None):
        raise InherituneError("give exactly one of --data DIR or --text FILE (analyze and the LM windows need it)")
    tasks = check_sources(data, text, tasks=tasks, examples=examples, include_path=include_path)
    counts = check_shots(shots)
    for value, name in ((seq_len, "--seq-len"), (sequences, "--sequences"), (seeds, "--seeds")):
        positive(value, name)
    check_output_dir(out, overwrite)  # fail before the slow load
    loaded, tok = load(
        model,
        tokenizer,
        trust_remote_code,
        needed=text is not None or bool(tasks),
        no_tokenizer=NO_TOKENIZER,
        device=device,
        device_map=device_map,
    )
    common: dict[str, Any] = {"tokenizer": tok, "device": device, "device_map": device_map}
    seg_len = induction_seg_len(loaded)
    with atomic_dir(out, overwrite) as tmp:
        analysis = analyze(
            loaded,
            out=tmp / "analysis",
            data=data,
            text=text,
            sequences=sequences,
            seq_len=seq_len,
            seed=seed,
            **common,
        )
        scores = importance(
            loaded,
            out=tmp / "importance",
            data=data,
            text=text,
            tasks=tasks,
            examples=examples,
            seq_len=seq_len,
            shots=counts,
            seed=seed,
            include_path=include_path,
            **common,
        )
        heads_ = induction(loaded, out=tmp / "induction", seg_len=seg_len, repeats=REPEATS, seeds=seeds, **common)
        result = join(out, model_name(model), analysis=analysis, scores=scores, heads_=heads_, seed=seed)
        atomic_write_json(tmp / "study.json", result.report())
        write(tmp, result)
        _write_tables(tmp, result)
    result.seconds = time.perf_counter() - start
    return result


def induction_seg_len(model: PreTrainedModel) -> int:
    """Induction's segment length, shortened so ``REPEATS`` segments and a BOS fit the context."""
    context = context_length(model.config) or SEG_LEN * REPEATS + 1
    seg_len = min(SEG_LEN, (context - 1) // REPEATS)
    if seg_len < 2:
        raise InherituneError(f"the model's context ({context} tokens) is too short for induction scores")
    return seg_len


def join(out: str | Path, model: str, analysis, scores, heads_, seed: int) -> StudyResult:
    """The three commands' results as one table per head and per layer, correlated."""
    layers, n_heads = analysis.num_layers, analysis.num_heads
    lazy = np.array([row["lazy"] for row in analysis.layers])
    rank = np.array([row["rank"] for row in analysis.layers], dtype=float)
    mass = np.array([row["column_mass"] for row in analysis.layers], dtype=float)
    head_imp = np.asarray(scores.aggregate["head_importance"], dtype=float)
    ffn_imp = np.asarray(scores.aggregate["ffn_loss_increase"], dtype=float)
    prefix, copying = np.asarray(heads_.prefix, dtype=float), np.asarray(heads_.copying, dtype=float)
    bi = np.array([row["block_influence"] for row in analysis.layers], dtype=float)
    imp_rank = ov.rank_descending(head_imp)
    heads = [
        {
            "layer": layer,
            "head": h,
            "lazy_layer": bool(lazy[layer]),
            "rank": float(rank[layer, h]),
            "column_mass": float(mass[layer, h]),
            "importance": float(head_imp[layer, h]),
            "importance_rank": int(imp_rank[layer, h]),
            "prefix": float(prefix[layer, h]),
            "copying": float(copying[layer, h]),
        }
        for layer in range(layers)
        for h in range(n_heads)
    ]
    layer_rows = [
        {
            "layer": layer,
            "lazy": bool(lazy[layer]),
            "block_influence": float(bi[layer]),
            "column_mass_mean": float(mass[layer].mean()),
            "ffn_importance": float(ffn_imp[layer]),
            "head_importance": float(head_imp[layer].sum()),
        }
        for layer in range(layers)
    ]
    rng = np.random.default_rng(seed)
    correlations = {
        "head_importance_vs_induction_prefix": correlation(
            "head importance", "induction prefix score", x=head_imp, y=prefix, rng=rng
        ),
        "head_importance_vs_induction_copying": correlation(
            "head importance", "induction copying score", x=head_imp, y=copying, rng=rng
        ),
        "head_importance_vs_column_mass": correlation(
            "head importance", "heaviest-column mass", x=head_imp, y=mass, rng=rng
        ),
        "ffn_importance_vs_block_influence": correlation("FFN importance", "Block Influence", x=ffn_imp, y=bi, rng=rng),
        "layer_head_importance_vs_lazy": correlation(
            "summed head importance per layer",
            "lazy verdict (1 = lazy)",
            x=head_imp.sum(1),
            y=lazy.astype(float),
            rng=rng,
        ),
    }
    agreement = {
        kind: {
            "sources": len(o["sources"]),
            "mean_spearman": o["mean_spearman"],
            "mean_jaccard": o["mean_jaccard"],
            "top_k": o["top_k"],
        }
        for kind, o in scores.overlap.items()
    }
    findings = {
        "depth": depth_finding(scores.aggregate["clusters"]),
        "induction": induction_finding(head_imp, prefix, correlations["head_importance_vs_induction_prefix"]),
        "lazy": lazy_finding(head_imp.sum(1), ffn_imp, lazy, correlations["layer_head_importance_vs_lazy"]),
    }
    return StudyResult(
        out=Path(out),
        model=model,
        num_layers=layers,
        num_heads=n_heads,
        sources=list(scores.sources),
        heads=heads,
        layers=layer_rows,
        correlations=correlations,
        agreement=agreement,
        findings=findings,
        seconds=0.0,
    )


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


def _write_tables(folder: Path, result: StudyResult) -> None:
    head_keys = list(result.heads[0])
    layer_keys = list(result.layers[0])
    atomic_write_text(
        folder / "heads.csv", csv_text(head_keys, [[_cell(r[k]) for k in head_keys] for r in result.heads])
    )
    atomic_write_text(
        folder / "layers.csv", csv_text(layer_keys, [[_cell(r[k]) for k in layer_keys] for r in result.layers])
    )


def _cell(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
