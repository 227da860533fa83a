"""`evaluate`: validation loss plus lm-evaluation-harness tasks, in one JSON-ready dict.

Validation loss is the same ``val_loss`` that train and grow report. Tasks run through
lm-eval (pinned in pyproject) on the already-loaded model via its HFLM wrapper: harness task
names (arc_easy, piqa, sciq, hellaswag, lambada_openai, mmlu, ...) use the harness's own
definitions and need the hub; the offline tasks (``mmlu-local``, ``cloze-local``) are lm-eval
custom tasks built from local data (see ``inheritune.evaluation.tasks``).
"""
from __future__ import annotations

import contextlib
import difflib
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from inheritune.data.shards import TokenData, open_data
from inheritune.errors import InherituneError
from inheritune.evaluation.loss import val_loss
from inheritune.evaluation.tasks import LOCAL_TASKS, build_local_task
from inheritune.models.loading import load_model, load_tokenizer, tokenizer_fingerprint

PAPER_TASKS = ("arc_easy", "piqa", "sciq", "hellaswag", "lambada_openai", "mmlu")


def _task_manager(tasks: Sequence[str], data: TokenData | None, tokenizer: PreTrainedTokenizerBase):
    """A TaskManager that knows the requested local tasks (and the harness's, if any is asked for)."""
    from lm_eval.tasks import TaskManager

    for name in ("lm_eval", "lm-eval"):  # its notices (e.g. about passing a model object) are not for our users
        logging.getLogger(name).setLevel(logging.ERROR)
    local = [t for t in tasks if t in LOCAL_TASKS]
    harness = [t for t in tasks if t not in LOCAL_TASKS]
    paths = [str(build_local_task(t, data, tokenizer)) for t in local]
    manager = TaskManager(include_path=paths or None, include_defaults=bool(harness))
    unknown = [t for t in harness if t not in manager.all_tasks]
    if unknown:
        close = difflib.get_close_matches(unknown[0], manager.all_tasks, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InherituneError(
            f"unknown task {', '.join(unknown)}{hint}; available: local tasks {', '.join(LOCAL_TASKS)}, "
            f"the paper's {', '.join(PAPER_TASKS)}, or any of the {len(manager.all_tasks)} lm-eval tasks "
            f"(list them with `lm-eval ls tasks`)"
        )
    return manager


def _metrics(task_results: dict) -> dict:
    """lm-eval's ``{"acc,none": x, "acc_stderr,none": s, "alias": ...}`` as ``{"acc": x, "acc_stderr": s}``."""
    out = {}
    for key, value in task_results.items():
        if "," not in key or not isinstance(value, (int, float)):
            continue
        metric, filt = key.split(",", 1)
        out[metric if filt == "none" else f"{metric}/{filt}"] = float(value)
    return out


def run_tasks(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, tasks: Sequence[str], manager,
              num_fewshot: int | None = None, limit: int | None = None, batch_size: int = 8) -> tuple[dict, dict]:
    """Run each task through lm-eval; returns ``({task: metrics}, {task: seconds})``."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    results, seconds = {}, {}
    for task in tasks:  # one at a time, so each gets its own timing
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # lm-eval prints progress notes; stdout is the JSON
            out = lm_eval.simple_evaluate(model=lm, tasks=[task], num_fewshot=num_fewshot, limit=limit,
                                          task_manager=manager, log_samples=False)
        metrics = _metrics(out["results"][task])
        metrics["samples"] = int(out["n-samples"][task]["effective"])
        metrics["num_fewshot"] = int(out["n-shot"][task])
        results[task] = metrics
        seconds[task] = round(time.perf_counter() - start, 2)
    return results, seconds


def evaluate(model: str | Path | PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None,
             data: str | Path | None = None, tasks: Sequence[str] = (), num_fewshot: int | None = None,
             limit: int | None = None, batch_size: int = 8, device: str | None = None,
             seq_len: int = 512) -> dict:
    """Validation loss on ``data``'s val split (if given) and the named tasks, as one dict.

    ``model`` is a loaded model (then pass its ``tokenizer``) or anything ``load_model`` accepts.
    ``device`` moves the model there (a passed-in model is moved in place); None leaves it.
    Returns ``{"val": {"loss","ppl","tokens"} or None, "tasks": {task: {metric: value}}, "time_s": {...}}``.
    Everything a user can get wrong is checked before the (slow) model load.
    """
    tasks = list(dict.fromkeys(tasks))
    if data is None and not tasks:
        raise InherituneError("nothing to evaluate: give a data folder (--data) and/or --tasks")
    if limit is not None and limit < 1:
        raise InherituneError(f"--limit must be a positive number of examples, got {limit}")
    if num_fewshot is not None and num_fewshot < 0:
        raise InherituneError(f"--num-fewshot must be >= 0, got {num_fewshot}")
    if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
        raise InherituneError(f"--device {device} asked for, but no CUDA device is available")
    data = open_data(data) if data is not None else None
    reference = model if isinstance(model, (str, Path)) else None
    if tokenizer is None:
        if reference is None:
            raise InherituneError("evaluate() needs the tokenizer that goes with a model object")
        tokenizer = load_tokenizer(reference)
    if data is not None:
        data.check_tokenizer(tokenizer_fingerprint(tokenizer))
    manager = _task_manager(tasks, data, tokenizer) if tasks else None
    times: dict = {}
    if reference is not None:
        start = time.perf_counter()
        model = load_model(reference)
        times["load"] = round(time.perf_counter() - start, 2)
    if device is not None:
        model.to(device)
    model.eval()
    result: dict = {"val": None, "tasks": {}, "time_s": times}
    if data is not None:
        start = time.perf_counter()
        result["val"] = val_loss(model, data, seq_len=seq_len, batch_size=batch_size)
        times["val"] = round(time.perf_counter() - start, 2)
    if tasks:
        result["tasks"], task_times = run_tasks(model, tokenizer, tasks, manager, num_fewshot, limit, batch_size)
        times.update(task_times)
    return result
