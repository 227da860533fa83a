"""inheritune: derive small, strong language models from larger pretrained ones.

The Python API mirrors the CLI: each function is one step of the workflow. Names are imported
on first use (``inheritune.train`` loads torch and transformers; ``inheritune.packaged``, which
installs the packaged data before they exist, does not).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the module that defines it
_EXPORTS = {
    "AnalyzeResult": "inheritune.analysis.analyze_job",
    "analyze": "inheritune.analysis.analyze_job",
    "ffn_importance": "inheritune.analysis.unit_importance",
    "head_importance": "inheritune.analysis.unit_importance",
    "induction_scores": "inheritune.analysis.induction_heads",
    "ImportanceResult": "inheritune.analysis.importance_job",
    "importance": "inheritune.analysis.importance_job",
    "InductionResult": "inheritune.analysis.induction_job",
    "induction": "inheritune.analysis.induction_job",
    "LayerPruneResult": "inheritune.pruning.prune_results",
    "PruneResult": "inheritune.pruning.prune_results",
    "WidthPruneResult": "inheritune.pruning.prune_results",
    "prune": "inheritune.pruning.prune_job",
    "StudyResult": "inheritune.commands.study",
    "study": "inheritune.commands.study",
    "PrepareResult": "inheritune.data.prepare_job",
    "prepare_data": "inheritune.data.prepare_job",
    "InherituneError": "inheritune.errors",
    "EvalResult": "inheritune.evaluation.eval_job",
    "evaluate": "inheritune.evaluation.eval_job",
    "ExportResult": "inheritune.commands.export",
    "export": "inheritune.commands.export",
    "GrowConfig": "inheritune.growth.grow_config",
    "GrowResult": "inheritune.growth.rounds",
    "grow": "inheritune.commands.grow",
    "grow_until_matched": "inheritune.growth.rounds",
    "load": "inheritune.models.loading",
    "load_model": "inheritune.models.loading",
    "load_tokenizer": "inheritune.models.loading",
    "save_model": "inheritune.models.loading",
    "DeriveResult": "inheritune.commands.derive",
    "derive": "inheritune.commands.derive",
    "Selection": "inheritune.analysis.selection",
    "select": "inheritune.analysis.selection",
    "deepen": "inheritune.models.surgery",
    "inherit": "inheritune.models.surgery",
    "stack_blocks": "inheritune.models.surgery",
    "RunResult": "inheritune.commands.run",
    "run": "inheritune.commands.run",
    "Recipe": "inheritune.recipe",
    "load_recipe": "inheritune.recipe",
    "TrainResult": "inheritune.training.train_result",
    "train": "inheritune.commands.train",
    "TrainConfig": "inheritune.training",
}
__all__ = [  # = the keys of _EXPORTS (a test checks)
    "AnalyzeResult",
    "DeriveResult",
    "EvalResult",
    "ExportResult",
    "GrowConfig",
    "GrowResult",
    "ImportanceResult",
    "InductionResult",
    "InherituneError",
    "LayerPruneResult",
    "PrepareResult",
    "PruneResult",
    "Recipe",
    "RunResult",
    "Selection",
    "StudyResult",
    "TrainConfig",
    "TrainResult",
    "WidthPruneResult",
    "analyze",
    "deepen",
    "derive",
    "evaluate",
    "export",
    "ffn_importance",
    "grow",
    "grow_until_matched",
    "head_importance",
    "importance",
    "induction",
    "induction_scores",
    "inherit",
    "load",
    "load_model",
    "load_recipe",
    "load_tokenizer",
    "prepare_data",
    "prune",
    "run",
    "save_model",
    "select",
    "stack_blocks",
    "study",
    "train",
]
__version__ = "0.1.0"

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on first use
    from inheritune.analysis.analyze_job import AnalyzeResult, analyze
    from inheritune.analysis.importance_job import ImportanceResult, importance
    from inheritune.analysis.induction_heads import induction_scores
    from inheritune.analysis.induction_job import InductionResult, induction
    from inheritune.analysis.selection import Selection, select
    from inheritune.analysis.unit_importance import ffn_importance, head_importance
    from inheritune.commands.derive import DeriveResult, derive
    from inheritune.commands.export import ExportResult, export
    from inheritune.commands.grow import grow
    from inheritune.commands.run import RunResult, run
    from inheritune.commands.study import StudyResult, study
    from inheritune.commands.train import train
    from inheritune.data.prepare_job import PrepareResult, prepare_data
    from inheritune.errors import InherituneError
    from inheritune.evaluation.eval_job import EvalResult, evaluate
    from inheritune.growth.grow_config import GrowConfig
    from inheritune.growth.rounds import GrowResult, grow_until_matched
    from inheritune.models.loading import load, load_model, load_tokenizer, save_model
    from inheritune.models.surgery import deepen, inherit, stack_blocks
    from inheritune.pruning.prune_job import prune
    from inheritune.pruning.prune_results import LayerPruneResult, PruneResult, WidthPruneResult
    from inheritune.recipe import Recipe, load_recipe
    from inheritune.training import TrainConfig
    from inheritune.training.train_result import TrainResult


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'inheritune' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
