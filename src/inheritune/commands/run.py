"""The whole recipe (`inheritune run`): a recipe's pipeline, from data to a report comparing the arms.

Order: check every input (nothing is written before), prepare the data (or use a prepared
folder), optionally analyze the reference's attention, grow the main ``inheritune`` arm until
it matches the reference (with distillation from the reference when the recipe says so: then
it is ``inheritune-kd``), optionally grow its twin with the other loss, then train the other
arms on the same validation set at equal token budgets (scratch at the grown depth with the
same loss, scratch at the reference's depth, and the optional variants), evaluate, and write
the report. Every arm is a train run under ``RUN/arms/``; rerunning the same recipe resumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from inheritune.analysis.analyze_job import analyze
from inheritune.arms import REFERENCE_CACHE, grow_arm, losses, train_arms
from inheritune.atomic import (
    RunFolder,
    atomic_write_json,
    current_paths,
    final_paths,
    read_json,
)
from inheritune.data.prepare_job import prepare_data
from inheritune.data.shards import open_data
from inheritune.errors import InherituneError
from inheritune.evaluation.eval_job import evaluate
from inheritune.evaluation.reference_loss import reference_val_loss
from inheritune.growth.rounds import GrowResult
from inheritune.models.gguf_export import export_gguf
from inheritune.models.loading import load_model
from inheritune.recipe import Recipe, default_recipe_text, load_recipe
from inheritune.recipe_checks import check_fit, check_inputs, load_reference
from inheritune.reporting.arm_numbers import ArmResult, Yardstick
from inheritune.reporting.report import build_report, write_report
from inheritune.result import CommandResult
from inheritune.training.train_config import make_config
from inheritune.yardstick import (
    REFERENCE_TRAINED,
    distils,
    needs_reference_runs,
    reference_arm,
    train_reference,
    yardstick,
)
from inheritune.yardstick import teacher as make_teacher

HELP = {"recipe": "recipe YAML (default: the embedded default, see --show-default)"}  # shared: commands.HELP

GGUF = "model.gguf"  # export.gguf: the main arm's final model for llama.cpp
RECIPE = "recipe.json"  # the resolved recipe a run was started with: a rerun must match it to resume


def show_default(**_) -> str:
    """print the embedded default recipe and exit"""
    return default_recipe_text()


def check(recipe: str | Path | None = None, trust_remote_code: bool = False, **_) -> str:
    """only check the recipe (the checks a run makes first: tokenizers, not weights) and exit"""
    loaded = load_recipe(recipe)
    if trust_remote_code:
        loaded.train["trust_remote_code"] = True
    lines = [f"recipe {recipe or '(default)'} is valid: reference {loaded.reference}"]
    return "".join(f"{line}\n" for line in lines + [f"  checked {c}" for c in check_inputs(loaded)])


def prepare(recipe: Recipe, tokenizer, out: Path, log: Callable[[str], None]) -> Path:
    """The recipe's data folder: the given prepared one, or one prepared into RUN/data once."""
    if recipe.data.dir is not None:
        return open_data(recipe.data.dir).root
    target = out / "data"
    if not (target / "manifest.json").is_file():
        log(f"preparing data {recipe.data.sources} -> {target}")
        prepare_data(
            recipe.data.sources,
            tokenizer,
            target,
            max_tokens=recipe.data.max_tokens,
            val_tokens=recipe.data.val_tokens,
            seed=recipe.data.seed,
            overwrite=True,
            text_field=recipe.data.text_field,
        )
    return target


@dataclass
class RunResult(CommandResult):
    """What ``run`` wrote to ``out``; ``report()`` is report.json (the arms, the growth rounds, the
    verdict; ``reporting/report.py`` builds it)."""

    out: Path
    title: str
    main_arm: str
    verdict: str
    judged_by: Yardstick  # the val loss the verdict and the grow loop judge against
    setup: str
    yardstick: dict[str, str]  # how val loss is measured (evaluation/val_loss.py)
    recipe: dict[str, Any]  # the resolved recipe (Recipe.to_dict())
    data: str
    arms: dict[str, ArmResult]
    growth: dict[str, GrowResult]
    analysis: dict[str, Any] | None
    eval: dict[str, Any] | None
    wall_time: float
    seconds: float


def run(
    recipe: Recipe | str | Path | None = None,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    trust_remote_code: bool = False,
) -> RunResult:
    """``inheritune run [RECIPE.yaml] --out RUN``, same arguments: run a recipe (a :class:`Recipe`,
    a YAML path, or None for the embedded default) into ``out``.

    Rerunning the same recipe resumes; a run replacing another one (``overwrite``) is built beside
    it in ``.NAME.new`` and swapped in once its report is written, so the old run survives any
    failure; rerunning continues it. ``trust_remote_code`` is ``train.trust_remote_code``.
    """
    start = time.perf_counter()
    log = partial(print, flush=True)
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if out is None:
        raise InherituneError("--out is required (the run folder)")
    if trust_remote_code:
        recipe.train["trust_remote_code"] = True
    out = Path(out)
    for line in check_inputs(recipe):  # every file and model the recipe names, before any work
        log(f"checked {line}")
    folder = RunFolder.open(out, RECIPE, recipe.to_dict(), "a different recipe", overwrite)
    log(f"loading reference {recipe.reference}")
    reference, tokenizer = load_reference(recipe)
    check_fit(recipe, reference, tokenizer)
    with folder.build() as work:  # every input checked: a replacement is built beside the old run
        if work != out:
            log(f"building the new run in {work}; {out} is kept until it is complete")
        report = _run(recipe, reference, tokenizer=tokenizer, out=work, start=start, log=log)
    log(f"{report['verdict']}\nreport: {out / 'report.md'} / {out / 'report.html'}")
    return RunResult.from_json({"out": out, "seconds": time.perf_counter() - start, **current_paths(report)})


def _run(recipe: Recipe, reference, tokenizer, out: Path, start: float, log) -> dict:
    """The pipeline proper, in ``out`` (the folder being written); returns the report it wrote
    (paths as they will be after a swap)."""
    data_dir = prepare(recipe, tokenizer, out, log)
    config = make_config(recipe.train, tokens=recipe.grow.tokens_per_round, seed=recipe.seed)
    analysis = (
        _analysis(recipe, reference, tokenizer=tokenizer, data_dir=data_dir, out=out / "analysis", log=log)
        if recipe.analysis.enabled
        else None
    )
    measured = reference_val_loss(
        reference, recipe.reference, open_data(data_dir), cache=out / REFERENCE_CACHE, batch_size=config.batch_size
    )
    arms = {"reference": reference_arm(reference, measured)}
    runs = (
        train_reference(recipe, reference, config, tokenizer, data_dir, out, log)
        if needs_reference_runs(recipe)
        else None
    )
    if runs is not None and runs.arm is not None:
        arms[REFERENCE_TRAINED] = runs.arm
    judged_by = yardstick(arms["reference"], runs)
    teacher = make_teacher(recipe, reference, config, runs) if distils(recipe) else None
    all_losses = losses(recipe, config, teacher.name if teacher is not None else recipe.reference)
    grown: dict[str, GrowResult] = {}
    for loss in all_losses:  # the main arm first: its depth caps the other loss's growth
        cap = recipe.grow.max_layers if not grown else grown[all_losses[0].suffix].layers
        grown[loss.suffix], arms[f"inheritune{loss.suffix}"] = grow_arm(
            recipe,
            loss,
            data_dir,
            out,
            reference,
            tokenizer,
            max_layers=cap,
            yardstick=judged_by,
            teacher=teacher,
            log=log,
        )
    arms |= train_arms(recipe, reference, tokenizer, data_dir, out, grown, all_losses, teacher, log)
    evals = _evaluate(recipe, arms, tokenizer=tokenizer, data_dir=data_dir, log=log) if recipe.eval.tasks else None
    if recipe.export.gguf is not None:
        main = arms[f"inheritune{all_losses[0].suffix}"]
        assert main.model_dir is not None
        log(f"writing {out / GGUF} ({recipe.export.gguf}) from {main.model_dir}")
        export_gguf(load_model(main.model_dir), tokenizer, out / GGUF, recipe.export.gguf)
    report = final_paths(
        build_report(
            recipe,
            open_data(data_dir),
            grown=grown,
            main_suffix=all_losses[0].suffix,
            arms=arms,
            judged_by=judged_by,
            analysis=analysis,
            evals=evals,
            elapsed=time.perf_counter() - start,
        )
    )
    write_report(report, out)
    return report


def _analysis(recipe: Recipe, reference, tokenizer, data_dir: Path, out: Path, log) -> dict:
    a = recipe.analysis
    cache = out / "analysis-run.json"
    if cache.is_file():
        return read_json(cache, "analysis result")
    log(f"analysing the reference's attention -> {out}")
    result = analyze(
        reference,
        data=data_dir,
        out=out,
        sequences=a.sequences,
        seq_len=a.seq_len,
        tau=a.tau,
        seed=a.seed,
        tokenizer=tokenizer,
        overwrite=True,
    )
    summary = {
        "recommended_layers": result.recommended_layers,
        "lazy_layers": result.lazy_layers,
        "plots": {name: f"analysis/{file}" for name, file in result.plots.items()},
    }
    summary["summary"] = (
        f"Lazy layers: {summary['lazy_layers']}; recommended depth: "
        f"{summary['recommended_layers']} layers (grow.start_layers used {recipe.grow.start_layers})."
    )
    atomic_write_json(cache, summary)
    return summary


def _evaluate(recipe: Recipe, arms: dict[str, ArmResult], tokenizer, data_dir: Path, log) -> dict:
    e = recipe.eval
    results = {}
    for name, arm in arms.items():
        model = arm.model_dir or recipe.reference
        log(f"evaluating {name} on {', '.join(e.tasks)}")
        results[name] = evaluate(
            model,
            tokenizer=tokenizer,
            data=data_dir,
            tasks=e.tasks,
            num_fewshot=e.num_fewshot,
            limit=e.limit,
            batch_size=e.batch_size,
        ).report()
    return results
