"""The prune job (``inheritune prune``): check the mode, load, run one pruning job, write the folder.

``prune(model, heads=P, ffn=Q, data=DIR, out=DIR)`` is ``inheritune prune MODEL --heads P --ffn Q
--data DIR --out DIR``: the same arguments, the same folder (a transformers model folder with
prune.json and sweep plots inside), and a typed result, one per job (``prune_results``). Units are
ranked on one split of examples and scored on another (``unit_masks``); blocks and width are cut
out (``structural_cuts``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from inheritune.analysis import selection
from inheritune.analysis import unit_pruning as pr
from inheritune.analysis import width_ranking as wd
from inheritune.analysis.example_sources import check_sources
from inheritune.atomic import atomic_dir, check_output_dir
from inheritune.errors import InherituneError
from inheritune.models import budget
from inheritune.models.card import write_card
from inheritune.models.loading import load, model_name
from inheritune.options import positive, shown
from inheritune.pruning.prune_results import LayerPruneResult, PruneResult, WidthPruneResult, card_facts, write_files
from inheritune.pruning.structural_cuts import budget_cut, cut_out
from inheritune.pruning.unit_masks import percents, prune_units, split_sources

STEPS = "0,10,20,30,40,50,60,70,80,90"


FFN_STEPS = "0,10,20,30,40,50"


NO_TOKENIZER = "the output holds weights only (attach one with --tokenizer REF)"


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
    plan = _plan(
        heads, ffn, drop_layers, by, iterative, scores, tasks, data, (width_heads, width_ffn), params, budget_by
    )
    if plan.removes_nothing and not sweep:
        raise InherituneError(
            "prune removes nothing: every cut (--heads, --ffn, --drop-layers, --width-heads, --width-ffn, "
            "--params) is 0 or not given; give one (--sweep alone draws the curves)"
        )
    ranking = wd.WidthRanking(width_by, shown("width_by"))
    head_steps = percents(steps, "--steps") if sweep and plan.units else []
    ffn_sweep = percents(ffn_steps, "--ffn-steps") if sweep and plan.units else []
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
        cut = budget_cut(loaded.config, params, budget_by)
        plan.drop_layers, plan.widths = cut.drop_layers, (0.0, cut.ffn_percent)
    windows = {"data": data, "examples": examples, "seq_len": seq_len, "seed": seed}
    result: PruneResult | LayerPruneResult | WidthPruneResult
    if plan.drop_layers or any(plan.widths):
        result, saved = cut_out(
            loaded, tok, windows, plan.drop_layers, plan.widths, plan.by, sweep=sweep, ranking=ranking, unit=head_unit
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
        result = prune_units(
            loaded,
            tok,
            sources=sources,
            by=plan.by,
            scores=scores,
            source=source,
            allow_overlap=allow_overlap,
            heads_pct=plan.heads_pct,
            ffn_pct=plan.ffn_pct,
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


@dataclass
class _Plan:
    """What the options ask for, checked before the load: the criterion, the shares of heads and
    FFNs (global masks) or the blocks and widths to cut out (filled in from a budget after it)."""

    by: str  # a unit criterion, "width", or a block selector
    heads_pct: float
    ffn_pct: float
    drop_layers: int
    widths: tuple[float, float]
    budget: bool

    @property
    def units(self) -> bool:
        """Global head/FFN masks (not a structural cut)."""
        return self.by != "width" and not self.drop_layers and not self.budget

    @property
    def removes_nothing(self) -> bool:
        return self.units and not (self.heads_pct or self.ffn_pct)


def _plan(
    heads: float,
    ffn: float,
    drop_layers: int,
    by: str | None,
    iterative: int,
    scores,
    tasks,
    data,
    width: tuple[float, float],
    params: float | None,
    budget_by: str,
) -> _Plan:
    heads_pct, ffn_pct = pr.check_percent(heads, "--heads"), pr.check_percent(ffn, "--ffn")
    widths = (pr.check_percent(width[0], "--width-heads"), pr.check_percent(width[1], "--width-ffn"))
    mode: dict[str, Any] = {
        "by": by,
        "heads": heads,
        "ffn": ffn,
        "iterative": iterative,
        "scores": scores,
        "tasks": tasks,
        "data": data,
    }
    chosen = (
        _check_budget(params, budget_by, drop_layers, widths, **mode)
        if params is not None
        else check_mode(drop_layers, widths=widths, **mode)
    )
    return _Plan(chosen, heads_pct, ffn_pct, drop_layers, widths, budget=params is not None)


def _save(model, tok, result, out: str | Path, overwrite: bool) -> None:
    """The pruned model's folder: weights, tokenizer, prune.json (and sweep plots), model card."""
    with atomic_dir(out, overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tok is not None:
            tok.save_pretrained(tmp)
        write_files(tmp, result)
        write_card(tmp, card_facts(result), source=result.model)


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
