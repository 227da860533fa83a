"""``prune``: mask the least important heads and FFNs, save the pruned model, report the damage.

``prune(model, heads=P, ffn=Q, data=DIR, out=DIR)`` is ``inheritune prune MODEL --heads P --ffn Q
--data DIR --out DIR``: the same arguments, the same folder (a transformers model folder with
prune.json and sweep plots inside), and a ``PruneResult``.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from transformers import PreTrainedModel

from inheritune.analysis import importance as imp
from inheritune.analysis import prune as pr
from inheritune.commands._shared import CommandResult, load, model_name
from inheritune.commands.importance import check_sources, example_sources
from inheritune.errors import InherituneError
from inheritune.io import atomic_dir, atomic_write_json, check_output_dir, read_json
from inheritune.models.families import num_heads, num_layers
from inheritune.reporting.plots import curves

STEPS = "0,10,20,30,40,50,60,70,80,90"
NO_TOKENIZER = "the output holds weights only (attach one with --tokenizer REF)"


@dataclasses.dataclass
class PruneResult(CommandResult):
    """What ``prune`` wrote to ``out`` (the pruned model's folder); ``report()`` is prune.json."""

    out: Path
    model: str
    ranked_by: str  # the --by file, or "computed"
    source: str  # which source's scores ranked the units
    heads_percent: float
    ffn_percent: float
    pruned_heads: list  # [[layer, head], ...]
    pruned_ffn: list  # [layer, ...]
    heads_total: int
    ffn_total: int
    before: dict  # source -> {"loss", "accuracy"}
    after: dict  # the saved weights themselves
    masked: dict  # the same plan applied by hooks (must equal ``after``)
    sweep: dict  # source -> {"percent", "heads", "ffn", "tolerated_5pct"}
    seconds: float


def sweep_steps(steps: str | Sequence[float]) -> list[float]:
    """``--steps``: percentages, comma-separated (or already a list)."""
    try:
        values = [float(s) for s in steps.split(",")] if isinstance(steps, str) else [float(s) for s in steps]
    except ValueError:
        raise InherituneError(f"--steps must be comma-separated percentages, not '{steps}'") from None
    return [pr.check_percent(v, "--steps") for v in values]


def scores_from(path: str | Path, source: str | None, model) -> tuple[str, np.ndarray, np.ndarray]:
    """Head and FFN scores of one source of an importance.json, checked against the model."""
    report = read_json(path, "importance file")
    sources = report.get("sources") if isinstance(report, dict) else None
    if not sources:
        raise InherituneError(f"{path} is not an importance.json (no 'sources')")
    name = source or ("lm" if "lm" in sources else next(iter(sources)))
    if name not in sources:
        raise InherituneError(f"{path} has no source '{name}'; it has: {', '.join(sources)}")
    heads = np.asarray(sources[name]["head_importance"], dtype=float)
    ffn = np.asarray(sources[name]["ffn_loss_increase"], dtype=float)
    shape = (num_layers(model.config), num_heads(model.config))
    if heads.shape != shape or ffn.shape != shape[:1]:
        raise InherituneError(f"{path} scores a {heads.shape[0]}x{heads.shape[1] if heads.ndim == 2 else '?'} "
                              f"model, not this {shape[0]}x{shape[1]} one")
    return name, heads, ffn


def prune(model: str | Path | PreTrainedModel, *, out: str | Path, data: str | Path | None = None,
          text: str | Path | None = None, tasks: Sequence[str] = (), examples: int = 32, seq_len: int = 256,
          shots: int = 3, max_task_tokens: int = 1024, seed: int = 0, heads: float = 0.0, ffn: float = 0.0,
          by: str | Path | None = None, source: str | None = None, sweep: bool = False,
          steps: str | Sequence[float] = STEPS, overwrite: bool = False, trust_remote_code: bool = False,
          tokenizer=None) -> PruneResult:
    """Prune the ``heads``% / ``ffn``% globally least important heads / FFN layers of ``model``
    (ranked by ``by``, an importance.json, else computed here on ``source``) and save it to ``out``.

    Writes ``out``: the pruned model (loads with plain transformers; with the tokenizer when there
    is one), prune.json (``result.report()``: loss and accuracy before, masked and after) and, with
    ``sweep``, degradation curves over ``steps``. A loaded ``model`` is pruned in place."""
    start = time.perf_counter()
    heads_pct, ffn_pct = pr.check_percent(heads, "--heads"), pr.check_percent(ffn, "--ffn")
    percents = sweep_steps(steps) if sweep else []
    tasks = check_sources(data, text, tasks, examples)
    check_output_dir(out, overwrite)  # fail before the slow load
    model_, tok = load(model, tokenizer, trust_remote_code, needed=text is not None or bool(tasks),
                       no_tokenizer=NO_TOKENIZER)
    sources = example_sources(model_, tok, data, text, tasks, examples, seq_len, shots, max_task_tokens, seed)
    if by:
        ranked_by, head_scores, ffn_scores = scores_from(by, source, model_)
    else:
        ranked_by = source or next(iter(sources))
        if ranked_by not in sources:
            raise InherituneError(f"--source {ranked_by} is not one of the given sources: {', '.join(sources)}")
        print(f"computing importance on {ranked_by} ...", flush=True)
        head_scores = imp.head_importance(model_, sources[ranked_by])
        ffn_scores = np.asarray(imp.ffn_importance(model_, sources[ranked_by])["loss_increase"])
    pruning = pr.plan(head_scores, ffn_scores, heads_pct, ffn_pct)
    before = {name: imp.evaluate(model_, ex) for name, ex in sources.items()}
    with pr.masked(model_, pruning):
        masked = {name: imp.evaluate(model_, ex) for name, ex in sources.items()}
    sweeps = {}
    for name, ex in sources.items() if percents else ():
        print(f"sweeping {name} over {percents} ...", flush=True)
        s = pr.sweep(model_, head_scores, ffn_scores, percents, lambda m, ex=ex: imp.evaluate(m, ex))
        s["tolerated_5pct"] = {kind: pr.tolerated_percent(s["percent"], [r["loss"] for r in s[kind]],
                                                          before[name]["loss"]) for kind in ("heads", "ffn")}
        sweeps[name] = s
    pr.bake(model_, pruning)
    after = {name: imp.evaluate(model_, ex) for name, ex in sources.items()}  # the saved weights themselves
    result = PruneResult(out=Path(out), model=model_name(model), ranked_by=str(by) if by else "computed",
                         source=ranked_by, heads_percent=heads_pct, ffn_percent=ffn_pct, pruned_heads=pruning["heads"],
                         pruned_ffn=pruning["ffn"], heads_total=int(head_scores.size), ffn_total=int(ffn_scores.size),
                         before=before, after=after, masked=masked, sweep=sweeps, seconds=0.0)
    with atomic_dir(out, overwrite) as tmp:
        model_.save_pretrained(tmp, safe_serialization=True)
        if tok is not None:
            tok.save_pretrained(tmp)
        _write(tmp, result)
    result.seconds = time.perf_counter() - start
    return result


def _write(folder: Path, result: PruneResult) -> None:
    atomic_write_json(folder / "prune.json", result.report())
    for name, s in result.sweep.items():
        for metric in ("loss", "accuracy"):
            if s["heads"][0][metric] is None:
                continue
            series = {"heads pruned": (s["percent"], [r[metric] for r in s["heads"]]),
                      "FFNs pruned": (s["percent"], [r[metric] for r in s["ffn"]])}
            hlines = {"+5% loss": result.before[name]["loss"] * 1.05} if metric == "loss" else None
            curves(series, folder / f"sweep_{name}_{metric}.png", f"pruning by importance ({name})",
                   "percent pruned (least important first)", metric, hlines=hlines)
