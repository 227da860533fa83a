"""Where importance and pruning get their examples: task prompts of one split of the offline suite
(or any multiple-choice lm-eval task) per task x shot count, and LM windows of one half of the val
tokens. ``importance`` ranks on the ``rank`` split and the first half; ``prune`` scores on the
``score`` split and the second half, so it never scores on an example it ranked on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from inheritune.analysis import unit_importance as imp
from inheritune.errors import InherituneError
from inheritune.evaluation import suite
from inheritune.evaluation.task_index import include_folder
from inheritune.models.families import context_length
from inheritune.options import positive

RANK_SPLIT = "rank"


def check_sources(data, text, tasks: Sequence[str], examples: int, include_path: str | Path | None = None) -> list[str]:
    """The example sources' arguments, checked before anything is loaded; the task names (offline,
    lm-eval's, or lm-eval tasks in the user's ``include_path`` folder)."""
    include_path = include_folder(include_path)
    try:
        tasks = [suite.check_task(t, include_path) for t in ([tasks] if isinstance(tasks, str) else tasks)]
    except InherituneError as error:
        raise InherituneError(f"--tasks: {error}") from None
    if data is None and text is None and not tasks:
        raise InherituneError("give --data DIR or --text FILE, and/or --tasks")
    if data is not None and text is not None:
        raise InherituneError("give exactly one of --data DIR or --text FILE")
    positive(examples, "--examples")
    return tasks


def check_shots(shots: int | Sequence[int]) -> list[int]:
    """``--shots``: one count or several, each at least 0, without repeats."""
    counts = [shots] if isinstance(shots, int) else list(shots)
    if not counts or any(not isinstance(n, int) or n < 0 for n in counts) or len(set(counts)) < len(counts):
        raise InherituneError(f"--shots must be distinct counts of at least 0, not {counts}")
    return counts


def source_name(task: str, shots: int) -> str:
    return f"{task}/{shots}shot"


def query_ids(task: str, n: int, seed: int, split: str, include_path: str | Path | None = None) -> list[str]:
    """The ids of the questions ``suite.prompts(task, n, shots, seed, split)`` asks, in order
    (whatever the shot count)."""
    return [q.id for q in suite.queries(task, n, seed, split, include_path=include_path)]


def half_windows(tokens: np.ndarray, n: int, seq_len: int, seed: int) -> dict[str, list]:
    """``n`` windows at seeded offsets wholly inside the first half of ``tokens`` (``rank``) and
    ``n`` wholly inside the second half (``score``): no token is in both. ``rank_ids`` and
    ``score_ids`` name them as ``val:START-END`` token ranges."""
    half = len(tokens) // 2
    if half < seq_len:
        raise InherituneError(f"each half of the LM tokens ({half}) must hold a --seq-len {seq_len} window")
    rng = np.random.default_rng(seed)
    split: dict[str, list] = {}
    for name, lo in (("rank", 0), ("score", half)):
        starts = lo + rng.integers(0, half - seq_len + 1, size=n)
        windows = np.stack([np.asarray(tokens[s : s + seq_len], dtype=np.int64) for s in starts])
        split[name] = imp.lm_examples(torch.from_numpy(windows))
        split[f"{name}_ids"] = [f"val:{s}-{s + seq_len}" for s in starts]
    return split


def example_sources(
    model,
    tokenizer,
    tasks: Sequence[str],
    examples: int,
    shots: int | Sequence[int],
    max_task_tokens: int,
    seed: int,
    split: str = RANK_SPLIT,
    include_path: str | Path | None = None,
) -> dict[str, list[imp.Example]]:
    """Scored task examples per source ``task/Nshot``, for each task and shot count, all from
    ``split`` (rank or score); the LM windows are ``half_windows``'."""
    sources = {}
    limit = min(max_task_tokens, context_length(model.config) or max_task_tokens)
    for task in tasks:
        for n in check_shots(shots):
            prompts = suite.prompts(task, examples, shots=n, seed=seed, split=split, include_path=include_path)
            sources[source_name(task, n)] = imp.task_examples(tokenizer, prompts, limit)
    return sources


def task_ids(
    tasks: Sequence[str], shots: Sequence[int], examples: int, seed: int, include_path: str | Path | None = None
) -> dict[str, dict]:
    """Per task source: the split its queries come from and their question ids."""
    ids = {}
    for task in tasks:
        used = query_ids(task, examples, seed, RANK_SPLIT, include_path=include_path)
        for n in shots:
            ids[source_name(task, n)] = {"split": RANK_SPLIT, "ids": used}
    return ids
