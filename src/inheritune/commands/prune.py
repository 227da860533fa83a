"""``prune``: remove heads and FFNs, whole blocks, or width; save the model, report the damage soundly.

``prune(model, heads=P, ffn=Q, data=DIR, out=DIR)`` is ``inheritune prune MODEL --heads P --ffn Q
--data DIR --out DIR``: the same arguments, the same folder (a transformers model folder with
prune.json and sweep plots inside), and a typed result, one per job: ``PruneResult`` (a global
plan of heads and FFN layers, saved as zeroed weights), ``LayerPruneResult`` (``--drop-layers``:
whole blocks) or ``WidthPruneResult`` (``--width-heads``/``--width-ffn``: the same units cut out
of every block, a smaller config and smaller files).

Sound by construction: the units are **ranked on one split of examples and scored on another**.
LM windows are ranked in the first half of the val tokens and scored in the second (a window lies
wholly in its half, so none can share a token); task prompts are ranked on the suite's ``rank``
questions and scored on its ``score`` questions. An importance.json given with ``--scores`` names
the examples it was ranked on; any of them among the scoring examples is refused, or, with
``--allow-overlap``, warned about on stderr and counted in prune.json (``overlap``).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from inheritune.analysis import layers as lp
from inheritune.analysis import selection
from inheritune.analysis import unit_importance as imp
from inheritune.analysis import unit_pruning as pr
from inheritune.analysis import width_ranking as wd
from inheritune.analysis.example_sources import check_sources, example_sources, half_windows, query_ids
from inheritune.analysis.induction_heads import candidate_tokens, induction_scores
from inheritune.analysis.sampling import tokens_from
from inheritune.atomic import atomic_dir, atomic_write_json, check_output_dir, read_json
from inheritune.data.shards import open_data
from inheritune.errors import InherituneError
from inheritune.evaluation.val_loss import val_loss
from inheritune.models import budget, width_cut
from inheritune.models.card import write_card
from inheritune.models.families import num_heads, num_layers
from inheritune.models.loading import load, model_name, parameter_count, tokenizer_fingerprint
from inheritune.models.surgery import drop_blocks, spans
from inheritune.models.tokens import bos_id, shared_vocab, special_ids
from inheritune.options import positive, shown
from inheritune.reporting.plots import panels
from inheritune.result import CommandResult

HELP = {  # the CLI's help for this command's own parameters (shared ones: inheritune.commands.HELP)
    "by": "importance (default; least important first), induction (induction heads first; FFNs by importance) "
    f"or random (by --seed); with --drop-layers (default block-influence): {selection.HELP}",
    "heads": "percent of heads to prune, globally (0-100)",
    "ffn": "percent of FFN layers to prune, globally (0-100)",
    "drop_layers": "drop K whole blocks instead (chosen on --data's train split, val loss on its val split)",
    "scores": "importance.json from `inheritune importance` (default: rank here); it must not have ranked on the "
    "scoring examples",
    "source": "which source ranks the units (default: lm, else the first)",
    "allow_overlap": "accept --scores ranked on scoring examples: warn and count them in prune.json",
    "iterative": "reach --heads/--ffn in this many steps, re-scoring importance after each (1: one-shot)",
    "physical": "with --heads/--ffn: say why a global plan stays as zeroed weights (--width-* ship smaller models)",
    "width_heads": "percent of every block's heads to cut out (whole key/value groups, or see --head-unit): a "
    "smaller config and files; needs --data",
    "width_ffn": "percent of every block's FFN neurons to cut out",
    "params": "a parameter budget: keep at most this share (0-1) of the non-embedding parameters, the cut "
    "chosen by --budget-by (default: no budget)",
    "budget_by": "depth (drop blocks, chosen by --by), width (cut every block's FFN neurons, ranked by --width-by) "
    "or both (blocks to about the square root of the share, then FFN neurons)",
    "width_by": "ranking of heads and neurons on --data's train split: activation (Minitron: mean output norm) "
    "or gradient (mean |dL/dscale|)",
    "head_unit": "group (a key/value head with its query heads) or query (the same number of query heads in "
    "every group)",
    "sweep": "also score every criterion over --steps (heads) and --ffn-steps, with 95%% intervals",
    "steps": "head sweep percentages, comma-separated",
    "ffn_steps": "FFN sweep percentages, comma-separated",
}
CHOICES = {"budget_by": budget.SHAPES, "head_unit": width_cut.HEAD_UNITS, "width_by": wd.RANKINGS}

STEPS = "0,10,20,30,40,50,60,70,80,90"
FFN_STEPS = "0,10,20,30,40,50"
TOLERANCE = 0.05  # "prunable within 5%": relative accuracy loss (loss increase when there is no accuracy)
INDUCTION_SEEDS = 20  # repeated random segments behind --by induction (the induction command's default is 100)
NO_TOKENIZER = "the output holds weights only (attach one with --tokenizer REF)"


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
    pruned_heads: list  # [[layer, head], ...]
    pruned_ffn: list  # [layer, ...]
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
    dropped_layers: list  # the blocks removed
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
    dropped_layers: list = dataclasses.field(default_factory=list)  # --budget-by both: the blocks dropped first
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


def percents(steps: str | Sequence[float], option: str) -> list[float]:
    """A sweep's percentages, comma-separated (or already a list), ascending."""
    try:
        values = [float(s) for s in steps.split(",")] if isinstance(steps, str) else [float(s) for s in steps]
    except ValueError:
        raise InherituneError(f"{option} must be comma-separated percentages, not '{steps}'") from None
    return sorted(pr.check_percent(v, option) for v in values)


def split_sources(
    model,
    tok,
    data,
    text,
    tasks,
    examples,
    seq_len,
    shots,
    max_task_tokens,
    seed,
    include_path: str | Path | None = None,
) -> dict:
    """Per source: ``rank`` and ``score`` examples and the ids of each (questions by their suite
    ids, LM windows as ``val:START-END`` token ranges)."""
    sources = {}
    if data is not None or text is not None:
        sources["lm"] = half_windows(tokens_from(data, text, tok), examples, seq_len, seed)
    for split in ("rank", "score") if tasks else ():
        made = example_sources(
            model,
            tok,
            tasks=tasks,
            examples=examples,
            shots=shots,
            max_task_tokens=max_task_tokens,
            seed=seed,
            split=split,
            include_path=include_path,
        )
        for task, (name, ex) in zip(tasks, made.items(), strict=False):  # a repeated task is one source
            sources.setdefault(name, {})[split] = ex
            sources[name][f"{split}_ids"] = query_ids(task, examples, seed, split, include_path=include_path)
    return sources


def _token_ranges(ids: Sequence[str]) -> list[tuple[int, ...]]:
    return [tuple(int(x) for x in i.split(":", 1)[1].split("-")) for i in ids if i.startswith("val:")]


def overlap(ranked_ids: Sequence[str], scored_ids: Sequence[str]) -> int:
    """Scoring examples that are also ranking examples: equal ids, and LM windows (``val:A-B``)
    sharing any token."""
    ranked = set(ranked_ids)
    shared = sum(1 for i in scored_ids if i in ranked and not i.startswith("val:"))
    windows = _token_ranges(ranked_ids)
    shared += sum(1 for a, b in _token_ranges(scored_ids) if any(a < d and c < b for c, d in windows))
    return shared


def scores_from(path: str | Path, source: str | None, model) -> tuple[str, dict]:
    """One source of an importance.json, checked against the model: its head and FFN scores and
    the ids of the examples it was ranked on."""
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
        raise InherituneError(
            f"{path} scores a {heads.shape[0]}x{heads.shape[1] if heads.ndim == 2 else '?'} "
            f"model, not this {shape[0]}x{shape[1]} one"
        )
    return name, {"scores": (heads, ffn), "ids": list(sources[name].get("ids", []))}


def check_overlap(path, name: str, ranked_ids: Sequence[str], scored_ids: Sequence[str], allow: bool) -> int:
    """Refuse (or, when allowed, warn loudly about) ranking examples among the scoring ones. A file
    that names no example ids (LM windows drawn anywhere in the val split) may hold all of them."""
    shared = overlap(ranked_ids, scored_ids) if ranked_ids else len(scored_ids)
    if not shared:
        return 0
    why = (
        f"{path} ranked '{name}' on {shared} of the {len(scored_ids)} examples prune scores on"
        if ranked_ids
        else f"{path} does not name the examples it ranked '{name}' on, "
        f"so all {shared} scoring examples may be among them"
    )
    if not allow:
        raise InherituneError(f"{why} (rank on another split, or pass --allow-overlap)")
    print(f"WARNING: {why}: the pruning damage measured on them looks smaller than it is", file=sys.stderr, flush=True)
    return shared


def importance_on(model: PreTrainedModel, examples: list[imp.Example]) -> pr.Scores:
    """Head importance and FFN knock-out loss increase on ``examples``, with whatever is masked now."""
    return imp.head_importance(model, examples), np.asarray(imp.ffn_importance(model, examples)["loss_increase"])


def rescorer(model: PreTrainedModel, examples: list[imp.Example]) -> Callable[[dict], pr.Scores]:
    """Importance with a plan's units masked: what iterative pruning ranks each step by."""

    def rescore(pruning: dict) -> pr.Scores:
        with pr.masked(model, pruning):
            return importance_on(model, examples)

    return rescore


def induction_prefix(model: PreTrainedModel, tok) -> np.ndarray:
    """Prefix-matching score of every head (the induction command's token choice and segments)."""
    candidates = candidate_tokens(shared_vocab(model, tok), special=special_ids(model, tok))
    return induction_scores(model, candidates, seeds=INDUCTION_SEEDS, bos=bos_id(model, tok))["prefix"]


def criterion_chooser(by: str, kind: str, keep: pr.Scores, rescore: Callable[[dict], pr.Scores] | None):
    """``choose(percent, previous)`` for a sweep of ``kind`` (heads or ffn) by criterion ``by``:
    iterative importance re-scores with the previous plan masked; the others rank once."""

    def share(p: float) -> tuple[float, float]:
        return (p, 0.0) if kind == "heads" else (0.0, p)

    if rescore is not None:
        return lambda p, previous: pr.plan(*rescore(previous), *share(p), previous=previous)
    return lambda p, previous: pr.plan(*keep, *share(p))


def run_sweeps(model, criteria: dict[str, pr.Scores], rescore, scored: dict, head_steps, ffn_steps) -> dict:
    """Score every source's held-out examples along each criterion's head and FFN sweep."""
    kinds = {"heads": head_steps, "ffn": ffn_steps}
    jobs = [(by, kind) for by in criteria for kind in kinds if not (by == "induction" and kind == "ffn")]
    bar = tqdm(total=sum(len(kinds[k]) for _, k in jobs), desc="prune sweep", unit="point", disable=None)
    bar.write(f"sweep: {len(jobs)} curves, {bar.total} points, each scored on {', '.join(scored)}")
    evaluate = lambda m: {name: pr.score(m, ex) for name, ex in scored.items()}  # noqa: E731
    curves: dict = {name: {by: {} for by in criteria} for name in scored}
    for by, kind in jobs:
        choose = criterion_chooser(by, kind, criteria[by], rescore if by == "importance" else None)
        points = pr.sweep(model, kinds[kind], choose=choose, evaluate=evaluate, progress=bar.update)
        for name in scored:
            curves[name][by][kind] = {"percent": sorted(kinds[kind]), "points": [p[name] for p in points]}
    bar.close()
    return curves


def prunable(curves: dict, before: dict) -> dict:
    """Per source and criterion: the % of heads and of FFNs prunable within ``TOLERANCE`` (relative)
    of the unpruned accuracy on the score split (of the loss where there is no accuracy)."""
    table: dict[str, dict[str, dict[str, str | float]]] = {}
    for name, by_criterion in curves.items():
        metric = "accuracy" if before[name]["accuracy"] is not None else "loss"
        table[name] = {}
        for by, kinds in by_criterion.items():
            row: dict[str, str | float] = {"metric": metric}
            for kind, c in kinds.items():
                row[kind] = pr.tolerated_percent(
                    c["percent"],
                    [p[metric] for p in c["points"]],
                    before[name][metric],
                    TOLERANCE,
                    higher_is_better=metric == "accuracy",
                )
            table[name][by] = row
    return table


def check_mode(
    drop_layers: int,
    by: str | None,
    heads: float,
    ffn: float,
    iterative: int,
    scores,
    tasks,
    data,
    widths: tuple[float, float] = (0.0, 0.0),
) -> str:
    """The criterion, checked against the mode: head/FFN pruning, whole blocks (``--drop-layers``)
    or uniform width (``--width-heads``/``--width-ffn``, ranked by ``--width-by``)."""
    if drop_layers < 0:
        raise InherituneError(f"--drop-layers must be at least 0, not {drop_layers}")
    positive(iterative, "--iterative")
    if any(widths):
        if drop_layers or heads or ffn or iterative > 1 or scores is not None or tasks or by or data is None:
            raise InherituneError(
                "--width-heads/--width-ffn cut the same units from every block, ranked on --data's "
                "train split (--width-by) and scored on its val split: give it --data, without "
                "--heads, --ffn, --drop-layers, --by, --iterative, --scores or --tasks"
            )
        return "width"
    if not drop_layers:
        by = by or "importance"
        if by not in pr.CRITERIA:
            raise InherituneError(
                f"--by: '{by}' is not one of {', '.join(pr.CRITERIA)} (with --drop-layers: "
                f"{', '.join(selection.NAMES)})"
            )
        if iterative > 1 and (by != "importance" or scores is not None):
            raise InherituneError("--iterative re-scores importance here: it needs --by importance and no --scores")
        return by
    selector = selection.as_selector(by or "block-influence")
    if heads or ffn or iterative > 1 or scores is not None or tasks or data is None:
        raise InherituneError(
            "--drop-layers drops whole blocks chosen on --data's train split and scored on its val "
            "split: give it --data, without --heads, --ffn, --iterative, --scores or --tasks"
        )
    return selector


def prune(
    model: str | Path | PreTrainedModel,
    *,
    out: str | Path,
    data: str | Path | None = None,
    text: str | Path | None = None,
    tasks: Sequence[str] = (),
    examples: int = 32,
    seq_len: int = 256,
    shots: int = 3,
    max_task_tokens: int = 1024,
    seed: int = 0,
    heads: float = 0.0,
    ffn: float = 0.0,
    drop_layers: int = 0,
    by: str | None = None,
    scores: str | Path | None = None,
    source: str | None = None,
    allow_overlap: bool = False,
    iterative: int = 1,
    physical: bool = False,
    width_heads: float = 0.0,
    width_ffn: float = 0.0,
    width_by: str = "activation",
    head_unit: str = "group",
    params: float | None = None,
    budget_by: str = "depth",
    sweep: bool = False,
    steps: str | Sequence[float] = STEPS,
    ffn_steps: str | Sequence[float] = FFN_STEPS,
    include_path: str | Path | None = None,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    tokenizer=None,
    device: str = "cpu",
    device_map: str | None = None,
) -> PruneResult | LayerPruneResult | WidthPruneResult:
    """Prune ``model`` and save it to ``out``: the ``heads``% / ``ffn``% heads / FFN layers that
    criterion ``by`` (importance, induction, random) ranks lowest, or with ``drop_layers`` K the K
    whole blocks criterion ``by`` (block-influence, angular, lazy, first-n) chooses, or with
    ``width_heads``/``width_ffn`` the same share of heads (whole key/value groups, or with
    ``head_unit`` query the same number in every group) and FFN neurons cut out of every block,
    ranked by ``width_by`` (activation, gradient): a smaller config, smaller files. ``params`` (a
    share, 0-1, of the non-embedding parameters) sets the cut itself: by ``budget_by`` depth, the
    blocks to drop; by width, the FFN neurons to cut in every block; by both, blocks then neurons.

    Heads and FFNs are ranked by importance from ``scores`` (an importance.json) or computed here
    on ``source``'s rank split (``iterative`` > 1: re-scored in that many steps) and scored on the
    held-out score split. Writes ``out``: the pruned model (loads with plain transformers; with the
    tokenizer when there is one), prune.json (``result.report()``: loss and accuracy with 95%
    intervals before, masked and after) and, with ``sweep``, curves over ``steps`` (heads) and
    ``ffn_steps`` for every criterion (layers: val loss vs K up to ``drop_layers`` per criterion).
    A loaded ``model`` is pruned in place (heads/FFNs) or copied (layers)."""
    start = time.perf_counter()
    heads_pct, ffn_pct = pr.check_percent(heads, "--heads"), pr.check_percent(ffn, "--ffn")
    widths = (pr.check_percent(width_heads, "--width-heads"), pr.check_percent(width_ffn, "--width-ffn"))
    mode: dict[str, Any] = {
        "by": by,
        "heads": heads,
        "ffn": ffn,
        "iterative": iterative,
        "scores": scores,
        "tasks": tasks,
        "data": data,
    }
    budget_given = params is not None
    by = (
        _check_budget(params, budget_by, drop_layers, widths, **mode)
        if params is not None
        else check_mode(drop_layers, widths=widths, **mode)
    )
    if by != "width" and not drop_layers and not budget_given and not (heads_pct or ffn_pct) and not sweep:
        raise InherituneError(
            "prune removes nothing: every cut (--heads, --ffn, --drop-layers, --width-heads, --width-ffn, "
            "--params) is 0 or not given; give one (--sweep alone draws the curves)"
        )
    ranking = wd.WidthRanking(width_by, shown("width_by"))
    units = by != "width" and not drop_layers and not budget_given
    head_steps = percents(steps, "--steps") if sweep and units else []
    ffn_sweep = percents(ffn_steps, "--ffn-steps") if sweep and units else []
    tasks = check_sources(data, text, tasks=tasks, examples=examples, include_path=include_path)
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
    loaded.eval()
    if params is not None:
        cut = _budget_cut(loaded.config, params, budget_by)
        drop_layers, widths = cut.drop_layers, (0.0, cut.ffn_percent)
    windows = {"data": data, "examples": examples, "seq_len": seq_len, "seed": seed}
    result: PruneResult | LayerPruneResult | WidthPruneResult
    if drop_layers or any(widths):
        result, saved = _cut_out(
            loaded,
            tok,
            windows,
            drop_layers=drop_layers,
            widths=widths,
            by=by,
            sweep=sweep,
            ranking=ranking,
            unit=head_unit,
        )
    else:
        sources = split_sources(
            loaded,
            tok,
            data=data,
            text=text,
            tasks=tasks,
            examples=examples,
            seq_len=seq_len,
            shots=shots,
            max_task_tokens=max_task_tokens,
            seed=seed,
            include_path=include_path,
        )
        result = _prune_units(
            loaded,
            tok,
            sources=sources,
            by=by,
            scores=scores,
            source=source,
            allow_overlap=allow_overlap,
            heads_pct=heads_pct,
            ffn_pct=ffn_pct,
            iterative=iterative,
            physical=physical,
            seed=seed,
            head_steps=head_steps,
            ffn_steps=ffn_sweep,
        )
        saved = loaded
    result.out, result.model = Path(out), model_name(model)
    _save(saved, tok, result, out, overwrite)
    result.seconds = time.perf_counter() - start
    return result


def _cut_out(
    model,
    tok,
    windows: dict,
    drop_layers: int,
    widths: tuple[float, float],
    by: str,
    sweep: bool,
    ranking: str,
    unit: str,
) -> tuple[LayerPruneResult | WidthPruneResult, PreTrainedModel]:
    """Structural pruning (a smaller model): blocks, width, or blocks then width; ``windows``: where
    units and blocks are ranked (data, examples, seq_len, seed)."""
    if drop_layers and any(widths):
        return _prune_both(model, tok, **windows, k=drop_layers, by=by, ffn_pct=widths[1], ranking=ranking, unit=unit)
    if any(widths):
        return _prune_width(model, tok, **windows, heads_pct=widths[0], ffn_pct=widths[1], ranking=ranking, unit=unit)
    return _drop_layers(model, tok, **windows, k=drop_layers, by=by, sweep=sweep)


def _save(model, tok, result, out: str | Path, overwrite: bool) -> None:
    """The pruned model's folder: weights, tokenizer, prune.json (and sweep plots), model card."""
    with atomic_dir(out, overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tok is not None:
            tok.save_pretrained(tmp)
        _write(tmp, result)
        write_card(tmp, _card(result), source=result.model)


def _check_budget(params: float, budget_by: str, drop_layers: int, widths: tuple[float, float], **mode) -> str:
    """The mode a budget's cut will take, checked before the load (its size is known only after):
    depth and both need a block selector (``by``), width a width ranking."""
    budget.check_share(params)
    budget.BudgetShape(budget_by, shown("budget_by"))
    if drop_layers or any(widths):
        raise InherituneError(
            "--params sets the cut itself: give it without --drop-layers, --width-heads or --width-ffn"
        )
    if budget_by == "width" and mode["by"]:
        raise InherituneError(
            "--budget-by width ranks FFN neurons by --width-by: give it without --by (--by chooses "
            "the blocks of --budget-by depth or both)"
        )
    return check_mode(
        0 if budget_by == "width" else 1, widths=(0.0, 1.0) if budget_by == "width" else (0.0, 0.0), **mode
    )


def _budget_cut(config, params: float, budget_by: str) -> budget.Cut:
    """Blocks to drop and FFN percent to cut to reach the budget, said in one line."""
    cut = budget.cut_within(config, params, budget_by)
    parts = [f"keep {num_layers(config) - cut.drop_layers} of {num_layers(config)} blocks"] * bool(cut.drop_layers) + [
        f"cut {cut.ffn_percent:.1f}% of every block's FFN neurons"
    ] * bool(cut.ffn_percent)
    print(
        f"--params {params:g} of {budget.non_embedding(config):,} non-embedding parameters ({budget_by}): "
        f"{' and '.join(parts) or 'no cut needed'}",
        flush=True,
    )
    return cut


def _ranking(model, sources: dict, scores, source: str | None, allow_overlap: bool) -> tuple[str, pr.Scores, int]:
    """The source that ranks, its importance (from ``scores`` or computed on its rank split) and how
    many of its scoring examples the ranking saw."""
    if scores is not None:
        name, given = scores_from(scores, source, model)
        shared = (
            check_overlap(
                scores, name, ranked_ids=given["ids"], scored_ids=sources[name]["score_ids"], allow=allow_overlap
            )
            if name in sources
            else 0
        )
        return name, given["scores"], shared
    name = source or next(iter(sources))
    if name not in sources:
        raise InherituneError(f"--source {name} is not one of the given sources: {', '.join(sources)}")
    print(f"ranking on {name}'s rank split ...", flush=True)
    return name, importance_on(model, sources[name]["rank"]), 0


def _prune_units(
    model,
    tok,
    sources: dict,
    by: str,
    scores,
    source,
    allow_overlap: bool,
    heads_pct: float,
    ffn_pct: float,
    iterative: int,
    physical: bool,
    seed: int,
    head_steps: list[float],
    ffn_steps: list[float],
) -> PruneResult:
    """Heads and FFNs: rank, plan (one-shot or iterative), measure on the score split, sweep, bake."""
    scored = {name: s["score"] for name, s in sources.items()}
    ranked_name, importance, shared = _ranking(
        model, sources, scores=scores, source=source, allow_overlap=allow_overlap
    )
    rescore = rescorer(model, sources[ranked_name]["rank"]) if scores is None else None
    shape = importance[0].shape
    wanted = set(pr.CRITERIA) if head_steps else {by}
    prefix = induction_prefix(model, tok) if "induction" in wanted else None
    criteria = {
        c: pr.keep_scores(c, importance, induction_prefix=prefix, shape=shape, seed=seed)
        for c in pr.CRITERIA
        if c in wanted
    }
    if iterative > 1:
        assert rescore is not None  # check_mode refuses --iterative with --scores
        pruning, history = pr.iterative_plan(rescore, heads_pct, ffn_pct, iterative)
    else:
        pruning, history = pr.plan(*criteria[by], heads_pct, ffn_pct), [criteria[by]]
    before = {name: pr.score(model, ex) for name, ex in scored.items()}
    with pr.masked(model, pruning):
        masked = {name: pr.score(model, ex) for name, ex in scored.items()}
    curves = (
        run_sweeps(
            model,
            criteria,
            rescore=rescore if iterative > 1 else None,
            scored=scored,
            head_steps=head_steps,
            ffn_steps=ffn_steps,
        )
        if head_steps
        else {}
    )
    pr.bake(model, pruning)
    after = {name: pr.score(model, ex) for name, ex in scored.items()}  # the saved weights themselves
    note = pr.physical_removal_refusal(model) if physical else ""
    if note:
        print(note, flush=True)
    return PruneResult(
        out=Path(),
        model="",
        by=by,
        ranked_by=str(scores) if scores else "computed",
        source=ranked_name,
        overlap=shared,
        iterative=iterative,
        heads_percent=heads_pct,
        ffn_percent=ffn_pct,
        pruned_heads=pruning["heads"],
        pruned_ffn=pruning["ffn"],
        heads_total=int(np.prod(shape)),
        ffn_total=int(shape[0]),
        steps=[np.asarray(h).tolist() for h, _f in history],
        physical=note,
        before=before,
        after=after,
        masked=masked,
        sweep=curves,
        prunable=prunable(curves, before),
        seconds=0.0,
    )


def _val_data(data, tok):
    token_data = open_data(data)
    if tok is not None:
        token_data.check_tokenizer(tokenizer_fingerprint(tok), "the model's tokenizer")
    return token_data


def _val_summary(value: dict) -> dict:
    return {"loss": value["loss"]}


def _drop_layers(
    model, tok, data, examples: int, seq_len: int, seed: int, k: int, by: str, sweep: bool
) -> tuple[LayerPruneResult, PreTrainedModel]:
    """Whole blocks (``analysis.layers``): chosen on the data's train split, val loss on its val split."""
    lp.check_drop(k, num_layers(model.config))
    token_data = _val_data(data, tok)
    windows = selection.scoring_windows(token_data, examples, seq_len, seed)
    chosen = selection.select(model, num_layers(model.config) - k, by, windows)
    dropped = chosen.dropped
    pruned = drop_blocks(model, dropped)
    before, after = val_loss(model, token_data), val_loss(pruned, token_data)
    curves = {"layers": lp.sweep(model, token_data, windows, lp.SWEEP, max_drop=k)} if sweep else {}
    result = LayerPruneResult(
        out=Path(),
        model="",
        by=by,
        drop_layers=k,
        dropped_layers=dropped,
        layer_scores=chosen.to_json(),
        before={"val": _val_summary(before)},
        after={"val": _val_summary(after)},
        sweep=curves,
        seconds=0.0,
    )
    return result, pruned


def _prune_width(
    model, tok, data, examples: int, seq_len: int, seed: int, heads_pct: float, ffn_pct: float, ranking: str, unit: str
) -> tuple[WidthPruneResult, PreTrainedModel]:
    """Uniform width (``models.width_cut``): units ranked on the data's train split, the cut model
    and the masked reference scored on its val split (they must agree)."""
    width_cut.check_cut(model.config, heads_pct, ffn_pct, unit)  # before the slow ranking
    token_data = _val_data(data, tok)
    windows = selection.scoring_windows(token_data, examples, seq_len, seed)
    print(f"ranking heads and FFN neurons by {ranking} on {len(windows)} train windows ...", flush=True)
    plan = width_cut.plan(model.config, *wd.unit_scores(model, windows, ranking), heads_pct, ffn_pct, unit)
    before = val_loss(model, token_data)
    with wd.masked(model, plan):
        masked = val_loss(model, token_data)
    small = width_cut.cut(model, plan)
    after = val_loss(small, token_data)

    def shape(m: PreTrainedModel) -> dict[str, int]:
        return dict(zip(("heads", "kv_heads", "head_width", "ffn_neurons"), width_cut.geometry(m.config), strict=True))

    result = WidthPruneResult(
        out=Path(),
        model="",
        by=ranking,
        head_unit=unit,
        heads_percent=heads_pct,
        ffn_percent=ffn_pct,
        geometry={"before": shape(model), "after": shape(small)},
        params={"before": parameter_count(model), "after": parameter_count(small)},
        plan=plan.to_json(),
        before={"val": _val_summary(before)},
        after={"val": _val_summary(after)},
        masked={"val": _val_summary(masked)},
        seconds=0.0,
    )
    return result, small


def _prune_both(
    model, tok, data, examples: int, seq_len: int, seed: int, k: int, by: str, ffn_pct: float, ranking: str, unit: str
) -> tuple[WidthPruneResult, PreTrainedModel]:
    """Depth, then width: the K blocks ``by`` drops, then ``ffn_pct`` of every remaining block's
    neurons, ranked on the shallower model (the units it has left)."""
    layers, shallow = _drop_layers(
        model, tok, data=data, examples=examples, seq_len=seq_len, seed=seed, k=k, by=by, sweep=False
    )
    result, small = _prune_width(
        shallow,
        tok,
        data,
        examples=examples,
        seq_len=seq_len,
        seed=seed,
        heads_pct=0.0,
        ffn_pct=ffn_pct,
        ranking=ranking,
        unit=unit,
    )
    result.dropped_layers, result.layers_by, result.before = layers.dropped_layers, by, layers.before
    result.params["before"] = parameter_count(model)
    result.geometry["before"] |= {"layers": num_layers(model.config)}
    result.geometry["after"] |= {"layers": num_layers(small.config)}
    return result, small


def _card(result: PruneResult | LayerPruneResult | WidthPruneResult) -> dict:
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


def _write(folder: Path, result: PruneResult | LayerPruneResult | WidthPruneResult) -> None:
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
