"""A recipe: everything `inheritune run` does, as one YAML file checked before any work starts.

The dataclasses below mirror the arguments of the functions the run calls (prepare_data,
train, grow_until_matched with its block selector, analyze, evaluate), so a recipe key means what
the matching function argument means (``distill`` maps to train's ``distill_*`` options). Loading
is strict: an unknown key, a wrong type or a missing reference is a one-line error naming the key,
raised before data or models are touched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from inheritune.analysis.selection import BlockSelector
from inheritune.analysis.width_ranking import WidthRanking
from inheritune.errors import InherituneError
from inheritune.growth.grow_config import GrowConfig
from inheritune.models.budget import SHAPES, BudgetShape, check_share
from inheritune.models.gguf_export import TYPES as GGUF_TYPES
from inheritune.options import build
from inheritune.training.train_config import TrainConfig, check_distillation, make_config

NOGROW_INITS = ("all", "attention", "mlp")
CORRECTED = "corrected"  # distill.teacher: the reference trained on the run's train split first
FIRST_N = BlockSelector("first-n", "inherit.by")  # the defaults, as values
ACTIVATION = WidthRanking("activation", "budget.width_by")
MOVED = {  # keys of earlier recipes: where they went
    ("grow", "keep_last"): "inherit.by: first-last:K (e.g. first-last:3 for the first n-3 blocks + the last 3)",
}


@dataclass
class DataConfig:
    """Either an existing prepared folder (``dir``) or sources for ``prepare_data``."""

    dir: str | None = None
    sources: list[str] = field(default_factory=lambda: ["default"])
    max_tokens: int | None = None
    val_tokens: int | None = None
    seed: int = 0
    text_field: str = "text"


@dataclass
class InheritConfig:
    """Which reference blocks the inherited arms hold: a block selector (analysis/selection.py),
    scored on the train split. ``first-n`` is the paper's choice."""

    by: BlockSelector = FIRST_N


@dataclass
class DistillConfig:
    """Knowledge distillation from a teacher (TrainConfig's distill_* fields) for the main arms."""

    enabled: bool = False
    teacher: str = "reference"  # "reference" = the recipe's reference (already in memory), "corrected", or any model
    alpha: float = 1.0  # loss = alpha * T^2 * KL(teacher || student) + (1 - alpha) * CE
    temperature: float = 1.0
    correction_tokens: int | None = None  # teacher corrected: its training tokens (default: the arms' tokens)
    correction_lr: float | None = None  # ... and its lr (default: train.lr)


@dataclass
class ArmsConfig:
    """Which comparison arms run besides the main inheritune arm; all train on the same tokens and
    are scored on the same val set. Arms trained with distillation carry a ``-kd`` suffix."""

    scratch: bool = True  # random init at the inheritune arm's final depth, its total tokens, the same loss
    first_n: bool = True  # the paper's first n blocks at that depth, its total tokens, the same loss (when inherit.by
    #                       is another selector)
    other_loss: bool = False  # inheritune and scratch again with the other loss (CE <-> KD), at most the same depth
    scratch_full: bool = False  # random init at the reference's depth, the inheritune arm's tokens and loss
    scratch_2x: bool = False  # the same, twice the tokens (the arm that beat Inheritune in the authors' logs)
    scratch_start: bool = False  # random init at start_layers, one round of tokens: same depth as round 1
    reference_trained: bool = True  # the reference trained on the inheritune arm's tokens: the yardstick
    nogrow: list[str] = field(default_factory=list)  # inits (all/attention/mlp) of fixed-depth derived arms


@dataclass
class BudgetConfig:
    """Arms cut from the reference to one parameter budget (``prune --params``), healed with the main
    arm's loss on the main arm's tokens: depth (blocks chosen by ``inherit.by``), width (FFN neurons
    ranked by ``width_by``) and both, side by side at equal parameters and equal tokens."""

    params: float | None = None  # share (0-1) of the reference's non-embedding parameters; None: no budget arms
    by: list[BudgetShape] = field(default_factory=lambda: [BudgetShape(s, "budget.by") for s in SHAPES])
    width_by: WidthRanking = ACTIVATION  # activation | gradient


@dataclass
class AnalysisConfig:
    """The arguments of :func:`inheritune.analysis.lazy_layers.analyze`, run on the reference."""

    enabled: bool = False
    sequences: int = 100
    seq_len: int = 100
    tau: float = 0.9
    seed: int = 0


@dataclass
class EvalConfig:
    """Optional lm-eval tasks run on every arm's final model."""

    tasks: list[str] = field(default_factory=list)
    num_fewshot: int | None = None
    limit: int | None = None
    batch_size: int = 8


@dataclass
class ExportConfig:
    """The main arm's final model also as one GGUF file (RUN/model.gguf), for llama.cpp."""

    gguf: str | None = None  # None: no file; else the tensor type: f32, f16, bf16 or q8_0


@dataclass
class Recipe:
    reference: str
    data: DataConfig = field(default_factory=DataConfig)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields, shared by every arm
    inherit: InheritConfig = field(default_factory=InheritConfig)
    grow: GrowConfig = field(default_factory=GrowConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    arms: ArmsConfig = field(default_factory=ArmsConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _train_section(values: dict) -> dict:
    """Check the ``train`` mapping against TrainConfig's own fields and types."""
    config = build(TrainConfig, values, "train.")
    for key in ("steps", "tokens"):
        if key in values:
            raise InherituneError(f"recipe key 'train.{key}' is set per arm (from grow.tokens_per_round); remove it")
    for key in ("distill_from", "distill_alpha", "distill_temperature"):
        if key in values:
            raise InherituneError(
                f"recipe key 'train.{key}' is set by the 'distill' section "
                f"(distill: {{enabled, teacher, alpha, temperature}}); remove it"
            )
    make_config(config, tokens=1)  # TrainConfig's own value rules (tokens are set per arm)
    return {k: getattr(config, k) for k in values}


def _check(recipe: Recipe) -> Recipe:
    """Value rules the types cannot express."""
    recipe.grow.check(name=lambda key: f"recipe key 'grow.{key}'")
    d = recipe.distill
    check_distillation(d.alpha, d.temperature, key=lambda field: f"recipe key 'distill.{field.split('_', 1)[1]}'")
    if not d.teacher.strip():
        raise InherituneError(f"recipe key 'distill.teacher' is empty (use 'reference', '{CORRECTED}' or a model)")
    for key in ("correction_tokens", "correction_lr"):
        value = getattr(d, key)
        if value is not None and d.teacher != CORRECTED:
            raise InherituneError(
                f"recipe key 'distill.{key}' sets the corrected teacher: it needs distill.teacher: {CORRECTED}"
            )
        if value is not None and value <= 0:
            raise InherituneError(f"recipe key 'distill.{key}' must be positive, not {value}")
    for i, init in enumerate(recipe.arms.nogrow):
        if init not in NOGROW_INITS:
            raise InherituneError(
                f"recipe key 'arms.nogrow[{i}]' must be one of {', '.join(NOGROW_INITS)}, not '{init}'"
            )
    _check_budget(recipe.budget)
    if recipe.export.gguf is not None and recipe.export.gguf not in GGUF_TYPES:
        raise InherituneError(
            f"recipe key 'export.gguf' must be one of {', '.join(GGUF_TYPES)}, not '{recipe.export.gguf}'"
        )
    if not recipe.reference.strip():
        raise InherituneError("recipe key 'reference' is empty")
    if recipe.data.dir is None and not recipe.data.sources:
        raise InherituneError("recipe key 'data' needs 'dir' (a prepared folder) or 'sources'")
    return recipe


def _check_budget(b: BudgetConfig) -> None:
    if b.params is None:
        return
    try:
        check_share(b.params)
    except InherituneError:
        raise InherituneError(f"recipe key 'budget.params' must be a share between 0 and 1, not {b.params:g}") from None
    if not b.by or len(set(b.by)) != len(b.by):
        raise InherituneError(f"recipe key 'budget.by' must list distinct shapes, not {b.by}")


def recipe_from_dict(values: Any, where: str = "recipe") -> Recipe:
    if not isinstance(values, dict):
        raise InherituneError(f"{where} must be a YAML mapping of keys, not {type(values).__name__}")
    for (section, key), instead in MOVED.items():
        if isinstance(values.get(section), dict) and key in values[section]:
            raise InherituneError(f"recipe key '{section}.{key}' is gone: use {instead}")
    recipe = build(Recipe, values)
    recipe.train = _train_section(recipe.train)
    return _check(recipe)


def default_recipe_text() -> str:
    """The embedded default recipe (package data), used when no recipe file is given."""
    return resources.files("inheritune").joinpath("recipes/default.yaml").read_text(encoding="utf-8")


def load_recipe(path: str | Path | None = None) -> Recipe:
    """Read and check a recipe file, or the embedded default when ``path`` is None."""
    if path is None:
        text, where = default_recipe_text(), "the default recipe"
    else:
        path = Path(path)
        if not path.is_file():
            raise InherituneError(f"recipe not found: {path}")
        text, where = path.read_text(encoding="utf-8"), str(path)
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InherituneError(f"{where} is not valid YAML: {str(e).splitlines()[0]}") from None
    return recipe_from_dict(values if values is not None else {}, where)
