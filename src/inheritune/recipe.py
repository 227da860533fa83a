"""A recipe: everything `inheritune run` does, as one YAML file checked before any work starts.

The dataclasses below mirror the arguments of the functions the run calls (prepare_data,
train, grow_until_matched, analyze, evaluate), so a recipe key means what the matching
function argument means (``distill`` maps to train's ``distill_*`` options). Loading is strict: an unknown key, a wrong type or a missing
reference is a one-line error naming the key, raised before data or models are touched.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from inheritune.errors import InherituneError
from inheritune.options import build

GROW_MODES = ("reference", "duplicate")
NOGROW_INITS = ("all", "attention", "mlp")


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
class GrowConfig:
    """The arguments of :func:`inheritune.growth.grow.grow_until_matched`."""

    start_layers: int = 15
    step_layers: int = 3
    max_layers: int | None = None  # None = the reference's depth
    tokens_per_round: int = 100_000
    margin: float = 0.0
    mode: str = "reference"
    keep_last: int = 0  # also inherit the reference's last k blocks (first n-k + last k); growth inserts before them


@dataclass
class DistillConfig:
    """Knowledge distillation from a teacher (TrainConfig's distill_* fields) for the main arms."""

    enabled: bool = False
    teacher: str = "reference"  # "reference" = the recipe's reference (already in memory), or any model
    alpha: float = 1.0  # loss = alpha * T^2 * KL(teacher || student) + (1 - alpha) * CE
    temperature: float = 1.0


@dataclass
class ArmsConfig:
    """Which comparison arms run besides the main inheritune arm; all train on the same tokens and
    are scored on the same val set. Arms trained with distillation carry a ``-kd`` suffix."""

    scratch: bool = True  # random init at the inheritune arm's final depth, its total tokens, the same loss
    other_loss: bool = False  # inheritune and scratch again with the other loss (CE <-> KD), at most the same depth
    scratch_full: bool = False  # random init at the reference's depth, the inheritune arm's tokens and loss
    scratch_2x: bool = False  # the same, twice the tokens (the arm that beat Inheritune in the authors' logs)
    scratch_start: bool = False  # random init at start_layers, one round of tokens: same depth as round 1
    reference_trained: bool = False  # the reference itself trained on the inheritune arm's total tokens
    nogrow: list[str] = field(default_factory=list)  # inits (all/attention/mlp) of fixed-depth derived arms


@dataclass
class AnalysisConfig:
    """The arguments of :func:`inheritune.analysis.analyze.analyze`, run on the reference."""

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
class Recipe:
    reference: str
    data: DataConfig = field(default_factory=DataConfig)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields, shared by every arm
    grow: GrowConfig = field(default_factory=GrowConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    arms: ArmsConfig = field(default_factory=ArmsConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _train_section(values: dict) -> dict:
    """Check the ``train`` mapping against TrainConfig's own fields and types."""
    from inheritune.training.config import TrainConfig, make_config

    config = build(TrainConfig, values, "train.")
    for key in ("steps", "tokens"):
        if key in values:
            raise InherituneError(f"recipe key 'train.{key}' is set per arm (from grow.tokens_per_round); remove it")
    for key in ("distill_from", "distill_alpha", "distill_temperature"):
        if key in values:
            raise InherituneError(f"recipe key 'train.{key}' is set by the 'distill' section "
                                  f"(distill: {{enabled, teacher, alpha, temperature}}); remove it")
    make_config(config, tokens=1)  # TrainConfig's own value rules (tokens are set per arm)
    return {k: getattr(config, k) for k in values}


def _check(recipe: Recipe) -> Recipe:
    """Value rules the types cannot express."""
    g = recipe.grow
    if g.start_layers < 1:
        raise InherituneError(f"recipe key 'grow.start_layers' must be at least 1, not {g.start_layers}")
    if g.step_layers < 1:
        raise InherituneError(f"recipe key 'grow.step_layers' must be at least 1, not {g.step_layers}")
    if g.max_layers is not None and g.max_layers < g.start_layers:
        raise InherituneError(f"recipe key 'grow.max_layers' ({g.max_layers}) is below grow.start_layers ({g.start_layers})")
    if g.tokens_per_round < 1:
        raise InherituneError(f"recipe key 'grow.tokens_per_round' must be positive, not {g.tokens_per_round}")
    if not 0 <= g.keep_last < g.start_layers:
        raise InherituneError(f"recipe key 'grow.keep_last' must be in 0..{g.start_layers - 1} (below grow.start_layers), "
                              f"not {g.keep_last}")
    d = recipe.distill
    if not 0 <= d.alpha <= 1:
        raise InherituneError(f"recipe key 'distill.alpha' must be in [0, 1], not {d.alpha}")
    if not d.temperature > 0:
        raise InherituneError(f"recipe key 'distill.temperature' must be positive, not {d.temperature}")
    if not d.teacher.strip():
        raise InherituneError("recipe key 'distill.teacher' is empty (use 'reference' or a model)")
    if g.mode not in GROW_MODES:
        raise InherituneError(f"recipe key 'grow.mode' must be one of {', '.join(GROW_MODES)}, not '{g.mode}'")
    for i, init in enumerate(recipe.arms.nogrow):
        if init not in NOGROW_INITS:
            raise InherituneError(f"recipe key 'arms.nogrow[{i}]' must be one of {', '.join(NOGROW_INITS)}, not '{init}'")
    if not recipe.reference.strip():
        raise InherituneError("recipe key 'reference' is empty")
    if recipe.data.dir is None and not recipe.data.sources:
        raise InherituneError("recipe key 'data' needs 'dir' (a prepared folder) or 'sources'")
    return recipe


def recipe_from_dict(values: Any, where: str = "recipe") -> Recipe:
    if not isinstance(values, dict):
        raise InherituneError(f"{where} must be a YAML mapping of keys, not {type(values).__name__}")
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
