"""``importance``: gradient head importance and FFN knock-out importance per task x shot count, how
much they agree, one aggregate ranking, and where the important units sit by depth.

``importance(model, data=DIR | text=FILE, tasks=[...], shots=(0, 1, 5), out=OUT)`` is ``inheritune
importance MODEL --data DIR --tasks T1,T2 --shots 0,1,5 --out OUT``: the same arguments, the same
folder (importance.json, heads.csv, ffn.csv, overlap matrices as CSV and heatmaps, per-source
plots), and an ``ImportanceResult``.

Task prompts come from the **rank** split of each task (``evaluation.suite``), LM windows from the
first half of the val tokens (``half_windows``); importance.json names the split and the ids per
source (question ids; ``val:START-END`` token ranges), so ``prune`` can score on examples it never
ranked on.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from inheritune.analysis import overlap as ov
from inheritune.analysis import unit_importance as imp
from inheritune.analysis.example_sources import (
    RANK_SPLIT,
    check_shots,
    check_sources,
    example_sources,
    half_windows,
    task_ids,
)
from inheritune.analysis.sampling import tokens_from
from inheritune.atomic import atomic_dir, atomic_write_json, atomic_write_text, check_output_dir, csv_text
from inheritune.evaluation import suite
from inheritune.models.families import num_heads, num_layers
from inheritune.models.loading import load, model_name
from inheritune.reporting.plots import bars, heatmap
from inheritune.result import CommandResult

TASKS = suite.task_names()
NO_TOKENIZER = "the --data windows are scored as the token ids they hold"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@dataclasses.dataclass
class ImportanceResult(CommandResult):
    """What ``importance`` wrote to ``out``; ``report()`` is importance.json."""

    out: Path
    model: str
    num_layers: int
    num_heads: int
    seq_len: int
    shots: list[int]  # shot counts of the task sources
    seed: int
    sources: dict  # "task/Nshot" or "lm" -> {"split", "ids", "examples", "loss", "accuracy", "head_importance", ...}
    aggregate: dict  # {"head_importance", "ffn_loss_increase", "clusters"}: mean of normalised source scores
    overlap: dict  # {"heads", "ffn"} -> Spearman and top-k Jaccard matrices across sources, with their means
    seconds: float

    def summary(self) -> str:
        """What the CLI prints (the files hold the rest)."""
        lines = []
        for name, s in self.sources.items():
            c, acc = s["clusters"], f", accuracy {s['accuracy']:.3f}" if s["accuracy"] is not None else ""
            lines.append(
                f"{name}: loss {s['loss']:.4f}{acc}; important heads cluster {c['heads']['peak']} "
                f"(top {c['heads']['top_units']}: {c['heads']['top_count']}), important FFNs {c['ffn']['peak']}"
            )
        for kind, o in self.overlap.items():
            lines.append(
                f"{kind} across {len(o['sources'])} sources: mean Spearman {_number(o['mean_spearman'])}, "
                f"mean top-{o['top_k']} Jaccard {_number(o['mean_jaccard'])}"
            )
        for kind, c in self.aggregate["clusters"].items():
            mass = ", ".join(f"{third} {share:.0%}" for third, share in c["mass_share"].items())
            lines.append(
                f"aggregate {kind} importance by depth: {mass} of the mass; top {c['top_units']} {c['top_count']}"
            )
        lines.append(f"-> {self.out} in {self.seconds:.1f}s")
        return "\n".join(lines)


def aggregate(sources: dict) -> dict:
    """The mean of the sources' normalised scores (``overlap.normalised``), and where it sits by depth."""
    heads = ov.aggregate({name: np.asarray(s["head_importance"]) for name, s in sources.items()})
    ffn = ov.aggregate({name: np.asarray(s["ffn_loss_increase"]) for name, s in sources.items()})
    return {
        "head_importance": heads.tolist(),
        "ffn_loss_increase": ffn.tolist(),
        "clusters": {"heads": imp.clusters(heads), "ffn": imp.clusters(ffn)},
    }


def compare_sources(sources: dict) -> dict:
    """Spearman and top-k Jaccard across sources, for heads and for FFNs."""
    return {
        "heads": ov.compare({name: np.asarray(s["head_importance"]) for name, s in sources.items()}),
        "ffn": ov.compare({name: np.asarray(s["ffn_loss_increase"]) for name, s in sources.items()}),
    }


def importance(
    model: str | Path | PreTrainedModel,
    *,
    out: str | Path,
    data: str | Path | None = None,
    text: str | Path | None = None,
    tasks: Sequence[str] = (),
    examples: int = 32,
    seq_len: int = 256,
    shots: int | Sequence[int] = (0, 1, 5),
    max_task_tokens: int = 1024,
    seed: int = 0,
    include_path: str | Path | None = None,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    tokenizer=None,
    device: str = "cpu",
    device_map: str | None = None,
) -> ImportanceResult:
    """Head importance (|dL/dmask|) and FFN knock-out importance of ``model`` on each source (the LM
    windows, and every task at every shot count), their overlaps and their aggregate.

    ``model``/``tokenizer``: references as on the command line, or loaded objects; a reference loads
    onto ``device`` (or is spread by ``device_map``). Writes ``out``: importance.json
    (``result.report()``), heads.csv, ffn.csv, spearman/jaccard matrices per unit kind (CSV and
    heatmap) and a heatmap and bar chart per source; an existing ``out`` is replaced only with
    ``overwrite``, and only once the new one is complete."""
    start = time.perf_counter()
    tasks = check_sources(data, text, tasks=tasks, examples=examples, include_path=include_path)
    counts = check_shots(shots)
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
    scored = example_sources(
        loaded,
        tok,
        tasks=tasks,
        examples=examples,
        shots=counts,
        max_task_tokens=max_task_tokens,
        seed=seed,
        include_path=include_path,
    )
    ids = task_ids(tasks, counts, examples, seed, include_path=include_path)
    if data is not None or text is not None:  # the LM windows first, with their token ranges
        halves = half_windows(tokens_from(data, text, tok), examples, seq_len, seed)
        scored = {"lm": halves[RANK_SPLIT], **scored}
        ids["lm"] = {"split": RANK_SPLIT, "ids": halves[f"{RANK_SPLIT}_ids"]}
    results = {}
    for name, source_examples in tqdm(scored.items(), desc="sources", unit="source", disable=None):
        tqdm.write(f"importance on {name}: {len(source_examples)} examples")  # one line per stage in logs, too
        results[name] = {**ids[name], **imp.measure_importance(loaded, source_examples)}
    result = ImportanceResult(
        out=Path(out),
        model=model_name(model),
        num_layers=num_layers(loaded.config),
        num_heads=num_heads(loaded.config),
        seq_len=seq_len,
        shots=counts,
        seed=seed,
        sources=results,
        aggregate=aggregate(results),
        overlap=compare_sources(results),
        seconds=0.0,
    )
    with atomic_dir(out, overwrite) as tmp:
        _write(tmp, result)
    result.seconds = time.perf_counter() - start
    return result


def _file_name(source: str) -> str:
    return source.replace("/", "_")


def _write(folder: Path, result: ImportanceResult) -> None:
    head_rows, ffn_rows = [], []
    scored = {**result.sources, "aggregate": result.aggregate}
    for name, r in scored.items():
        scores = np.asarray(r["head_importance"])
        rank = ov.rank_descending(scores).ravel()
        for i, value in enumerate(scores.ravel()):
            head_rows.append([name, i // scores.shape[1], i % scores.shape[1], f"{value:.6g}", rank[i]])
        drops = r.get("ffn_accuracy_drop")
        for layer, up in enumerate(r["ffn_loss_increase"]):
            ffn_rows.append([name, layer, f"{up:.6g}", drops[layer] if drops else ""])
    atomic_write_json(folder / "importance.json", result.report())
    atomic_write_text(folder / "heads.csv", csv_text(["source", "layer", "head", "importance", "rank"], head_rows))
    atomic_write_text(folder / "ffn.csv", csv_text(["source", "layer", "loss_increase", "accuracy_drop"], ffn_rows))
    for kind, c in result.overlap.items():
        for measure in ("spearman", "jaccard"):
            matrix = c[measure]
            rows = [
                [a] + ["" if v is None else f"{v:.6g}" for v in row]
                for a, row in zip(c["sources"], matrix, strict=True)
            ]
            atomic_write_text(folder / f"{measure}_{kind}.csv", csv_text(["source", *c["sources"]], rows))
            values = np.array([[np.nan if v is None else v for v in row] for row in matrix])
            heatmap(
                values,
                folder / f"{measure}_{kind}.png",
                f"{measure} of {kind} importance across sources"
                + (f" (top {c['top_k']})" if measure == "jaccard" else ""),
                xlabel="source (order: CSV header)",
                ylabel="source",
                cbar=measure,
                vmin=-1 if measure == "spearman" else 0,
                vmax=1,
            )
    for name, r in scored.items():
        heatmap(
            np.asarray(r["head_importance"]),
            folder / f"heads_{_file_name(name)}.png",
            f"head importance |dL/dmask| ({name})",
            cbar="importance",
            cmap="magma",
        )
        ffn = r["ffn_loss_increase"]
        top = list(np.argsort(ffn)[::-1][: r["clusters"]["ffn"]["top_units"]])
        bars(
            ffn,
            folder / f"ffn_{_file_name(name)}.png",
            title=f"FFN knock-out ({name})",
            xlabel="layer",
            ylabel="loss increase",
            highlight=top,
        )
