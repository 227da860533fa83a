"""Where a train run starts: a finished result, the latest checkpoint of the run (``--resume``),
of a replacement a kill stopped beside it, or nothing (a fresh run). A resumed run must follow the
recipe it was started with, except the options that do not touch the loss curve."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

from inheritune.atomic import (
    current_paths,
    differences,
    read_json,
)
from inheritune.errors import InherituneError
from inheritune.training import checkpoint, distributed
from inheritune.training.distributed import barrier
from inheritune.training.train_config import TrainConfig
from inheritune.training.train_result import TrainResult

# What a run folder holds before its first checkpoint (a run killed then may be started over).
RUN_FILES = {"config.json", "log.jsonl", "log.csv", "checkpoints", "tensorboard"}
# Options that may change between a run and its resumption: they do not touch the loss curve.
RESUMABLE_CHANGES = {
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
    "compile",
    "peak_flops",
    "progress",
    "trust_remote_code",
    "teacher_cache",
}


def finished(run_dir: Path, config: TrainConfig) -> TrainResult | None:
    """The stored result of a finished run, if it ran the length and recipe asked for now: a changed
    setting is refused as on an unfinished run, never answered with a result it did not produce."""
    if not (run_dir / "result.json").is_file():
        return None
    result = TrainResult.from_json(current_paths(read_json(run_dir / "result.json", "run result")))
    stored = read_json(run_dir / "config.json", "run config")
    asked = config.total_steps(stored["tokens_per_step"])
    if asked != result.steps:
        raise InherituneError(
            f"{run_dir} finished at {result.steps} steps ({result.tokens} tokens) and cannot be "
            f"extended to {asked} steps: its cosine schedule already ended; train a new run "
            f"from {result.model_dir} or start over with --overwrite"
        )
    _check_same_recipe(run_dir, config)
    return result


def start_point(
    run_dir: Path,
    work: Path,
    config: TrainConfig,
    model_name: str,
    data: str,
    resuming: bool,
    overwrite: bool,
    env: distributed.Dist,
) -> checkpoint.Checkpoint | None:
    """The latest checkpoint that loads (of the run, or of a replacement a kill stopped), or None for
    a fresh run, whose folder is then cleared (never the run it replaces)."""
    found = _resume_point(run_dir, resuming, overwrite=overwrite, config=config, env=env)
    if work != run_dir:
        found = _continue_beside(work, config, model_name=model_name, data=data, env=env)
    if found is None:
        barrier(env)  # every rank has looked before rank 0 clears
        if env.main and work.exists():
            shutil.rmtree(work)
        barrier(env)
    return found


def _resume_point(
    run_dir: Path, resuming: bool, overwrite: bool, config: TrainConfig, env: distributed.Dist
) -> checkpoint.Checkpoint | None:
    """The checkpoint ``--resume`` continues from: the latest of ``run_dir`` that loads. None when
    there is none (a run killed before its first checkpoint starts over, which loses nothing)."""
    if not resuming:
        return None
    if env.main:
        checkpoint.clean_partial(run_dir)
    found = checkpoint.latest(run_dir)
    if found is not None:
        _check_same_recipe(run_dir, config)
        return found
    strays = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_FILES)
    if strays and not overwrite:
        raise InherituneError(
            f"{run_dir} is not a run folder (it holds {', '.join(strays[:3])}); nothing to resume there"
        )
    if env.main:
        print(f"inheritune: {run_dir} has no checkpoint yet: starting it over", file=sys.stderr)
    return None


def _continue_beside(
    work: Path, config: TrainConfig, model_name: str, data: str, env: distributed.Dist
) -> checkpoint.Checkpoint | None:
    """The checkpoint of a replacement that a kill stopped in ``work``, if it is this very run
    (same recipe, model and data): rerunning the command continues it instead of starting over."""
    if not (work / "config.json").is_file():
        return None
    stored = read_json(work / "config.json", "run config")
    if differences(stored["config"], dataclasses.asdict(config), RESUMABLE_CHANGES) or (
        stored.get("model"),
        stored.get("data"),
    ) != (model_name, data):
        return None
    if env.main:
        checkpoint.clean_partial(work)
    found = checkpoint.latest(work)
    if found is not None and env.main:
        print(f"inheritune: continuing the replacement run in {work} from {found.folder.name}", file=sys.stderr)
    return found


def _check_same_recipe(run_dir: Path, config: TrainConfig) -> None:
    """A resumed run must follow the same recipe, or its curve would not continue the original."""
    stored = read_json(run_dir / "config.json", "run config")["config"]
    stored = {**dataclasses.asdict(TrainConfig()), **stored}  # an option added since the run: it ran at its default
    for key, old, value in differences(stored, dataclasses.asdict(config), RESUMABLE_CHANGES)[:1]:
        raise InherituneError(
            f"{run_dir} was started with {key}={old}, not {value}; "
            f"resume with the same recipe (or start over with --overwrite)"
        )
