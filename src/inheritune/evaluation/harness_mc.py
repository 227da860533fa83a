"""Any multiple-choice lm-eval task as questions of the offline suite, for importance and prune.

A task the user's lm-eval knows (``arc_easy``, ``piqa``, ``sciq``, ``hellaswag``, their own ...) is
read through lm-eval itself: each document's ``doc_to_text``, ``doc_to_choice`` and
``doc_to_target`` become one lettered question, so the prompts have the suite's format (header,
lettered options, `` B`` answers) and accuracy is read off one next-token distribution, like the
offline tasks. The task's own documents (training, validation and test, whichever it has) are
pooled and split by the suite's rule into dev (shots), rank and score.

lm-eval fetches the task's dataset from the Hugging Face hub on first use (its own cache after
that); a task built on local files works offline.
"""

from __future__ import annotations

import re
from pathlib import Path

from inheritune.error_lines import held_back
from inheritune.errors import InherituneError
from inheritune.evaluation.prompt_format import LETTERS, MAX_OPTION_CHARS
from inheritune.evaluation.task_index import check_include_yamls, harness_manager

ANSWER_CUE = re.compile(r"\s*(Answer|A)\s*:\s*$")  # the suite's layout adds its own "Answer:" after the options


def known(task: str, include_path: str | Path | None = None) -> bool:
    """Whether lm-eval's task index (with the user's ``include_path``) names ``task``; when not, a
    task YAML of the user's that does not parse is named instead (``task_index.check_include_yamls``)."""
    if task in harness_manager(include_path).all_tasks:
        return True
    check_include_yamls(include_path)
    return False


def load_task(task: str, include_path: str | Path | None = None):
    """lm-eval's task object; one line when it is a group or not multiple-choice, with nothing
    before it: what lm-eval and datasets print while loading is shown only once the task passes."""
    with held_back():
        return _load_task(task, include_path)


def _load_task(task: str, include_path: str | Path | None):
    from lm_eval.tasks import get_task_dict  # lm_eval: heavy, imported only when a harness task is read

    try:
        loaded = get_task_dict([task], harness_manager(include_path)).get(task)
    except Exception as error:  # lm-eval and datasets raise anything from a missing file to no network
        detail = (str(error).strip().splitlines() or [""])[0][:300]
        raise InherituneError(
            f"lm-eval could not load task {task}: {type(error).__name__}: {detail} (its data "
            "comes from the HF hub; offline, use the offline suite tasks)"
        ) from None
    if loaded is None or isinstance(loaded, dict) or not hasattr(loaded, "doc_to_choice"):
        raise InherituneError(f"lm-eval task {task} is a group of tasks: name one of its tasks")
    output_type = getattr(loaded, "OUTPUT_TYPE", None) or loaded.config.output_type
    if output_type != "multiple_choice":
        raise InherituneError(
            f"lm-eval task {task} is {output_type}, not multiple_choice: importance and prune need answer options"
        )
    return loaded


def documents(loaded) -> list[dict]:
    """Every document the task has: training, validation and test."""
    docs = []
    for kind in ("training", "validation", "test"):
        if getattr(loaded, f"has_{kind}_docs")():
            docs += list(getattr(loaded, f"{kind}_docs")())
    return docs


def as_question(loaded, doc: dict) -> tuple[str, tuple[str, ...], int] | None:
    """``(text, options, answer index)`` of one document, or None when it has no single lettered
    answer (multiple inputs, several targets, too many or empty options)."""
    text, options, target = loaded.doc_to_text(doc), loaded.doc_to_choice(doc), loaded.doc_to_target(doc)
    if not isinstance(text, str) or not isinstance(options, list):
        return None
    options = tuple(str(o).strip() for o in options)
    if isinstance(target, str):
        target = options.index(target.strip()) if target.strip() in options else None
    fits = 2 <= len(options) <= len(LETTERS) and all(0 < len(o) <= MAX_OPTION_CHARS for o in options)
    if not isinstance(target, int) or not 0 <= target < len(options) or not fits or len(set(options)) < len(options):
        return None
    return ANSWER_CUE.sub("", text).strip(), options, target
