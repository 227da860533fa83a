"""inheritune: derive small, strong language models from larger pretrained ones.

The Python API mirrors the CLI: each function is one step of the workflow.
"""
from inheritune.commands.analyze import AnalyzeResult, analyze
from inheritune.analysis.importance import ffn_importance, head_importance
from inheritune.analysis.induction import induction_scores
from inheritune.commands.importance import ImportanceResult, importance
from inheritune.commands.induction import InductionResult, induction
from inheritune.commands.prune import LayerPruneResult, PruneResult, WidthPruneResult, prune
from inheritune.commands.study import StudyResult, study
from inheritune.commands.prepare import PrepareResult, prepare_data
from inheritune.errors import InherituneError
from inheritune.commands.eval import EvalResult, evaluate
from inheritune.commands.grow import GrowResult, grow, grow_until_matched
from inheritune.models.loading import load, load_model, load_tokenizer, save_model
from inheritune.commands.derive import DeriveResult, derive
from inheritune.analysis.selection import Selection, select
from inheritune.models.surgery import deepen, inherit, stack_blocks
from inheritune.commands.run import RunResult, run
from inheritune.recipe import Recipe, load_recipe
from inheritune.commands.train import TrainResult, train
from inheritune.training import TrainConfig

__all__ = ["InherituneError", "analyze", "AnalyzeResult", "ffn_importance", "head_importance", "induction_scores", "importance", "ImportanceResult", "induction", "InductionResult", "prune", "PruneResult", "LayerPruneResult", "WidthPruneResult", "study", "StudyResult", "derive", "DeriveResult", "inherit", "evaluate", "EvalResult", "deepen", "grow", "GrowResult", "grow_until_matched", "load", "load_model", "load_recipe", "load_tokenizer", "prepare_data", "PrepareResult", "Recipe", "run", "RunResult", "save_model", "select", "Selection", "stack_blocks", "train", "TrainConfig", "TrainResult"]
__version__ = "0.1.0"
