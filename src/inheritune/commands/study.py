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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedModel

from inheritune.analysis import overlap as ov
from inheritune.analysis.analyze_job import NO_TOKENIZER, analyze
from inheritune.analysis.example_sources import check_shots, check_sources
from inheritune.analysis.importance_job import importance
from inheritune.analysis.induction_job import induction
from inheritune.analysis.study_findings import correlation, depth_finding, induction_finding, lazy_finding
from inheritune.atomic import atomic_dir, atomic_write_json, atomic_write_text, check_output_dir, csv_text
from inheritune.errors import InherituneError
from inheritune.models.families import context_length
from inheritune.models.loading import load, model_name
from inheritune.options import positive
from inheritune.reporting.study_report import write
from inheritune.result import CommandResult

TASKS = ("mmlu-stem", "mmlu-humanities", "bb-sports-understanding")  # run on SmolLM2 on a CPU in minutes


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
    m = _Measures.of(analysis, scores, heads_)
    correlations = _correlations(m, np.random.default_rng(seed))
    return StudyResult(
        out=Path(out),
        model=model,
        num_layers=analysis.num_layers,
        num_heads=analysis.num_heads,
        sources=list(scores.sources),
        heads=_head_rows(m),
        layers=_layer_rows(m),
        correlations=correlations,
        agreement={kind: _agreement(o) for kind, o in scores.overlap.items()},
        findings={
            "depth": depth_finding(scores.aggregate["clusters"]),
            "induction": induction_finding(m.head_imp, m.prefix, correlations["head_importance_vs_induction_prefix"]),
            "lazy": lazy_finding(m.head_imp.sum(1), m.ffn_imp, m.lazy, correlations["layer_head_importance_vs_lazy"]),
        },
        seconds=0.0,
    )


@dataclass
class _Measures:
    """Per layer and head, what analyze, importance and induction measured, as arrays."""

    lazy: np.ndarray  # [layers] bool
    rank: np.ndarray  # [layers, heads]
    mass: np.ndarray  # [layers, heads]
    bi: np.ndarray  # [layers]
    head_imp: np.ndarray  # [layers, heads]
    ffn_imp: np.ndarray  # [layers]
    prefix: np.ndarray  # [layers, heads]
    copying: np.ndarray  # [layers, heads]

    @classmethod
    def of(cls, analysis, scores, heads_) -> _Measures:
        rows = analysis.layers
        return cls(
            lazy=np.array([row["lazy"] for row in rows]),
            rank=np.array([row["rank"] for row in rows], dtype=float),
            mass=np.array([row["column_mass"] for row in rows], dtype=float),
            bi=np.array([row["block_influence"] for row in rows], dtype=float),
            head_imp=np.asarray(scores.aggregate["head_importance"], dtype=float),
            ffn_imp=np.asarray(scores.aggregate["ffn_loss_increase"], dtype=float),
            prefix=np.asarray(heads_.prefix, dtype=float),
            copying=np.asarray(heads_.copying, dtype=float),
        )


def _head_rows(m: _Measures) -> list[dict]:
    imp_rank = ov.rank_descending(m.head_imp)
    layers, heads = m.head_imp.shape
    return [
        {
            "layer": layer,
            "head": h,
            "lazy_layer": bool(m.lazy[layer]),
            "rank": float(m.rank[layer, h]),
            "column_mass": float(m.mass[layer, h]),
            "importance": float(m.head_imp[layer, h]),
            "importance_rank": int(imp_rank[layer, h]),
            "prefix": float(m.prefix[layer, h]),
            "copying": float(m.copying[layer, h]),
        }
        for layer in range(layers)
        for h in range(heads)
    ]


def _layer_rows(m: _Measures) -> list[dict]:
    return [
        {
            "layer": layer,
            "lazy": bool(m.lazy[layer]),
            "block_influence": float(m.bi[layer]),
            "column_mass_mean": float(m.mass[layer].mean()),
            "ffn_importance": float(m.ffn_imp[layer]),
            "head_importance": float(m.head_imp[layer].sum()),
        }
        for layer in range(len(m.lazy))
    ]


def _correlations(m: _Measures, rng: np.random.Generator) -> dict:
    pairs = {
        "head_importance_vs_induction_prefix": ("head importance", "induction prefix score", m.head_imp, m.prefix),
        "head_importance_vs_induction_copying": ("head importance", "induction copying score", m.head_imp, m.copying),
        "head_importance_vs_column_mass": ("head importance", "heaviest-column mass", m.head_imp, m.mass),
        "ffn_importance_vs_block_influence": ("FFN importance", "Block Influence", m.ffn_imp, m.bi),
        "layer_head_importance_vs_lazy": (
            "summed head importance per layer",
            "lazy verdict (1 = lazy)",
            m.head_imp.sum(1),
            m.lazy.astype(float),
        ),
    }
    return {key: correlation(x_name, y_name, x=x, y=y, rng=rng) for key, (x_name, y_name, x, y) in pairs.items()}


def _agreement(o: dict) -> dict:
    return {
        "sources": len(o["sources"]),
        "mean_spearman": o["mean_spearman"],
        "mean_jaccard": o["mean_jaccard"],
        "top_k": o["top_k"],
    }


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
