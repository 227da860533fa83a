"""Grow until matched: the Inheritune loop of derive -> train -> (grow -> train)* -> verdict.

Round 1 derives the reference's first N blocks and trains them for T tokens. While the round's
validation loss is above the reference's own (plus a margin), the trained model grows by K
blocks (the reference's next ones, or copies of its own last ones) and trains again, up to M
layers. Every round is an ordinary train run in ``RUN/round-XX-LL/``; a finished round has its
``result.json``, so a killed grow run resumes in the round it was in. A grow run that replaces
another one (``overwrite``) is built in ``.RUN.new`` beside it and swapped in once its summary is
written: the old run survives any failure, and rerunning the same command continues the new one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from functools import partial
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from inheritune.data.shards import TokenData, open_data
from inheritune.errors import InherituneError
from inheritune.result import CommandResult
from inheritune.evaluation.loss import YARDSTICK, val_loss
from inheritune.io import (atomic_dir, atomic_write_json, build_dir, building, claim, current_paths, final_paths, read_json,
                           resumes,
                           swap_in)
from inheritune.models.families import num_layers
from inheritune.models.loading import load_model, load_tokenizer, parameter_count, tokenizer_fingerprint
from inheritune.models.surgery import deepen, inherit, first_and_last
from inheritune.training import TrainConfig, TrainResult, train
from inheritune.training.checkpoint import checkpoint_dir
from inheritune.training.config import make_config, read_recipe

SETTINGS = "grow.json"  # the arguments a grow run was started with: a rerun must match them to resume
SUMMARY = "summary.json"  # written last: its presence means the grow run finished


@dataclass
class GrowResult(CommandResult):
    """What ``grow`` wrote; summary.json in the run folder holds it."""

    run_dir: Path
    model_dir: Path  # the smallest matching model, or the last round's when none matched
    matched: bool
    layers: int
    reference_val_loss: float
    target: float  # reference_val_loss + margin
    rounds: list[dict]  # per round: round, layers, run_dir, tokens, val_loss, start_val_loss, wall_time, matched
    tokens: int  # training tokens over all rounds
    wall_time: float  # training seconds over all rounds
    verdict: str


def train_resumable(model: PreTrainedModel, data: Path, run_dir: Path, config: TrainConfig,
                    tokenizer: PreTrainedTokenizerBase, teacher: PreTrainedModel | None = None) -> TrainResult:
    """Train, or continue a run a kill interrupted; one killed before its first checkpoint starts over."""
    started = (run_dir / "result.json").is_file() or any(checkpoint_dir(run_dir).glob("step-*"))
    return train(model, data, run_dir, config, tokenizer=tokenizer, resume=started, overwrite=not started,
                 teacher=teacher)


def data_key(data: TokenData) -> str:
    """Identifies the validation set: tokenizer plus the val split's shards and sizes."""
    val = json.dumps(data.manifest["splits"]["val"], sort_keys=True)
    return hashlib.sha256(f"{data.fingerprint}|{val}".encode()).hexdigest()[:16]


def reference_val_loss(model: PreTrainedModel, name: str, data: TokenData, cache: Path, batch_size: int = 8) -> dict:
    """The reference's val loss: the same yardstick every train run reports.

    Cached in ``cache`` under a key of reference, val set and yardstick: the 30-layer forward
    pass over the val set is not free, and every arm compares against the same number.
    """
    key = {"reference": name, "data": data_key(data), "yardstick": YARDSTICK}
    if cache.is_file():
        stored = read_json(cache, "reference cache")
        if stored.get("key") == key:
            return stored["result"]
    start = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = val_loss(model.to(device), data, batch_size=batch_size)
    model.to("cpu")
    result.update(layers=num_layers(model.config), params=parameter_count(model),
                  wall_time=time.perf_counter() - start)
    atomic_write_json(cache, {"key": key, "result": result})
    return result


def round_model(reference: PreTrainedModel, previous: Path | None, layers: int, mode: str, seed: int,
                keep_last: int = 0) -> PreTrainedModel:
    """The model a round starts from: round 1 derives ``layers`` blocks (the first ones, or the first
    and the last ``keep_last``), later rounds grow the previous round's trained model (its final HF
    folder) to ``layers`` blocks, new blocks going before the kept tail."""
    if previous is None:
        return inherit(reference, first_and_last(layers, keep_last, num_layers(reference.config)), seed=seed)
    trained = load_model(previous)
    return deepen(trained, reference, layers - num_layers(trained.config), mode=mode, keep_last=keep_last)


def round_dir(out: Path, index: int, layers: int) -> Path:
    return out / f"round-{index:02d}-{layers:02d}"


def _settings(reference: str, data: TokenData, start: int, step: int, max_layers: int, tokens: int,
              margin: float, mode: str, keep_last: int, config: TrainConfig) -> dict:
    return {"reference": reference, "data": str(data.root), "data_key": data_key(data), "start_layers": start,
            "step_layers": step, "max_layers": max_layers, "tokens_per_round": tokens, "margin": margin,
            "mode": mode, "keep_last": keep_last, "train": dataclasses.asdict(config)}


def _copy_model(src: Path, dst: Path) -> None:
    with atomic_dir(dst, overwrite=True) as tmp:
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)


def grow(reference: str | Path, data: str | Path, out: str | Path, *, start_layers: int, step_layers: int = 3,
         max_layers: int | None = None, tokens_per_round: int = 100_000, margin: float = 0.0, keep_last: int = 0,
         mode: str = "reference", overwrite: bool = False, config: TrainConfig | dict | str | Path | None = None,
         **options) -> GrowResult:
    """``inheritune grow REFERENCE --data DIR --out RUN --start-layers N [...]``, same arguments:
    ``config`` (a TrainConfig, a dict of its fields or a YAML recipe) and the TrainConfig fields
    as keywords set how every round trains (each round trains ``tokens_per_round`` tokens)."""
    recipe = read_recipe(config) if isinstance(config, (str, Path)) else config
    per_round = make_config(recipe, **options, steps=None, tokens=tokens_per_round)
    return grow_until_matched(reference, data, out, start_layers, step_layers, max_layers, tokens_per_round, margin,
                              mode, per_round, keep_last, overwrite=overwrite)


def _check_args(start_layers: int, step_layers: int, max_layers: int | None, tokens_per_round: int, mode: str,
                keep_last: int) -> None:
    if mode not in ("reference", "duplicate"):
        raise InherituneError(f"grow mode must be 'reference' or 'duplicate', not '{mode}'")
    if step_layers < 1:
        raise InherituneError(f"--step-layers must be at least 1, not {step_layers}")
    if tokens_per_round < 1:
        raise InherituneError(f"--tokens-per-round must be positive, not {tokens_per_round}")
    if start_layers < 1 or (max_layers is not None and max_layers < start_layers):
        raise InherituneError(f"need 1 <= --start-layers <= --max-layers, not {start_layers} and {max_layers}")
    if not 0 <= keep_last < start_layers:
        raise InherituneError(f"--keep-last must be in 0..{start_layers - 1} (below --start-layers), not {keep_last}")


def grow_until_matched(
    reference: str | Path,
    data: str | Path,
    out: str | Path,
    start_layers: int,
    step_layers: int = 3,
    max_layers: int | None = None,
    tokens_per_round: int = 100_000,
    margin: float = 0.0,
    mode: str = "reference",
    config: TrainConfig | None = None,
    keep_last: int = 0,
    *,
    overwrite: bool = False,
    reference_model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    log: Callable[[str], None] = partial(print, flush=True),
) -> GrowResult:
    """Derive ``start_layers`` blocks of ``reference``, train, and grow by ``step_layers`` until the
    validation loss is <= the reference's + ``margin`` or the model has ``max_layers`` blocks.

    ``keep_last`` > 0 inherits the reference's last blocks too (first n - k plus last k) and grows
    before them. With ``config.distill_from`` set to ``"reference"`` (or the reference's own name)
    every round distils from the reference already in memory.

    Rerunning with the same arguments resumes (or returns the finished result). Round ``r``
    trains with seed ``config.seed + r - 1`` so that each round draws different windows.
    """
    out = Path(out)
    config = make_config(config, steps=None, tokens=tokens_per_round)
    if config.distill_from == "reference":
        config = dataclasses.replace(config, distill_from=str(reference))
    _check_args(start_layers, step_layers, max_layers, tokens_per_round, mode, keep_last)
    token_data = open_data(data)
    settings = final_paths(_settings(str(reference), token_data, start_layers, step_layers, max_layers,
                                     tokens_per_round, margin, mode, keep_last, config))
    resuming = resumes(out, SETTINGS, settings, "different settings", overwrite)  # before the slow reference load
    ref = reference_model if reference_model is not None else load_model(reference, trust_remote_code=config.trust_remote_code)
    tok = tokenizer if tokenizer is not None else load_tokenizer(reference, config.trust_remote_code)
    token_data.check_tokenizer(tokenizer_fingerprint(tok), f"the reference {reference}")
    total = num_layers(ref.config)
    max_layers = total if max_layers is None else max_layers
    if start_layers > total or (mode == "reference" and max_layers > total):
        raise InherituneError(f"the reference {reference} has {total} layers: --start-layers {start_layers} "
                              f"and --max-layers {max_layers} must not exceed it")
    work = build_dir(out, resuming)  # every input checked: a replacement is built beside the old run
    with building(out, work):
        claim(out, work, SETTINGS, settings, "different settings", resuming)
        if work != out:
            log(f"building the new grow run in {work}; {out} is kept until it is complete")
        if (work / SUMMARY).is_file():
            summary = read_json(work / SUMMARY, "grow summary")
            log(f"grow run {out} already finished: {summary['verdict']}")
        else:
            summary = _grow_rounds(ref, reference, tok, token_data, work, config, start_layers, step_layers,
                                   max_layers, margin, mode, keep_last, teacher_of(config, reference, ref), log)
        if work != out:
            swap_in(work, out)  # the new run is complete: only now is the old one replaced
    return GrowResult.from_json(current_paths(summary))


def teacher_of(config: TrainConfig, reference: str | Path, ref: PreTrainedModel) -> PreTrainedModel | None:
    """The reference in memory when the rounds distil from it (no second copy loaded)."""
    return ref if config.distill_from == str(reference) else None


def _grow_rounds(ref: PreTrainedModel, reference: str | Path, tok, token_data: TokenData, out: Path,
                 config: TrainConfig, start_layers: int, step_layers: int, max_layers: int, margin: float,
                 mode: str, keep_last: int, teacher: PreTrainedModel | None, log) -> dict:
    """The rounds, in ``out`` (the folder being written): derive, train, grow until matched; returns
    the summary written last (paths as they will be after a swap)."""
    total = num_layers(ref.config)
    ref_loss = reference_val_loss(ref, str(reference), token_data, out / "reference.json", config.batch_size)["loss"]
    target = ref_loss + margin
    log(f"reference {reference}: {total} layers, val loss {ref_loss:.4f}; target <= {target:.4f}")

    rounds: list[dict] = []
    layers, previous = start_layers, None
    while True:
        index = len(rounds) + 1
        run_dir = round_dir(out, index, layers)
        seed = config.seed + index - 1
        model = round_model(ref, previous, layers, mode, seed, keep_last)  # cheap and deterministic: rebuilt on resume
        if (run_dir / "result.json").is_file():
            log(f"round {index} ({layers} layers): finished earlier, result reused")
        else:
            how = "derived" if previous is None else f"grown ({mode})"
            log(f"round {index}: {layers} layers {how}, training {config.tokens} tokens -> {run_dir}")
        result = train_resumable(model, token_data.root, run_dir, dataclasses.replace(config, seed=seed), tok, teacher)
        matched = result.final_val_loss <= target
        rounds.append({"round": index, "layers": layers, "run_dir": str(run_dir), "tokens": result.tokens,
                       "val_loss": result.final_val_loss, "start_val_loss": result.val_history[0]["val_loss"],
                       "wall_time": result.wall_time, "matched": matched})
        log(f"round {index} ({layers} layers): val loss {result.final_val_loss:.4f} vs target {target:.4f} -> "
            + ("matched" if matched else "not matched"))
        if matched or layers >= max_layers:
            break
        previous, layers = Path(result.model_dir), min(layers + step_layers, max_layers)

    last = rounds[-1]
    if matched:
        verdict = (f"matched: {layers} layers reach val loss {last['val_loss']:.4f} <= {target:.4f} "
                   f"(reference {total} layers: {ref_loss:.4f}) after {len(rounds)} round(s)")
    else:
        verdict = (f"not matched: best {min(r['val_loss'] for r in rounds):.4f} > target {target:.4f} "
                   f"(reference {total} layers: {ref_loss:.4f}) at the {max_layers}-layer limit after "
                   f"{len(rounds)} round(s); {out / 'model'} is the last round's model")
    _copy_model(Path(result.model_dir), out / "model")
    grown = GrowResult(run_dir=out, model_dir=out / "model", matched=matched, layers=layers,
                       reference_val_loss=ref_loss, target=target, rounds=rounds,
                       tokens=sum(r["tokens"] for r in rounds), wall_time=sum(r["wall_time"] for r in rounds),
                       verdict=verdict)
    summary = final_paths(grown.to_json())
    atomic_write_json(out / SUMMARY, summary)
    log(final_paths(verdict))
    return summary
