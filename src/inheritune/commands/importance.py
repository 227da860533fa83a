"""``importance``: gradient head importance and FFN knock-out importance, with where they cluster.

``importance(model, data=DIR | text=FILE, tasks=[...], out=OUT)`` is ``inheritune importance MODEL
--data DIR --out OUT``: the same arguments, the same folder (importance.json, heads.csv, ffn.csv,
heatmaps), and an ``ImportanceResult``.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from transformers import PreTrainedModel

from inheritune.analysis import importance as imp
from inheritune.analysis.sampling import sequences_from
from inheritune.commands._shared import CommandResult, check_names, csv_text, load, model_name, positive
from inheritune.errors import InherituneError
from inheritune.evaluation.mmlu import few_shot_prompts
from inheritune.io import atomic_dir, atomic_write_json, atomic_write_text, check_output_dir
from inheritune.models.families import context_length, num_heads, num_layers
from inheritune.reporting.plots import bars, heatmap

TASKS = ("mmlu-local",)
NO_TOKENIZER = "the --data windows are scored as the token ids they hold"


@dataclasses.dataclass
class ImportanceResult(CommandResult):
    """What ``importance`` wrote to ``out``; ``report()`` is importance.json."""

    out: Path
    model: str
    num_layers: int
    num_heads: int
    seq_len: int
    shots: int
    seed: int
    sources: dict  # source -> {"examples", "loss", "accuracy", "head_importance", "ffn_loss_increase", ...}
    seconds: float


def check_sources(data, text, tasks: Sequence[str], examples: int) -> list[str]:
    """The example sources' arguments, checked before anything is loaded; the task names."""
    tasks = check_names(tasks, TASKS, "--tasks")
    if data is None and text is None and not tasks:
        raise InherituneError("give --data DIR or --text FILE, and/or --tasks")
    if data is not None and text is not None:
        raise InherituneError("give exactly one of --data DIR or --text FILE")
    positive(examples, "--examples")
    return tasks


def example_sources(model, tokenizer, data, text, tasks: Sequence[str], examples: int, seq_len: int, shots: int,
                    max_task_tokens: int, seed: int) -> dict[str, list[imp.Example]]:
    """Scored examples per source: ``lm`` (windows of ``data``/``text``) and each task."""
    sources = {}
    if data is not None or text is not None:
        windows = sequences_from(data, text, tokenizer, examples, seq_len, seed)
        sources["lm"] = imp.lm_examples(windows)
    limit = min(max_task_tokens, context_length(model.config) or max_task_tokens)
    for task in tasks:  # only mmlu-local so far
        pairs = few_shot_prompts(examples, shots, seed)
        sources[task] = imp.task_examples(tokenizer, pairs, limit)
    return sources


def importance(model: str | Path | PreTrainedModel, *, out: str | Path, data: str | Path | None = None,
               text: str | Path | None = None, tasks: Sequence[str] = (), examples: int = 32, seq_len: int = 256,
               shots: int = 3, max_task_tokens: int = 1024, seed: int = 0, overwrite: bool = False,
               trust_remote_code: bool = False, tokenizer=None) -> ImportanceResult:
    """Head importance (|dL/dmask|) and FFN knock-out importance of ``model`` on each source.

    ``model``/``tokenizer``: references as on the command line, or loaded objects.
    Writes ``out``: importance.json (``result.report()``), heads.csv, ffn.csv and a heatmap and a
    bar chart per source; an existing ``out`` is replaced only with ``overwrite``, and only once
    the new one is complete."""
    start = time.perf_counter()
    tasks = check_sources(data, text, tasks, examples)
    check_output_dir(out, overwrite)  # fail before the slow load
    model_, tok = load(model, tokenizer, trust_remote_code, needed=text is not None or bool(tasks),
                       no_tokenizer=NO_TOKENIZER)
    results = {}
    for name, scored in example_sources(model_, tok, data, text, tasks, examples, seq_len, shots,
                                        max_task_tokens, seed).items():
        print(f"{name}: {len(scored)} examples ...", flush=True)
        results[name] = imp.analyse(model_, scored)
    result = ImportanceResult(out=Path(out), model=model_name(model), num_layers=num_layers(model_.config),
                              num_heads=num_heads(model_.config), seq_len=seq_len, shots=shots, seed=seed,
                              sources=results, seconds=0.0)
    with atomic_dir(out, overwrite) as tmp:
        _write(tmp, result)
    result.seconds = time.perf_counter() - start
    return result


def _write(folder: Path, result: ImportanceResult) -> None:
    head_rows, ffn_rows = [], []
    for name, r in result.sources.items():
        scores = np.asarray(r["head_importance"])
        rank = np.empty(scores.size, dtype=int)
        rank[np.argsort(-scores.ravel(), kind="stable")] = np.arange(1, scores.size + 1)
        for i, value in enumerate(scores.ravel()):
            head_rows.append([name, i // scores.shape[1], i % scores.shape[1], f"{value:.6g}", rank[i]])
        for layer, up in enumerate(r["ffn_loss_increase"]):
            drop = r["ffn_accuracy_drop"][layer] if r["ffn_accuracy_drop"] else ""
            ffn_rows.append([name, layer, f"{up:.6g}", drop])
    atomic_write_json(folder / "importance.json", result.report())
    atomic_write_text(folder / "heads.csv", csv_text(["source", "layer", "head", "importance", "rank"], head_rows))
    atomic_write_text(folder / "ffn.csv", csv_text(["source", "layer", "loss_increase", "accuracy_drop"], ffn_rows))
    for name, r in result.sources.items():
        heatmap(np.asarray(r["head_importance"]), folder / f"heads_{name}.png",
                f"head importance |dL/dmask| ({name})", cbar="importance", cmap="magma")
        ffn = r["ffn_loss_increase"]
        top = list(np.argsort(ffn)[::-1][: r["clusters"]["ffn"]["top_units"]])
        bars(ffn, folder / f"ffn_{name}.png", f"FFN knock-out ({name})", "layer", "loss increase", highlight=top)
