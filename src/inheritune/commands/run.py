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

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from inheritune.atomic import (
    RunFolder,
    atomic_write_json,
    current_paths,
    final_paths,
    read_json,
)
from inheritune.commands.analyze import analyze
from inheritune.commands.eval import evaluate
from inheritune.commands.grow import GrowResult, grow_until_matched, train_resumable
from inheritune.commands.prepare import prepare_data
from inheritune.commands.prune import prune
from inheritune.commands.train import TrainResult
from inheritune.data.shards import open_data
from inheritune.data.sources import check_source
from inheritune.errors import InherituneError
from inheritune.models.budget import non_embedding
from inheritune.models.families import config_of_blocks, num_layers
from inheritune.models.loading import load_config, load_model, load_tokenizer, parameter_count, tokenizer_fingerprint
from inheritune.models.surgery import PROVENANCE, inherit, origins, provenance
from inheritune.recipe import Recipe, default_recipe_text, load_recipe
from inheritune.reporting.report import build_report, write_report
from inheritune.result import CommandResult
from inheritune.training import TrainConfig
from inheritune.training.teacher import check_teacher_states
from inheritune.training.train_config import make_config

HELP = {"recipe": "recipe YAML (default: the embedded default, see --show-default)"}  # shared: commands.HELP

RECIPE = "recipe.json"  # the resolved recipe a run was started with: a rerun must match it to resume


@dataclass
class Loss:
    """One training loss of the run: its arm-name suffix and the train config that sets it."""

    suffix: str  # "" (cross-entropy) or "-kd" (distillation)
    config: TrainConfig


def scratch_model(reference: PreTrainedModel, layers: int, seed: int) -> PreTrainedModel:
    """A randomly initialised model of the reference's architecture with ``layers`` blocks.

    Built from the config alone: no inherited embeddings, norms or head, which is what
    "from scratch" means in the paper's comparison.
    """
    config = config_of_blocks(reference.config, [(reference.config, i) for i in range(layers)])
    setattr(config, PROVENANCE, None)  # it holds no reference block
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def _load_reference(recipe: Recipe):
    """The reference model and tokenizer; a failure names the recipe key."""
    trust = bool(recipe.train.get("trust_remote_code", False))
    try:
        return load_model(recipe.reference, trust_remote_code=trust), load_tokenizer(recipe.reference, trust)
    except InherituneError as e:
        raise InherituneError(f"recipe key 'reference': {e}") from None


def _check_fit(recipe: Recipe, reference, tokenizer) -> None:
    """What the reference decides about the recipe (its depth, its tokenizer against a prepared
    data folder), checked before anything is written, naming the recipe key."""
    recipe.grow.check_depth(num_layers(reference.config), recipe.reference, name=lambda key: f"recipe key 'grow.{key}'")
    if recipe.data.dir is not None:
        open_data(recipe.data.dir).check_tokenizer(
            tokenizer_fingerprint(tokenizer), f"the reference {recipe.reference} (recipe key 'data.dir')"
        )


def _named(key: str, value: str, check: Callable):
    """``check()``, its one-line error prefixed with the recipe key and value it concerns."""
    try:
        return check()
    except InherituneError as e:
        raise InherituneError(f"recipe key '{key}' ({value}): {e}") from None


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


def check_inputs(recipe: Recipe) -> list[str]:
    """Every input the recipe names, checked without loading weights (``run`` before it creates
    anything, ``run --check`` alone): the data, the reference's tokenizer, a prepared folder's
    tokenizer and each teacher's. Returns one line per check made."""
    trust = bool(recipe.train.get("trust_remote_code", False))
    if (folder := recipe.data.dir) is not None:
        data = _named("data.dir", folder, lambda: open_data(folder))
        checked = [f"data.dir {recipe.data.dir}: a prepared folder ({data.num_tokens('val'):,} val tokens)"]
    else:
        for source in recipe.data.sources:
            _named("data.sources", source, lambda source=source: check_source(source))
        checked = [f"data.sources {', '.join(recipe.data.sources)}: found"]
    tok = _named("reference", recipe.reference, lambda: load_tokenizer(recipe.reference, trust))
    fingerprint = tokenizer_fingerprint(tok)
    checked.append(f"reference {recipe.reference}: its tokenizer loads")
    if recipe.data.dir is not None:
        _named(
            "data.dir", recipe.data.dir, lambda: data.check_tokenizer(fingerprint, f"the reference {recipe.reference}")
        )
        checked.append("data.dir: tokenized with the reference's tokenizer")
    checked.append(_check_specs(recipe, trust))
    teacher = recipe.distill.teacher
    if (recipe.distill.enabled or recipe.arms.other_loss) and teacher not in ("reference", recipe.reference):
        theirs = _named("distill.teacher", teacher, lambda: tokenizer_fingerprint(load_tokenizer(teacher, trust)))
        if theirs != fingerprint:
            raise InherituneError(
                f"recipe key 'distill.teacher' ({teacher}): its tokenizer differs from the "
                f"reference {recipe.reference}'s; distillation needs one vocabulary"
            )
        checked.append(f"distill.teacher {teacher}: its tokenizer is the reference's")
    return checked


def _check_specs(recipe: Recipe, trust: bool) -> str:
    """The selector, the trained blocks and top:K against the reference's config (no weights) and the
    depths the arms take: each refusal names its recipe key, its value and the model."""
    layers = num_layers(_named("reference", recipe.reference, lambda: load_config(recipe.reference, trust)))
    g = recipe.grow
    deepest = g.check_depth(layers, recipe.reference, name=lambda key: f"recipe key 'grow.{key}'")
    last = deepest if g.direction == "grow" else g.min_layers
    recipe.inherit.by.check(layers, [g.start_layers, last], f"the reference {recipe.reference}")
    shallowest = min(g.start_layers, last)
    if (blocks := recipe.train.get("train_blocks")) is not None:
        blocks.check_depth(shallowest, f"the {shallowest}-layer arms")
    teacher = recipe.reference if recipe.distill.teacher == "reference" else recipe.distill.teacher
    if (states := recipe.train.get("teacher_states")) is not None and (
        recipe.distill.enabled or recipe.arms.other_loss
    ):
        check_teacher_states(states, teacher, trust)
    return f"inherit.by {recipe.inherit.by} and the train blocks fit the reference's {layers} blocks"


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


def losses(recipe: Recipe, config: TrainConfig) -> list[Loss]:
    """The main loss first (distillation when ``distill.enabled``), then the other one if asked for."""
    d = recipe.distill
    teacher = recipe.reference if d.teacher == "reference" else d.teacher
    ce = Loss("", dataclasses.replace(config, distill_from=None))
    kd = Loss(
        "-kd",
        dataclasses.replace(config, distill_from=teacher, distill_alpha=d.alpha, distill_temperature=d.temperature),
    )
    main, other = (kd, ce) if d.enabled else (ce, kd)
    return [main, other] if recipe.arms.other_loss else [main]


def _arm(result: TrainResult, layers: int, params: int) -> dict:
    """An arm's numbers, all taken from its train run's own result."""
    return _rounds_arm([result], layers, params) | {"run_dir": str(result.run_dir)}


def _rounds_arm(results: list[TrainResult], layers: int, params: int) -> dict:
    """Train runs laid end to end (growth rounds): round r starts at the tokens and seconds of rounds 1..r-1."""
    curve: dict[str, list[float]] = {"tokens": [], "wall_time": [], "val_loss": []}
    tokens = 0
    wall: float = 0
    for result in results:
        for h in result.val_history:
            curve["tokens"].append(tokens + h["tokens"])
            curve["wall_time"].append(wall + h.get("wall_time", 0.0))
            curve["val_loss"].append(h["val_loss"])
        tokens, wall = tokens + result.tokens, wall + result.wall_time
    last = results[-1]
    return {
        "layers": layers,
        "params": params,
        "tokens": tokens,
        "final_val_loss": last.final_val_loss,
        "ppl": float(torch.tensor(last.final_val_loss).exp()),
        "wall_time": wall,
        "curve": curve,
        "model_dir": str(last.model_dir),
    }


def _grow(
    recipe: Recipe, loss: Loss, data_dir: Path, out: Path, reference, tokenizer, max_layers: int | None, log
) -> tuple[GrowResult, dict]:
    """One inheritune arm: grow until matched with this loss; its report entry."""
    growth = dataclasses.replace(recipe.grow, max_layers=max_layers)
    grown = grow_until_matched(
        recipe.reference,
        data_dir,
        out=out / "arms" / f"inheritune{loss.suffix}",
        growth=growth,
        config=loss.config,
        by=recipe.inherit.by,
        reference_model=reference,
        tokenizer=tokenizer,
        log=log,
    )
    results = [
        TrainResult.from_json(read_json(Path(r["run_dir"]) / "result.json", "train result")) for r in grown.rounds
    ]
    model = load_model(grown.model_dir)
    arm = _rounds_arm(results, grown.layers, parameter_count(model))
    return grown, arm | {
        "matched": grown.matched,
        "run_dir": str(grown.run_dir),
        "model_dir": str(grown.model_dir),
        "blocks": grown.blocks,
        "non_embedding": non_embedding(model.config),
    }


def _plan(recipe: Recipe, reference, grown: dict[str, GrowResult], all_losses: list[Loss], cut: Callable):
    """The comparison arms: (name, model builder, tokens, loss). Builders run only for unfinished arms;
    ``cut(shape)`` builds a budget arm's model."""
    main = all_losses[0]
    seed, a, g = recipe.seed, recipe.arms, recipe.grow
    depth, total = grown[main.suffix].layers, grown[main.suffix].tokens
    if a.scratch:
        for loss in all_losses:
            d = grown[loss.suffix].layers
            yield (
                f"scratch{loss.suffix}",
                lambda d=d: scratch_model(reference, d, seed),
                grown[loss.suffix].tokens,
                loss,
            )
    if a.scratch_full:
        full = num_layers(reference.config)
        yield f"scratch-full{main.suffix}", lambda: scratch_model(reference, full, seed), total, main
    if a.scratch_2x:
        yield f"scratch-2x{main.suffix}", lambda: scratch_model(reference, depth, seed), 2 * total, main
    if a.scratch_start and (depth != g.start_layers or not a.scratch):
        yield (
            f"scratch-{g.start_layers}L{main.suffix}",
            lambda: scratch_model(reference, g.start_layers, seed),
            grown[main.suffix].rounds[0]["tokens"],
            main,
        )
    if a.first_n and recipe.inherit.by != "first-n":
        yield f"first-n{main.suffix}", lambda: inherit(reference, depth, seed=seed), total, main
    for init in a.nogrow:
        yield (
            f"inheritune-nogrow-{init}{main.suffix}",
            lambda init=init: inherit(reference, depth, init=init, seed=seed),
            total,
            main,
        )
    if a.reference_trained:
        yield f"reference-trained{main.suffix}", lambda: copy.deepcopy(reference), total, main
    if recipe.budget.params is not None:
        for shape in recipe.budget.by:
            yield f"budget-{shape}{main.suffix}", lambda shape=shape: cut(shape), total, main


def _budget_model(recipe: Recipe, reference, tokenizer, data_dir: Path, out: Path, shape: str, log) -> PreTrainedModel:
    """A budget arm's model: the reference cut to ``budget.params`` of its non-embedding parameters by
    ``shape`` with ``prune`` (its folder, prune.json included, kept in RUN/budget/SHAPE)."""
    b, folder = recipe.budget, out / "budget" / shape
    if not (folder / "prune.json").is_file():
        log(f"cutting the reference to {b.params:g} of its non-embedding parameters by {shape} -> {folder}")
        prune(
            copy.deepcopy(reference),
            out=folder,
            data=data_dir,
            params=b.params,
            budget_by=shape,
            by=None if shape == "width" else recipe.inherit.by,
            width_by=b.width_by,
            seed=recipe.seed,
            tokenizer=tokenizer,
            overwrite=True,
        )
    model = load_model(folder)
    if getattr(model.config, PROVENANCE, None) is None:  # a width cut holds every reference block, narrowed
        setattr(
            model.config,
            PROVENANCE,
            provenance([(model, i) for i in range(num_layers(model.config))], recipe.reference),
        )
    return model


def _train_arms(recipe, reference, tokenizer, data_dir: Path, out: Path, grown, all_losses, log) -> dict:
    arms = {}
    cut = partial(_budget_model, recipe, reference, tokenizer, data_dir, out, log=log)
    for name, build, tokens, loss in _plan(recipe, reference, grown, all_losses, cut):
        run_dir = out / "arms" / name
        model = build()
        layers, params = num_layers(model.config), parameter_count(model)
        log(f"arm {name}: {layers} layers, {tokens} tokens -> {run_dir}")
        teacher = reference if loss.config.distill_from == recipe.reference else None
        config = dataclasses.replace(loss.config, tokens=tokens)
        inherited = bool(getattr(model.config, PROVENANCE, None))
        if not inherited:  # scratch (or the reference itself): no inherited blocks to leave frozen
            config = dataclasses.replace(config, train_blocks="all")
        result = train_resumable(model, data_dir, run_dir=run_dir, config=config, tokenizer=tokenizer, teacher=teacher)
        arms[name] = _arm(result, layers, params) | {
            "blocks": origins(model) if inherited else None,
            "non_embedding": non_embedding(model.config),
        }
        log(f"arm {name}: val loss {result.final_val_loss:.4f} after {result.tokens} tokens")
    return arms


@dataclass
class RunResult(CommandResult):
    """What ``run`` wrote to ``out``; ``report()`` is report.json (the arms, the growth rounds, the
    verdict; ``reporting/report.py`` builds it)."""

    out: Path
    title: str
    main_arm: str
    verdict: str
    setup: dict
    yardstick: dict
    recipe: dict
    data: dict
    arms: dict
    growth: dict
    analysis: dict | None
    eval: dict | None
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
    reference, tokenizer = _load_reference(recipe)
    _check_fit(recipe, reference, tokenizer)
    with folder.build() as work:  # every input checked: a replacement is built beside the old run
        if work != out:
            log(f"building the new run in {work}; {out} is kept until it is complete")
        report = _run(recipe, reference, tokenizer=tokenizer, out=work, start=start, log=log)
    log(f"{report['verdict']}\nreport: {out / 'report.md'} / {out / 'report.html'}")
    return RunResult(out=out, seconds=time.perf_counter() - start, **current_paths(report))


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

    all_losses = losses(recipe, config)
    grown: dict[str, GrowResult] = {}
    arms: dict[str, dict] = {}
    for loss in all_losses:  # the main arm first: its depth caps the other loss's growth
        cap = recipe.grow.max_layers if not grown else grown[all_losses[0].suffix].layers
        grown[loss.suffix], arms[f"inheritune{loss.suffix}"] = _grow(
            recipe, loss, data_dir=data_dir, out=out, reference=reference, tokenizer=tokenizer, max_layers=cap, log=log
        )
    ref_eval = read_json(grown[all_losses[0].suffix].run_dir / "reference.json", "reference cache")["result"]
    arms["reference"] = {
        "layers": ref_eval["layers"],
        "params": ref_eval["params"],
        "tokens": 0,
        "final_val_loss": ref_eval["loss"],
        "ppl": ref_eval["ppl"],
        "wall_time": ref_eval["wall_time"],
        "curve": None,
        "non_embedding": non_embedding(reference.config),
    }
    arms |= _train_arms(
        recipe, reference, tokenizer=tokenizer, data_dir=data_dir, out=out, grown=grown, all_losses=all_losses, log=log
    )
    evals = _evaluate(recipe, arms, tokenizer=tokenizer, data_dir=data_dir, log=log) if recipe.eval.tasks else None
    report = final_paths(
        build_report(
            recipe,
            open_data(data_dir),
            grown=grown,
            main_suffix=all_losses[0].suffix,
            arms=arms,
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


def _evaluate(recipe: Recipe, arms: dict, tokenizer, data_dir: Path, log) -> dict:
    e = recipe.eval
    results = {}
    for name, arm in arms.items():
        model = arm.get("model_dir") or recipe.reference
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
