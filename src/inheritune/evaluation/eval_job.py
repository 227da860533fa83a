"""``eval``: validation loss (the one yardstick) and lm-eval tasks of a model, as one JSON.

``evaluate(model, data=DIR, tasks=[...], out=FILE)`` is ``inheritune eval MODEL --data DIR --tasks
... --out FILE``: the same arguments, the same JSON file (written atomically when ``out`` is
given), and an ``EvalResult``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

from transformers import PreTrainedModel

from inheritune.atomic import atomic_write_json
from inheritune.data.shards import TokenData, open_data
from inheritune.errors import InherituneError
from inheritune.evaluation.harness import evaluate_model, task_managers
from inheritune.evaluation.task_index import include_folder
from inheritune.models.loading import check_device, load, load_tokenizer, model_name, tokenizer_fingerprint
from inheritune.result import CommandResult


@dataclasses.dataclass
class EvalResult(CommandResult):
    """What ``eval`` measured; ``report()`` is the JSON it prints and writes to ``out``."""

    out: Path | None
    model: str
    data: str | None
    val: dict | None  # {"loss", "ppl", "tokens", "yardstick"} on the data's val split
    tasks: dict  # {task: {metric: value, "samples", "num_fewshot"}}
    time_s: dict  # seconds per stage: load, val, each task
    seconds: float

    def summary(self) -> str:
        """What the CLI prints (the files hold the rest)."""
        return json.dumps(self.report(), indent=2)


def evaluate(
    model: str | Path | PreTrainedModel,
    *,
    data: str | Path | TokenData | None = None,
    tasks: Sequence[str] = (),
    num_fewshot: int | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    device_map: str | None = None,
    out: str | Path | None = None,
    include_path: str | Path | None = None,
    trust_remote_code: bool = False,
    tokenizer=None,
) -> EvalResult:
    """Validation loss on ``data``'s val split (if given) and the named ``tasks`` (offline: see
    ``evaluation/tasks``; any lm-eval task name with the hub, or in the user's ``include_path``).

    ``model``/``tokenizer``: references as on the command line, or loaded objects (a loaded model
    stays on its device and returns in the mode it came). Every argument a user can get wrong is
    checked before the (slow) model load."""
    start = time.perf_counter()
    tasks = list(dict.fromkeys(tasks))
    _check(data, tasks, num_fewshot=num_fewshot, limit=limit, batch_size=batch_size, out=out)
    include_path = include_folder(include_path)
    check_device(device, device_map)
    token_data = data if isinstance(data, TokenData) or data is None else open_data(data)
    tok = _tokenizer(model, tokenizer, trust_remote_code)
    if token_data is not None:
        token_data.check_tokenizer(tokenizer_fingerprint(tok))
    managers = task_managers(tasks, token_data, tok, include_path)
    loading = time.perf_counter()
    loaded, tok = load(
        model, tok, trust_remote_code, needed=True, no_tokenizer="", device=device, device_map=device_map
    )
    assert tok is not None  # needed: load raises rather than return no tokenizer
    times = {} if isinstance(model, PreTrainedModel) else {"load": round(time.perf_counter() - loading, 2)}
    val, results, stage_times = evaluate_model(
        loaded, tok, data=token_data, managers=managers, num_fewshot=num_fewshot, limit=limit, batch_size=batch_size
    )
    result = EvalResult(
        out=Path(out) if out is not None else None,
        model=model_name(model),
        data=None if data is None else str(data.root if isinstance(data, TokenData) else data),
        val=val,
        tasks=results,
        time_s=times | stage_times,
        seconds=0.0,
    )
    if out is not None:
        atomic_write_json(out, result.report())
    result.seconds = time.perf_counter() - start
    return result


def _check(data, tasks: list[str], num_fewshot: int | None, limit: int | None, batch_size: int, out) -> None:
    if data is None and not tasks:
        raise InherituneError("nothing to evaluate: give a data folder (--data) and/or --tasks")
    if limit is not None and limit < 1:
        raise InherituneError(f"--limit must be a positive number of examples, got {limit}")
    if num_fewshot is not None and num_fewshot < 0:
        raise InherituneError(f"--num-fewshot must be >= 0, got {num_fewshot}")
    if batch_size < 1:
        raise InherituneError(f"--batch-size must be >= 1, got {batch_size}")
    if out is not None and Path(out).is_dir():  # fail now, not after a long evaluation
        raise InherituneError(f"--out {out} is a folder; give a file name such as {Path(out) / 'eval.json'}")


def _tokenizer(model, tokenizer, trust_remote_code: bool):
    """The tokenizer, loaded before the model: building the tasks needs it, and a wrong task name
    should fail before the slow load."""
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        return tokenizer
    source = tokenizer if tokenizer is not None else model
    if isinstance(source, PreTrainedModel):
        raise InherituneError("evaluating a model object needs its tokenizer (tokenizer=...)")
    return load_tokenizer(source, trust_remote_code=trust_remote_code)
