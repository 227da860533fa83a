"""The lm-eval few-shot sampler of the offline suite: the same shots ``suite.prompts`` shows.

lm-eval's own samplers draw from a whole split and cannot see the query's subject; this one asks
the suite for the query's shots (dev questions of its subject, drawn by seed 0 and the query's id),
so ``eval`` and ``importance`` score identical prompts whatever lm-eval's few-shot seed.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api import samplers

from inheritune.evaluation import suite
from inheritune.evaluation.prompt_format import doc, question

NAME = "inheritune-suite"


class SuiteSampler(samplers.ContextSampler):
    """Shots for ``eval_doc`` from the suite's dev split; the pool lm-eval passes in is not used."""

    def sample(self, n: int, eval_doc: dict[str, Any] | None = None, df=None, **kwargs) -> list[dict[str, Any]]:
        if eval_doc is None:
            raise RuntimeError(f"the {NAME} sampler needs the query: set fewshot_split to the test split")
        task = eval_doc["task"]
        return [doc(task, q) for q in suite.shot_questions(task, question(eval_doc), n)]


def register() -> None:
    """Make ``sampler: inheritune-suite`` in a task YAML mean ``SuiteSampler``."""
    samplers.SAMPLER_REGISTRY.setdefault(NAME, SuiteSampler)
