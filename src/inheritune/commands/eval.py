"""`inheritune eval`: its options' help; the job itself is ``inheritune.evaluation.eval_job``.

``eval``: validation loss (the one yardstick) and lm-eval tasks of a model, as one JSON.
"""

from inheritune.evaluation.eval_job import EvalResult, evaluate
from inheritune.evaluation.tasks import LOCAL_TASKS

HELP = {  # the CLI's help for this command's own parameters (shared ones: inheritune.commands.HELP)
    "out": "also write the JSON to this file (atomically)",
    "tasks": f"comma-separated: {', '.join(LOCAL_TASKS)} (offline) or lm-eval task names such as "
    "arc_easy,piqa,sciq,hellaswag,lambada_openai (need the hub)",
    "batch_size": "sequences per forward pass",
    "num_fewshot": "few-shot examples for every task (default: each task's own; the offline ones 5, at most 5)",
    "limit": "evaluate only the first N examples of each task (default: all)",
}

__all__ = ["HELP", "EvalResult", "evaluate"]
