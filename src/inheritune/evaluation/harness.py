"""Validation loss plus lm-evaluation-harness tasks (what ``inheritune.evaluate`` runs).

Validation loss is the same ``val_loss`` that train and grow report. Tasks run through
lm-eval (pinned in pyproject) on the already-loaded model via its HFLM wrapper: harness task
names (arc_easy, piqa, sciq, hellaswag, lambada_openai, mmlu, ...) use the harness's own
definitions and need the hub; the offline tasks (the multiple-choice suite of
``inheritune.evaluation.suite``: ``mmlu-stem``, ..., ``bb-navigate``, ..., ``mmlu-local``; and
``cloze-local``) are lm-eval custom tasks built from local data (see ``inheritune.evaluation.tasks``).
A user's own task folder (``include_path``) is an argument of every lookup (``task_index``).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from inheritune.data.shards import TokenData
from inheritune.errors import InherituneError
from inheritune.evaluation.task_index import check_include_yamls, harness_manager
from inheritune.evaluation.tasks import LOCAL_TASKS, build_local_task
from inheritune.evaluation.val_loss import val_loss

PAPER_TASKS = ("arc_easy", "piqa", "sciq", "hellaswag", "lambada_openai", "mmlu")


def task_managers(
    tasks: Sequence[str],
    data: TokenData | None,
    tokenizer: PreTrainedTokenizerBase,
    include_path: str | Path | None = None,
) -> dict:
    """``{task: TaskManager that defines it}``: local tasks built into the cache, harness names checked
    against lm-eval's tasks and the user's ``include_path``."""
    from lm_eval.tasks import TaskManager  # lm_eval: heavy, imported only when tasks are named

    for name in ("lm_eval", "lm-eval"):  # its notices (e.g. about passing a model object) are not for our users
        logging.getLogger(name).setLevel(logging.ERROR)
    harness = [t for t in tasks if t not in LOCAL_TASKS]
    known = harness_manager(include_path).all_tasks if harness else []
    unknown = [t for t in harness if t not in known]
    if unknown:
        check_include_yamls(include_path)
        close = difflib.get_close_matches(unknown[0], known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InherituneError(
            f"unknown task {', '.join(unknown)}{hint}; available: local tasks {', '.join(LOCAL_TASKS)}, "
            f"the paper's {', '.join(PAPER_TASKS)}, or any of the {len(known)} lm-eval tasks "
            f"(list them with `lm-eval ls tasks`)"
        )
    return {
        task: harness_manager(include_path)
        if task in harness
        else TaskManager(include_path=[str(build_local_task(task, data, tokenizer))], include_defaults=False)
        for task in tasks
    }


def _metrics(task_results: dict) -> dict:
    """lm-eval's ``{"acc,none": x, "acc_stderr,none": s, "alias": ...}`` as ``{"acc": x, "acc_stderr": s}``."""
    out = {}
    for key, value in task_results.items():
        if "," not in key or not isinstance(value, (int, float)):
            continue
        metric, filt = key.split(",", 1)
        out[metric if filt == "none" else f"{metric}/{filt}"] = float(value)
    return out


def run_tasks(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    managers: Mapping[str, object],
    num_fewshot: int | None = None,
    limit: int | None = None,
    batch_size: int = 8,
) -> tuple[dict, dict]:
    """Run each task of ``task_managers(...)`` through lm-eval; returns ``({task: metrics}, {task: seconds})``."""
    # lm_eval: heavy, imported only when tasks run
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    results, seconds = {}, {}
    for task, manager in managers.items():  # one at a time, so each gets its own timing
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(sys.stderr):  # lm-eval prints progress notes; stdout is the JSON
                out = lm_eval.simple_evaluate(
                    model=lm,
                    tasks=[task],
                    num_fewshot=num_fewshot,
                    limit=limit,
                    task_manager=manager,
                    log_samples=False,
                )
        except Exception as e:
            if task in LOCAL_TASKS:
                raise
            detail = (str(e).strip().splitlines() or [""])[0][:300]
            raise InherituneError(
                f"lm-eval task {task} failed: {type(e).__name__}: {detail} (harness tasks download their data "
                f"from the HF hub; offline, use {', '.join(LOCAL_TASKS)})"
            ) from None
        metrics = _metrics(out["results"][task])
        metrics["samples"] = int(out["n-samples"][task]["effective"])
        metrics["num_fewshot"] = int(out["n-shot"][task])
        results[task] = metrics
        seconds[task] = round(time.perf_counter() - start, 2)
    return results, seconds


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: TokenData | None,
    managers: Mapping[str, object],
    num_fewshot: int | None,
    limit: int | None,
    batch_size: int,
) -> tuple[dict | None, dict, dict]:
    """Val loss on ``data``'s val split (the one yardstick, ``evaluation/val_loss.py``) and the tasks
    of ``managers`` (``task_managers``): ``(val, tasks, seconds)``. A model handed in mid-training
    goes back to training mode."""
    was_training = model.training
    model.eval()
    val: dict | None = None
    results: dict = {}
    times: dict = {}
    try:
        if data is not None:
            start = time.perf_counter()
            val = val_loss(model, data, batch_size=batch_size)
            times["val"] = round(time.perf_counter() - start, 2)
        if managers:
            results, task_times = run_tasks(
                model, tokenizer, managers=managers, num_fewshot=num_fewshot, limit=limit, batch_size=batch_size
            )
            times.update(task_times)
    finally:
        model.train(was_training)
    return val, results, times
