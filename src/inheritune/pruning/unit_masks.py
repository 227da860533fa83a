"""Global head and FFN pruning: rank the units on one split of examples (importance, induction or
random), score the masked model on another, and sweep the share removed. Sound by construction:
ranking and scoring examples never share a token, checked when an importance.json is given.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from inheritune.analysis import unit_importance as imp
from inheritune.analysis import unit_pruning as pr
from inheritune.analysis.example_sources import example_sources, half_windows, query_ids
from inheritune.analysis.induction_heads import candidate_tokens, induction_scores
from inheritune.analysis.sampling import tokens_from
from inheritune.atomic import read_json
from inheritune.errors import InherituneError
from inheritune.models.families import num_heads, num_layers
from inheritune.models.tokens import bos_id, shared_vocab, special_ids
from inheritune.pruning.prune_results import TOLERANCE, PruneResult

INDUCTION_SEEDS = 20  # repeated random segments behind --by induction (the induction command's default is 100)


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


def prune_units(
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
