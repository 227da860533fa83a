"""What a run's arms are judged by, and the teacher they distil from.

The reference as it is never saw the run's data; the strongest thing a user could do instead of
deriving a smaller model is to train the reference itself on the same tokens. With
``arms.reference_trained`` (the default) that arm runs first, and its final val loss is the
yardstick: the grow loop's "matched", the verdict and time-to-target judge against it.

Teacher correction (``distill.teacher: corrected``, Minitron's order): the -kd arms distil from
the reference after it has been trained on the run's train split (``distill.correction_tokens``
at ``distill.correction_lr``). When those are the reference-trained arm's own settings, that arm's
model is the corrected teacher (trained once); otherwise the correction is its own run in RUN/teacher.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from inheritune.arms import Teacher, arm_result
from inheritune.models.budget import non_embedding
from inheritune.models.families import num_layers
from inheritune.models.loading import load_model
from inheritune.recipe import CORRECTED, Recipe
from inheritune.reporting.arm_numbers import ArmResult, Yardstick
from inheritune.specs import ALL_BLOCKS
from inheritune.training.flops import flops_per_token
from inheritune.training.train_config import TrainConfig
from inheritune.training.trainer import train_resumable

REFERENCE_TRAINED = "reference-trained"  # the arm's name (RUN/arms/reference-trained)


@dataclass
class ReferenceRuns:
    """The reference trained on the run's train split: as the yardstick arm, as the corrected teacher, or both."""

    arm: ArmResult | None  # the reference-trained arm (arms.reference_trained)
    teacher: ArmResult | None  # the corrected teacher's run (distill.teacher: corrected)


def arm_tokens(recipe: Recipe, reference: PreTrainedModel) -> int:
    """The tokens of the main arm at most: every round the grow loop may take."""
    return recipe.grow.tokens_per_round * recipe.grow.max_rounds(num_layers(reference.config))


def reference_arm(reference: PreTrainedModel, result: dict) -> ArmResult:
    """The reference as it is: its val loss (the grow run's cached measurement), no training."""
    return ArmResult(
        layers=result["layers"],
        params=result["params"],
        non_embedding=non_embedding(reference.config),
        tokens=0,
        final_val_loss=result["loss"],
        ppl=result["ppl"],
        wall_time=result["wall_time"],
    )


def train_reference(
    recipe: Recipe,
    reference: PreTrainedModel,
    config: TrainConfig,
    tokenizer: PreTrainedTokenizerBase,
    data_dir: Path,
    out: Path,
    log: Callable[[str], None],
) -> ReferenceRuns:
    """The reference trained with cross-entropy on the run's train split: the yardstick arm on the
    arms' tokens, and the corrected teacher on ``distill.correction_tokens`` (one run when the same)."""
    d, tokens = recipe.distill, arm_tokens(recipe, reference)
    ce = dataclasses.replace(config, distill_from=None, train_blocks=ALL_BLOCKS, skip_tokens=0)
    arm_config = dataclasses.replace(ce, tokens=tokens)
    arm = None
    if recipe.arms.reference_trained:
        arm = _trained(reference, arm_config, tokenizer, data_dir, out / "arms" / REFERENCE_TRAINED, log)
    teacher = None
    if distils(recipe) and d.teacher == CORRECTED:
        own = dataclasses.replace(ce, tokens=d.correction_tokens or tokens, lr=d.correction_lr or ce.lr)
        if arm is not None and own == arm_config:
            teacher = arm
        else:
            teacher = _trained(reference, own, tokenizer, data_dir, out / "teacher", log)
    return ReferenceRuns(arm=arm, teacher=teacher)


def distils(recipe: Recipe) -> bool:
    """Whether any arm distils (the main loss, or the other one beside it)."""
    return recipe.distill.enabled or recipe.arms.other_loss


def needs_reference_runs(recipe: Recipe) -> bool:
    return recipe.arms.reference_trained or (distils(recipe) and recipe.distill.teacher == CORRECTED)


def _trained(
    reference: PreTrainedModel,
    config: TrainConfig,
    tokenizer: PreTrainedTokenizerBase,
    data_dir: Path,
    run_dir: Path,
    log: Callable[[str], None],
) -> ArmResult:
    log(f"arm {run_dir.name}: the reference trained on {config.tokens:,} tokens (lr {config.lr:g}) -> {run_dir}")
    model = copy.deepcopy(reference)  # training must not change the reference the other arms are cut from
    result = train_resumable(model, data_dir, run_dir=run_dir, config=config, tokenizer=tokenizer)
    log(f"arm {run_dir.name}: val loss {result.final_val_loss:.4f} after {result.tokens} tokens")
    return arm_result([result], model, teacher=None, blocks=list(range(num_layers(model.config))))  # every block


def yardstick(reference_loss: ArmResult, runs: ReferenceRuns | None) -> Yardstick:
    """The reference trained on the same tokens when that arm ran, else the reference as it is."""
    if runs is not None and runs.arm is not None:
        return Yardstick(f"the reference trained on the same {runs.arm.tokens:,} tokens", runs.arm.final_val_loss)
    return Yardstick(f"the reference ({reference_loss.layers} layers)", reference_loss.final_val_loss)


def teacher(recipe: Recipe, reference: PreTrainedModel, config: TrainConfig, runs: ReferenceRuns | None) -> Teacher:
    """What the -kd arms distil from: the reference in memory, the corrected one, or another model."""
    forward = flops_per_token(reference, config.seq_len) / 3  # 2N of 6N: the forward pass alone
    d = recipe.distill
    if d.teacher == CORRECTED:
        assert runs is not None and runs.teacher is not None and runs.teacher.model_dir is not None
        return Teacher(
            runs.teacher.model_dir,
            load_model(runs.teacher.model_dir),
            forward,
            correction_flops=runs.teacher.train_flops,
        )
    if d.teacher in ("reference", recipe.reference):
        return Teacher(recipe.reference, reference, forward)
    other = load_model(d.teacher, trust_remote_code=config.trust_remote_code)
    return Teacher(d.teacher, other, flops_per_token(other, config.seq_len) / 3)
