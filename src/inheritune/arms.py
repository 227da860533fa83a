"""The arms a recipe trains, and how: the inheritune arm grown until matched, then the comparison arms
the recipe asks for (scratch twins, the paper's first n blocks, the paper's init ablations, budget
cuts), each a resumable train run in ``RUN/arms/NAME`` on the same tokens and loss. The reference
trained on the same tokens (``yardstick.py``) runs first: it is the yardstick the others are judged by.

``plan`` lists the comparison arms as ``PlannedArm`` values; ``train_arms`` builds and trains the
unfinished ones; every arm's numbers are an ``ArmResult``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import cast

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from inheritune.atomic import read_json
from inheritune.growth.rounds import GrowResult, grow_until_matched
from inheritune.models.budget import non_embedding
from inheritune.models.families import config_of_blocks, num_layers
from inheritune.models.loading import load_model, parameter_count
from inheritune.models.surgery import PROVENANCE, Init, inherit, origins, provenance
from inheritune.pruning.prune_job import prune
from inheritune.recipe import Recipe
from inheritune.reporting.arm_numbers import ArmResult, Curve, Yardstick
from inheritune.training import TrainConfig
from inheritune.training.train_result import TrainResult
from inheritune.training.trainer import train_resumable

REFERENCE_CACHE = "reference.json"  # the reference's val loss, measured once per run (RUN/reference.json)


@dataclass
class Teacher:
    """The model the -kd arms distil from, in memory: the reference as it is, or corrected (trained on
    the run's train split first); its forward FLOPs per token and what its correction cost."""

    name: str  # the arms' distill_from
    model: PreTrainedModel
    forward_flops: float  # per token: a third of the training FLOPs per token (flops.py)
    correction_flops: float = 0.0  # training FLOPs spent correcting it (0: the reference as it is)


@dataclass
class Loss:
    """One training loss of the run: its arm-name suffix and the train config that sets it."""

    suffix: str  # "" (cross-entropy) or "-kd" (distillation)
    config: TrainConfig


@dataclass
class PlannedArm:
    """A comparison arm before it runs: its model is built only when its run has not finished."""

    name: str
    build: Callable[[], PreTrainedModel]
    tokens: int
    loss: Loss


def scratch_model(reference: PreTrainedModel, layers: int, seed: int) -> PreTrainedModel:
    """A randomly initialised model of the reference's architecture with ``layers`` blocks.

    Built from the config alone: no inherited embeddings, norms or head, which is what
    "from scratch" means in the paper's comparison.
    """
    config = config_of_blocks(reference.config, [(reference.config, i) for i in range(layers)])
    setattr(config, PROVENANCE, None)  # it holds no reference block
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def losses(recipe: Recipe, config: TrainConfig, teacher: str) -> list[Loss]:
    """The main loss first (distillation from ``teacher`` when ``distill.enabled``), then the other one
    if asked for."""
    d = recipe.distill
    ce = Loss("", dataclasses.replace(config, distill_from=None))
    kd = Loss(
        "-kd",
        dataclasses.replace(config, distill_from=teacher, distill_alpha=d.alpha, distill_temperature=d.temperature),
    )
    main, other = (kd, ce) if d.enabled else (ce, kd)
    return [main, other] if recipe.arms.other_loss else [main]


def arm_result(
    results: list[TrainResult], model: PreTrainedModel, teacher: Teacher | None, blocks: list[int] | None = None
) -> ArmResult:
    """Train runs laid end to end (growth rounds: round r starts at the tokens and seconds of rounds
    1..r-1), as one arm; ``teacher``: the one it distilled from, whose FLOPs it is charged."""
    curve = Curve([], [], [])
    tokens, wall = 0, 0.0
    for result in results:
        for h in result.val_history:
            curve.tokens.append(tokens + h.tokens)
            curve.wall_time.append(wall + h.wall_time)
            curve.val_loss.append(h.val_loss)
        tokens, wall = tokens + result.tokens, wall + result.wall_time
    last = results[-1]
    per_token = read_json(last.run_dir / "config.json", "run config")["flops_per_token"]
    return ArmResult(
        layers=num_layers(model.config),
        params=parameter_count(model),
        non_embedding=non_embedding(model.config),
        tokens=tokens,
        final_val_loss=last.final_val_loss,
        ppl=float(torch.tensor(last.final_val_loss).exp()),
        wall_time=wall,
        curve=curve,
        flops_per_token=per_token,
        train_flops=per_token * tokens,
        teacher_forward_flops=teacher.forward_flops if teacher is not None else 0.0,
        correction_flops=teacher.correction_flops if teacher is not None else 0.0,
        teacher_flops=teacher.forward_flops * tokens + teacher.correction_flops if teacher is not None else 0.0,
        model_dir=str(last.model_dir),
        run_dir=str(last.run_dir),
        blocks=blocks,
    )


def grow_arm(
    recipe: Recipe,
    loss: Loss,
    data_dir: Path,
    out: Path,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    max_layers: int | None,
    yardstick: Yardstick,
    teacher: Teacher | None,
    log: Callable[[str], None],
) -> tuple[GrowResult, ArmResult]:
    """One inheritune arm: grow until ``yardstick`` is matched with this loss; its report entry."""
    growth = dataclasses.replace(recipe.grow, max_layers=max_layers)
    distilling = loss.config.distill_from is not None and teacher is not None
    grown = grow_until_matched(
        recipe.reference,
        data_dir,
        out=out / "arms" / f"inheritune{loss.suffix}",
        growth=growth,
        config=loss.config,
        by=recipe.inherit.by,
        reference_model=reference,
        tokenizer=tokenizer,
        yardstick=yardstick,
        teacher_model=teacher.model if distilling and teacher is not None else None,
        reference_cache=out / REFERENCE_CACHE,
        log=log,
    )
    results = [TrainResult.from_json(read_json(r.run_dir / "result.json", "train result")) for r in grown.rounds]
    arm = arm_result(results, load_model(grown.model_dir), teacher if distilling else None, blocks=grown.blocks)
    return grown, dataclasses.replace(
        arm, matched=grown.matched, run_dir=str(grown.run_dir), model_dir=str(grown.model_dir)
    )


def plan(
    recipe: Recipe,
    reference: PreTrainedModel,
    grown: dict[str, GrowResult],
    all_losses: list[Loss],
    cut: Callable[[str], PreTrainedModel],
) -> Iterator[PlannedArm]:
    """The comparison arms; ``cut(shape)`` builds a budget arm's model."""
    main = all_losses[0]
    seed, a, g = recipe.seed, recipe.arms, recipe.grow
    depth, total = grown[main.suffix].layers, grown[main.suffix].tokens
    scratch = partial(scratch_model, reference, seed=seed)
    if a.scratch:
        for loss in all_losses:
            grew = grown[loss.suffix]
            yield PlannedArm(f"scratch{loss.suffix}", partial(scratch, grew.layers), grew.tokens, loss)
    if a.scratch_full:
        yield PlannedArm(f"scratch-full{main.suffix}", partial(scratch, num_layers(reference.config)), total, main)
    if a.scratch_2x:
        yield PlannedArm(f"scratch-2x{main.suffix}", partial(scratch, depth), 2 * total, main)
    if a.scratch_start and (depth != g.start_layers or not a.scratch):
        first = grown[main.suffix].rounds[0].tokens
        yield PlannedArm(f"scratch-{g.start_layers}L{main.suffix}", partial(scratch, g.start_layers), first, main)
    if a.first_n and recipe.inherit.by != "first-n":
        yield PlannedArm(f"first-n{main.suffix}", partial(inherit, reference, depth, seed=seed), total, main)
    for init in a.nogrow:
        build = partial(inherit, reference, depth, init=cast(Init, init), seed=seed)  # checked by the recipe
        yield PlannedArm(f"inheritune-nogrow-{init}{main.suffix}", build, total, main)
    if recipe.budget.params is not None:
        for shape in recipe.budget.by:
            yield PlannedArm(f"budget-{shape}{main.suffix}", partial(cut, shape), total, main)


def budget_model(
    recipe: Recipe,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data_dir: Path,
    out: Path,
    shape: str,
    log: Callable[[str], None],
) -> PreTrainedModel:
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


def train_arm(
    arm: PlannedArm,
    data_dir: Path,
    out: Path,
    tokenizer: PreTrainedTokenizerBase,
    teacher: Teacher | None,
    log: Callable[[str], None],
) -> ArmResult:
    """One planned arm, trained (or resumed) in ``out/arms/NAME``."""
    run_dir = out / "arms" / arm.name
    model = arm.build()
    log(f"arm {arm.name}: {num_layers(model.config)} layers, {arm.tokens} tokens -> {run_dir}")
    config = dataclasses.replace(arm.loss.config, tokens=arm.tokens)
    inherited = bool(getattr(model.config, PROVENANCE, None))
    if not inherited:  # scratch: no inherited weights to leave frozen (blocks, or under LoRA adapters)
        config = config.in_full()
    distilling = config.distill_from is not None and teacher is not None and config.distill_from == teacher.name
    result = train_resumable(
        model,
        data_dir,
        run_dir=run_dir,
        config=config,
        tokenizer=tokenizer,
        teacher=teacher.model if distilling and teacher is not None else None,
    )
    log(f"arm {arm.name}: val loss {result.final_val_loss:.4f} after {result.tokens} tokens")
    return arm_result([result], model, teacher if distilling else None, blocks=origins(model) if inherited else None)


def train_arms(
    recipe: Recipe,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data_dir: Path,
    out: Path,
    grown: dict[str, GrowResult],
    all_losses: list[Loss],
    teacher: Teacher | None,
    log: Callable[[str], None],
) -> dict[str, ArmResult]:
    """Every comparison arm of ``plan``, in order."""

    def cut(shape: str) -> PreTrainedModel:
        return budget_model(recipe, reference, tokenizer, data_dir, out, shape, log=log)

    return {
        arm.name: train_arm(arm, data_dir, out, tokenizer, teacher, log)
        for arm in plan(recipe, reference, grown, all_losses, cut)
    }
