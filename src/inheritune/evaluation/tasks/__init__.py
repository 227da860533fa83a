"""The offline tasks, registered with lm-eval as ordinary custom tasks (YAML + local data files).

Each task is a YAML template in this folder plus a builder that makes its rows. Building writes
the rows as JSON lines and the completed YAML (with absolute ``data_files``) into a cache folder
named by the content's hash, so an unchanged task is built once and a changed one never reuses
stale files. ``TaskManager(include_path=folder)`` then loads it like any harness task.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from pathlib import Path

import yaml
from transformers import PreTrainedTokenizerBase

from inheritune.data.shards import TokenData
from inheritune.errors import InherituneError
from inheritune.io import atomic_dir

HERE = Path(__file__).parent
MMLU_DEV_PER_TOPIC = 5
BUILD_VERSION = 2  # part of the cache key: bump when build_local_task writes its files differently


def cache_root() -> Path:
    """``$INHERITUNE_CACHE`` or ``~/.cache/inheritune``."""
    return Path(os.environ.get("INHERITUNE_CACHE") or Path.home() / ".cache" / "inheritune")


def mmlu_splits(data: TokenData | None, tokenizer: PreTrainedTokenizerBase | None) -> dict[str, list[dict]]:
    """dev: the first 5 questions of each topic (few-shot pool); test: the rest, shuffled (seed 0)."""
    from inheritune.evaluation.mmlu import load_mmlu_rows

    dev, test, seen = [], [], {}
    for row in load_mmlu_rows():
        seen[row["topic"]] = seen.get(row["topic"], 0) + 1
        (dev if seen[row["topic"]] <= MMLU_DEV_PER_TOPIC else test).append(row)
    random.Random(0).shuffle(test)
    return {"dev": dev, "test": test}


def cloze_splits(data: TokenData | None, tokenizer: PreTrainedTokenizerBase | None) -> dict[str, list[dict]]:
    from inheritune.evaluation.cloze import cloze_rows

    if data is None or tokenizer is None:
        raise InherituneError("cloze-local is built from a data folder's validation documents: pass --data DIR")
    return {"test": cloze_rows(data, tokenizer)}


Builder = Callable[[TokenData | None, PreTrainedTokenizerBase | None], dict[str, list[dict]]]
LOCAL_TASKS: dict[str, tuple[str, Builder]] = {
    "mmlu-local": ("mmlu_local.yaml", mmlu_splits),
    "cloze-local": ("cloze_local.yaml", cloze_splits),
}


def build_local_task(name: str, data: TokenData | None = None,
                     tokenizer: PreTrainedTokenizerBase | None = None, cache: Path | None = None) -> Path:
    """Write (or find) the folder holding task ``name``'s YAML and data; returns the folder."""
    template_name, builder = LOCAL_TASKS[name]
    template = (HERE / template_name).read_text(encoding="utf-8")
    splits = builder(data, tokenizer)
    lines = {split: "".join(json.dumps(row) + "\n" for row in rows) for split, rows in splits.items()}
    key = json.dumps([BUILD_VERSION, template, lines], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    folder = (cache or cache_root()) / "tasks" / f"{name}-{digest}"
    if (folder / template_name).is_file():
        return folder
    config = yaml.safe_load(template)
    config["dataset_kwargs"] = {  # datasets' Arrow cache lives with the task, not in ~/.cache/huggingface
        "data_files": {split: str(folder / f"{split}.jsonl") for split in lines},
        "cache_dir": str(folder / "datasets-cache"),
    }
    with atomic_dir(folder, overwrite=True) as tmp:  # a concurrent build writes identical files
        for split, text in lines.items():
            (tmp / f"{split}.jsonl").write_text(text, encoding="utf-8")
        (tmp / template_name).write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=False), encoding="utf-8")
    return folder
