"""The offline tasks, registered with lm-eval as ordinary custom tasks (YAML + local data files).

Each task is a YAML template in this folder, settings that complete it, and a builder that makes
its rows: every multiple-choice task of the offline suite (``inheritune.evaluation.suite``: MMLU by
subject group, ``mmlu-local`` for all of MMLU, BIG-bench tasks) shares ``suite.yaml`` and the
suite's prompt format; ``cloze-local`` is built from a data folder. Building writes the rows as JSON
lines and the completed YAML (with absolute ``data_files``) into a cache folder named by the
content's hash, so an unchanged task is built once and a changed one never reuses stale files.
``TaskManager(include_path=folder)`` then loads it like any harness task.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import yaml
from transformers import PreTrainedTokenizerBase

from inheritune.atomic import atomic_dir
from inheritune.data.shards import TokenData
from inheritune.errors import InherituneError
from inheritune.evaluation import suite
from inheritune.evaluation.cache import cache_root
from inheritune.evaluation.cloze import cloze_rows
from inheritune.evaluation.prompt_format import FEWSHOT_DELIMITER, HEADER, TARGET_DELIMITER, doc

HERE = Path(__file__).parent
BUILD_VERSION = 3  # part of the cache key: bump when build_local_task writes its files differently


def suite_docs(task: str, data: TokenData | None, tokenizer: PreTrainedTokenizerBase | None) -> dict[str, list[dict]]:
    """test: the suite task's rank + score questions (its dev questions reach lm-eval as shots only)."""
    return {"test": [doc(task, q) for q in suite.questions(task, "test")]}


def cloze_splits(data: TokenData | None, tokenizer: PreTrainedTokenizerBase | None) -> dict[str, list[dict]]:
    if data is None or tokenizer is None:
        raise InherituneError("cloze-local is built from a data folder's validation documents: pass --data DIR")
    return {"test": cloze_rows(data, tokenizer)}


Builder = Callable[[TokenData | None, PreTrainedTokenizerBase | None], dict[str, list[dict]]]
SUITE_FORMAT = {  # the suite's prompt format in lm-eval's terms: header per query subject, shot layout
    "description": HEADER.replace("{subject}", "{{subject}}"),
    "target_delimiter": TARGET_DELIMITER,
    "fewshot_delimiter": FEWSHOT_DELIMITER,
}
LOCAL_TASKS: dict[str, tuple[str, dict, Builder]] = {
    **{task: ("suite.yaml", SUITE_FORMAT, functools.partial(suite_docs, task)) for task in suite.task_names()},
    "cloze-local": ("cloze_local.yaml", {}, cloze_splits),
}


def build_local_task(
    name: str,
    data: TokenData | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    cache: Path | None = None,
) -> Path:
    """Write (or find) the folder holding task ``name``'s YAML and data; returns the folder."""
    from inheritune.evaluation.tasks.sampler import register  # lm_eval (the sampler's base): only when built

    register()  # the suite's YAML names its few-shot sampler
    template_name, settings, builder = LOCAL_TASKS[name]
    config = {"task": name, **yaml.safe_load((HERE / template_name).read_text(encoding="utf-8")), **settings}
    splits = builder(data, tokenizer)
    lines = {split: "".join(json.dumps(row) + "\n" for row in rows) for split, rows in splits.items()}
    key = json.dumps([BUILD_VERSION, config, lines], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    folder = (cache or cache_root()) / "tasks" / f"{name}-{digest}"
    if (folder / template_name).is_file():
        return folder
    config["dataset_kwargs"] = {  # datasets' Arrow cache lives with the task, not in ~/.cache/huggingface
        "data_files": {split: str(folder / f"{split}.jsonl") for split in lines},
        "cache_dir": str(folder / "datasets-cache"),
    }
    with atomic_dir(folder, overwrite=True) as tmp:  # a concurrent build writes identical files
        for split, text in lines.items():
            (tmp / f"{split}.jsonl").write_text(text, encoding="utf-8")
        (tmp / template_name).write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=False), encoding="utf-8")
    return folder
