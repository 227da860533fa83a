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
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from inheritune.analysis import overlap as ov
from inheritune.analysis import unit_importance as imp
from inheritune.analysis.sampling import tokens_from
from inheritune.atomic import atomic_dir, atomic_write_json, atomic_write_text, check_output_dir, csv_text
from inheritune.errors import InherituneError
from inheritune.evaluation import suite
from inheritune.evaluation.task_index import include_folder
from inheritune.models.families import context_length, num_heads, num_layers
from inheritune.models.loading import load, model_name
from inheritune.options import positive
from inheritune.reporting.plots import bars, heatmap
from inheritune.result import CommandResult

TASKS = suite.task_names()
NO_TOKENIZER = "the --data windows are scored as the token ids they hold"
RANK_SPLIT = "rank"


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
    shots: list  # shot counts of the task sources
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


def check_sources(data, text, tasks: Sequence[str], examples: int, include_path: str | Path | None = None) -> list[str]:
    """The example sources' arguments, checked before anything is loaded; the task names (offline,
    lm-eval's, or lm-eval tasks in the user's ``include_path`` folder)."""
    include_path = include_folder(include_path)
    try:
        tasks = [suite.check_task(t, include_path) for t in ([tasks] if isinstance(tasks, str) else tasks)]
    except InherituneError as error:
        raise InherituneError(f"--tasks: {error}") from None
    if data is None and text is None and not tasks:
        raise InherituneError("give --data DIR or --text FILE, and/or --tasks")
    if data is not None and text is not None:
        raise InherituneError("give exactly one of --data DIR or --text FILE")
    positive(examples, "--examples")
    return tasks


def check_shots(shots: int | Sequence[int]) -> list[int]:
    """``--shots``: one count or several, each at least 0, without repeats."""
    counts = [shots] if isinstance(shots, int) else list(shots)
    if not counts or any(not isinstance(n, int) or n < 0 for n in counts) or len(set(counts)) < len(counts):
        raise InherituneError(f"--shots must be distinct counts of at least 0, not {counts}")
    return counts


def source_name(task: str, shots: int) -> str:
    return f"{task}/{shots}shot"


def query_ids(task: str, n: int, seed: int, split: str, include_path: str | Path | None = None) -> list[str]:
    """The ids of the questions ``suite.prompts(task, n, shots, seed, split)`` asks, in order
    (whatever the shot count)."""
    return [q.id for q in suite.queries(task, n, seed, split, include_path=include_path)]


def half_windows(tokens: np.ndarray, n: int, seq_len: int, seed: int) -> dict[str, list]:
    """``n`` windows at seeded offsets wholly inside the first half of ``tokens`` (``rank``) and
    ``n`` wholly inside the second half (``score``): no token is in both. ``rank_ids`` and
    ``score_ids`` name them as ``val:START-END`` token ranges."""
    half = len(tokens) // 2
    if half < seq_len:
        raise InherituneError(f"each half of the LM tokens ({half}) must hold a --seq-len {seq_len} window")
    rng = np.random.default_rng(seed)
    split: dict[str, list] = {}
    for name, lo in (("rank", 0), ("score", half)):
        starts = lo + rng.integers(0, half - seq_len + 1, size=n)
        windows = np.stack([np.asarray(tokens[s : s + seq_len], dtype=np.int64) for s in starts])
        split[name] = imp.lm_examples(torch.from_numpy(windows))
        split[f"{name}_ids"] = [f"val:{s}-{s + seq_len}" for s in starts]
    return split


def example_sources(
    model,
    tokenizer,
    tasks: Sequence[str],
    examples: int,
    shots: int | Sequence[int],
    max_task_tokens: int,
    seed: int,
    split: str = RANK_SPLIT,
    include_path: str | Path | None = None,
) -> dict[str, list[imp.Example]]:
    """Scored task examples per source ``task/Nshot``, for each task and shot count, all from
    ``split`` (rank or score); the LM windows are ``half_windows``'."""
    sources = {}
    limit = min(max_task_tokens, context_length(model.config) or max_task_tokens)
    for task in tasks:
        for n in check_shots(shots):
            prompts = suite.prompts(task, examples, shots=n, seed=seed, split=split, include_path=include_path)
            sources[source_name(task, n)] = imp.task_examples(tokenizer, prompts, limit)
    return sources


def task_ids(
    tasks: Sequence[str], shots: Sequence[int], examples: int, seed: int, include_path: str | Path | None = None
) -> dict[str, dict]:
    """Per task source: the split its queries come from and their question ids."""
    ids = {}
    for task in tasks:
        used = query_ids(task, examples, seed, RANK_SPLIT, include_path=include_path)
        for n in shots:
            ids[source_name(task, n)] = {"split": RANK_SPLIT, "ids": used}
    return ids


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
    model_, tok = load(
        model,
        tokenizer,
        trust_remote_code,
        needed=text is not None or bool(tasks),
        no_tokenizer=NO_TOKENIZER,
        device=device,
        device_map=device_map,
    )
    scored = example_sources(
        model_,
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
    for name, examples_ in tqdm(scored.items(), desc="sources", unit="source", disable=None):
        tqdm.write(f"importance on {name}: {len(examples_)} examples")  # one line per stage in logs, too
        results[name] = {**ids[name], **imp.measure_importance(model_, examples_)}
    result = ImportanceResult(
        out=Path(out),
        model=model_name(model),
        num_layers=num_layers(model_.config),
        num_heads=num_heads(model_.config),
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
