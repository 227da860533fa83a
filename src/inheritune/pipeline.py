"""The whole recipe (`inheritune run`): a recipe's pipeline, from data to a report comparing the arms.

Order: prepare the data (or use a prepared folder), optionally analyse the reference's
attention, grow the ``inheritune`` arm until it matches the reference, then train the other
arms on the same validation set at equal token budgets (scratch at the grown depth on the
inheritune arm's total tokens, and the optional variants), evaluate, and write the report.
Every arm is a train run under ``RUN/arms/``; rerunning the same recipe resumes where it stopped.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from inheritune.data.shards import open_data
from inheritune.data.sources import check_source
from inheritune.errors import InherituneError
from inheritune.growth.grow import GrowResult, grow_until_matched, train_resumable
from inheritune.io import atomic_write_json, read_json
from inheritune.models.families import family_of, num_layers
from inheritune.models.loading import load_model, load_tokenizer, parameter_count
from inheritune.models.surgery import derive
from inheritune.recipe import Recipe, load_recipe
from inheritune.reporting.report import write_report
from inheritune.training import TrainResult
from inheritune.training.config import make_config

RECIPE = "recipe.json"  # the resolved recipe a run was started with: a rerun must match it to resume


def scratch_model(reference: PreTrainedModel, layers: int, seed: int) -> PreTrainedModel:
    """A randomly initialised model of the reference's architecture with ``layers`` blocks.

    Built from the config alone: no inherited embeddings, norms or head, which is what
    "from scratch" means in the paper's comparison.
    """
    config = copy.deepcopy(reference.config)
    config.num_hidden_layers = layers
    for key in family_of(config).layer_lists:
        if getattr(config, key, None) is not None:
            setattr(config, key, getattr(config, key)[:layers])
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def _prepare_out(out: Path, recipe: Recipe, overwrite: bool) -> None:
    resolved = json.loads(json.dumps(recipe.to_dict()))
    if out.exists() and not out.is_dir():
        raise InherituneError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        stored = read_json(out / RECIPE, "run recipe") if (out / RECIPE).is_file() else None
        if stored == resolved:
            return
        if not overwrite:
            what = "was started with a different recipe" if stored else "is not empty"
            raise InherituneError(f"output folder {out} {what}; pass --overwrite to start over or use a new --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / RECIPE, resolved)


def prepare(recipe: Recipe, tokenizer, out: Path, log: Callable[[str], None]) -> Path:
    """The recipe's data folder: the given prepared one, or one prepared into RUN/data once."""
    if recipe.data.dir is not None:
        return open_data(recipe.data.dir).root
    target = out / "data"
    if not (target / "manifest.json").is_file():
        from inheritune.data.prepare import prepare_data

        log(f"preparing data {recipe.data.sources} -> {target}")
        prepare_data(recipe.data.sources, tokenizer, target, max_tokens=recipe.data.max_tokens,
                     val_tokens=recipe.data.val_tokens, seed=recipe.data.seed, overwrite=True,
                     text_field=recipe.data.text_field)
    return target


def _arm(result: TrainResult, layers: int, params: int, offset: int = 0) -> dict:
    """An arm's numbers, all taken from its train run's own result."""
    return {
        "layers": layers, "params": params, "tokens": result.tokens, "final_val_loss": result.final_val_loss,
        "ppl": float(torch.tensor(result.final_val_loss).exp()), "wall_time": result.wall_time,
        "curve": {"tokens": [offset + h["tokens"] for h in result.val_history],
                  "val_loss": [h["val_loss"] for h in result.val_history]},
        "run_dir": str(result.run_dir), "model_dir": str(result.model_dir),
    }


def _inheritune_arm(grown: GrowResult, results: list[TrainResult], params: int) -> dict:
    """The rounds' curves laid end to end: round r starts at the tokens rounds 1..r-1 consumed."""
    tokens, losses, offset = [], [], 0
    for result in results:
        arm = _arm(result, 0, 0, offset)
        tokens += arm["curve"]["tokens"]
        losses += arm["curve"]["val_loss"]
        offset += result.tokens
    last = results[-1]
    return {"layers": grown.layers, "params": params, "tokens": grown.tokens, "final_val_loss": last.final_val_loss,
            "ppl": float(torch.tensor(last.final_val_loss).exp()), "wall_time": grown.wall_time,
            "curve": {"tokens": tokens, "val_loss": losses}, "matched": grown.matched,
            "run_dir": str(grown.run_dir), "model_dir": str(grown.model_dir)}


def run(recipe: Recipe | str | Path | None, out: str | Path, *, overwrite: bool = False,
        log: Callable[[str], None] = partial(print, flush=True)) -> dict:
    """Run a recipe (a :class:`Recipe`, a YAML path, or None for the embedded default) into ``out``.

    Returns the report dict also written to ``out/report.json``.
    """
    start = time.perf_counter()
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    out = Path(out)
    if recipe.data.dir is not None:
        open_data(recipe.data.dir)
    else:
        for source in recipe.data.sources:
            check_source(source)  # a typo fails now, not after the reference loads
    _prepare_out(out, recipe, overwrite)
    log(f"loading reference {recipe.reference}")
    reference = load_model(recipe.reference)
    tokenizer = load_tokenizer(recipe.reference)
    data_dir = prepare(recipe, tokenizer, out, log)
    data = open_data(data_dir)
    g = recipe.grow
    config = make_config(recipe.train, tokens=g.tokens_per_round, seed=recipe.seed)

    analysis = None
    if recipe.analysis.enabled:
        analysis = _analysis(recipe, reference, tokenizer, data_dir, out / "analysis", log)

    grown = grow_until_matched(recipe.reference, data_dir, out / "arms" / "inheritune", g.start_layers,
                               g.step_layers, g.max_layers, g.tokens_per_round, g.margin, g.mode, config,
                               reference_model=reference, tokenizer=tokenizer, log=log)
    round_results = [_train_result(Path(r["run_dir"])) for r in grown.rounds]
    arms = {"inheritune": _inheritune_arm(grown, round_results, parameter_count(load_model(grown.model_dir)))}

    ref_eval = read_json(grown.run_dir / "reference.json", "reference cache")["result"]
    arms["reference"] = {"layers": ref_eval["layers"], "params": ref_eval["params"], "tokens": 0,
                         "final_val_loss": ref_eval["loss"], "ppl": ref_eval["ppl"], "wall_time": ref_eval["wall_time"],
                         "curve": None}

    # The comparison arms: (name, model builder, layers, tokens). Builders run only for unfinished arms.
    depth, total = grown.layers, grown.tokens
    plan: list[tuple[str, Callable[[], PreTrainedModel], int, int]] = []
    if recipe.arms.scratch:
        plan.append(("scratch", lambda: scratch_model(reference, depth, recipe.seed), depth, total))
    if recipe.arms.scratch_2x:
        plan.append(("scratch-2x", lambda: scratch_model(reference, depth, recipe.seed), depth, 2 * total))
    if recipe.arms.scratch_start and (depth != g.start_layers or not recipe.arms.scratch):
        plan.append((f"scratch-{g.start_layers}L", lambda: scratch_model(reference, g.start_layers, recipe.seed),
                     g.start_layers, grown.rounds[0]["tokens"]))
    for init in recipe.arms.nogrow:
        plan.append((f"inheritune-nogrow-{init}", lambda init=init: derive(reference, depth, init=init, seed=recipe.seed),
                     depth, total))
    if recipe.arms.reference_trained:
        plan.append(("reference-trained", lambda: copy.deepcopy(reference), num_layers(reference.config), total))

    for name, build, layers, tokens in plan:
        run_dir = out / "arms" / name
        log(f"arm {name}: {layers} layers, {tokens} tokens -> {run_dir}")
        model = build()
        params = parameter_count(model)
        result = train_resumable(model, data_dir, run_dir, dataclasses.replace(config, tokens=tokens), tokenizer)
        arms[name] = _arm(result, layers, params)
        log(f"arm {name}: val loss {result.final_val_loss:.4f} after {result.tokens} tokens")

    report = _report(recipe, data, config, grown, arms, analysis, time.perf_counter() - start)
    if recipe.eval.tasks:
        report["eval"], report["eval_markdown"] = _evaluate(recipe, arms, tokenizer, data_dir, config.seq_len, log)
    files = write_report(report, out)
    log(f"{report['verdict']}\nreport: {files['md']} / {files['html']}")
    return report


def _train_result(run_dir: Path) -> TrainResult:
    """A finished train run's result, as the trainer stored it."""
    return TrainResult.from_json(read_json(run_dir / "result.json", "train result"))


def _analysis(recipe: Recipe, reference, tokenizer, data_dir: Path, out: Path, log) -> dict:
    from inheritune.analysis.analyze import analyze

    a = recipe.analysis
    cache = out / "analysis-run.json"
    if cache.is_file():
        return read_json(cache, "analysis result")
    log(f"analysing the reference's attention -> {out}")
    result = analyze(reference, data=data_dir, out=out, sequences=a.sequences, seq_len=a.seq_len, tau=a.tau,
                     seed=a.seed, tokenizer=tokenizer, overwrite=True)
    summary = {"recommended_layers": result.get("recommended_layers"), "lazy_layers": result.get("lazy_layers"),
               "plots": {name: f"analysis/{file}" for name, file in result.get("plots", {}).items()}}
    summary["summary"] = (f"Lazy layers: {summary['lazy_layers']}; recommended depth: "
                          f"{summary['recommended_layers']} layers (grow.start_layers used {recipe.grow.start_layers}).")
    atomic_write_json(cache, summary)
    return summary


def _evaluate(recipe: Recipe, arms: dict, tokenizer, data_dir: Path, seq_len: int, log) -> tuple[dict, str]:
    from inheritune.evaluation.compare import comparison_markdown
    from inheritune.evaluation.harness import evaluate

    e = recipe.eval
    results = {}
    for name, arm in arms.items():
        model = arm.get("model_dir") or recipe.reference
        log(f"evaluating {name} on {', '.join(e.tasks)}")
        results[name] = evaluate(model, tokenizer=tokenizer, data=data_dir, tasks=e.tasks, num_fewshot=e.num_fewshot,
                                 limit=e.limit, batch_size=e.batch_size, seq_len=seq_len)
    return results, comparison_markdown(results)


def _report(recipe: Recipe, data, config, grown: GrowResult, arms: dict, analysis: dict | None, elapsed: float) -> dict:
    ref, inh = arms["reference"], arms["inheritune"]
    verdict = (f"Inheritune {'matched' if grown.matched else 'did not match'} the {ref['layers']}-layer reference "
               f"(val loss {ref['final_val_loss']:.4f}): {inh['layers']} layers reach {inh['final_val_loss']:.4f} "
               f"after {inh['tokens']:,} tokens in {len(grown.rounds)} round(s)")
    if "scratch" in arms:
        s = arms["scratch"]
        better = "beat" if inh["final_val_loss"] < s["final_val_loss"] else "did not beat"
        verdict += f"; it {better} scratch at {s['layers']} layers on the same tokens ({s['final_val_loss']:.4f})"
    verdict += "."
    start = f"scratch-{recipe.grow.start_layers}L"
    if start in arms:  # the equal-depth, equal-token comparison with round 1
        first, s = grown.rounds[0], arms[start]
        better = "beat" if first["val_loss"] < s["final_val_loss"] else "did not beat"
        verdict += (f" At {first['layers']} layers after {first['tokens']:,} tokens, Inheritune ({first['val_loss']:.4f}) "
                    f"{better} scratch ({s['final_val_loss']:.4f}).")
    setup = (f"Reference `{recipe.reference}`, data `{data.root}`; validation: the same fixed val split for every "
             f"arm (seq_len {config.seq_len}, eval_tokens {config.eval_tokens or 'all'}). Growth: start "
             f"{recipe.grow.start_layers} layers, +{recipe.grow.step_layers} per round ({recipe.grow.mode}), at most "
             f"{recipe.grow.max_layers or ref['layers']}, {recipe.grow.tokens_per_round:,} tokens per round, "
             f"margin {recipe.grow.margin}. wall_time: an arm's training seconds, evaluations included (a resumed "
             f"run counts from its resume). This invocation of the run took {elapsed:.0f} s.")
    return {"title": f"{recipe.reference} -> {inh['layers']} layers", "verdict": verdict, "setup": setup,
            "recipe": recipe.to_dict(), "data": str(data.root), "seq_len": config.seq_len,
            "eval_tokens": config.eval_tokens, "arms": arms, "growth": grown.to_json(),
            "analysis": analysis, "wall_time": elapsed}
