"""A train run into a folder: set up the run folder, model, data, loss and optimizer, resume from a
checkpoint if asked, run the loop (``training.loop``), then write the final model and result.json.

One function, ``train_model``, used by the ``train`` command, grow's rounds and the recipe's arms.
A fresh run that replaces another one is written beside it and swapped in at the end
(``atomic.RunFolder``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from inheritune.atomic import (
    RunFolder,
    atomic_dir,
    atomic_write_json,
    check_output_dir,
    final_paths,
    read_json,
    swap_in,
)
from inheritune.data.loader import TrainLoader
from inheritune.data.shards import TokenData, open_data
from inheritune.errors import InherituneError
from inheritune.evaluation.val_loss import YARDSTICK, val_context
from inheritune.models.card import write_card
from inheritune.models.families import context_length
from inheritune.models.loading import (
    load_config,
    load_model,
    load_tokenizer,
    model_name,
    parameter_count,
    tokenizer_fingerprint,
)
from inheritune.models.precision import autocast_dtype
from inheritune.training import checkpoint, distributed, healing, teacher_cache
from inheritune.training.distributed import barrier, full_state, prepare
from inheritune.training.flops import flops_per_token, matmul_peak
from inheritune.training.logs import RunLog
from inheritune.training.loop import TrainState, fit, peak_bytes, restore_checkpoint
from inheritune.training.lora import add_adapters
from inheritune.training.objective import CausalLMLoss, Teacher
from inheritune.training.optim import make_optimizer
from inheritune.training.resume import finished, start_point
from inheritune.training.teacher import check_teacher_states, make_teacher, open_teacher_cache, states_of
from inheritune.training.train_config import TrainConfig
from inheritune.training.train_result import TrainResult


def train_model(
    model: str | Path | PreTrainedModel,
    data: str | Path,
    out: str | Path,
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    tokenizer: PreTrainedTokenizerBase | str | Path | None = None,
    teacher: PreTrainedModel | None = None,
) -> TrainResult:
    """Train ``model`` on the prepared data folder ``data`` as ``config`` says; the run folder
    ``out`` holds everything. ``teacher`` is an in-memory model for ``config.distill_from``.

    ``resume=True``: a finished run of the same length returns its stored result (another
    length is refused), an unfinished one continues from its latest valid checkpoint, and one
    with no checkpoint yet (killed before its first) starts over.

    A fresh run over a non-empty ``out`` (``overwrite``) is built beside it in ``.NAME.new`` and
    swapped in only once complete: a failure or kill at any step leaves the previous run as it
    was. Rerunning the same call continues that replacement from its latest checkpoint (or
    starts it over if the recipe, model or data changed); ``resume`` still means the run in ``out``.
    """
    _check_specs(model, config, teacher)
    out = Path(out)
    with _quiet_hf(), RunFolder(out, resume and started(out)).build(swap=False) as work:  # swapped in by _finalize
        if resume and (done := finished(out, config)) is not None:
            return done
        run = _setup(model, data, out, work, config, tokenizer, resume, overwrite, teacher_model=teacher)
        fit(run)
        return _finalize(run)


def train_resumable(
    model: PreTrainedModel,
    data: Path,
    run_dir: Path,
    config: TrainConfig,
    tokenizer: PreTrainedTokenizerBase,
    teacher: PreTrainedModel | None = None,
) -> TrainResult:
    """Train, or continue a run a kill interrupted; one killed before its first checkpoint starts over."""
    begun = started(run_dir)
    return train_model(
        model, data, run_dir, config, tokenizer=tokenizer, resume=begun, overwrite=not begun, teacher=teacher
    )


def started(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run that finished or wrote a checkpoint."""
    return (run_dir / "result.json").is_file() or any(checkpoint.checkpoint_dir(run_dir).glob("step-*"))


def _check_specs(model, config: TrainConfig, teacher: PreTrainedModel | None) -> None:
    """What the model's and the teacher's configs decide of the options (which blocks train, top:K),
    refused before any folder is made or renamed."""
    healing.focus(load_config(model, config.trust_remote_code), config.train_blocks, model_name(model))
    check_teacher_states(config.teacher_states, teacher or config.distill_from, config.trust_remote_code)


def _setup(
    model,
    data,
    run_dir: Path,
    work: Path,
    config: TrainConfig,
    tokenizer,
    resume: bool,
    overwrite: bool,
    teacher_model: PreTrainedModel | None,
) -> TrainState:
    """Check every input, find the checkpoint to resume, and ready the model, loss and optimizer;
    writes config.json (nothing else is written before every check has passed)."""
    env = distributed.setup()
    resuming = resume and run_dir.exists()
    if not resuming:
        check_output_dir(run_dir, overwrite)  # fail fast; nothing is written until every check has passed
    tokens_data = open_data(data)
    tokens_data.shards("val")  # a damaged validation split fails now, not at the first evaluation
    model, tokenizer, model_name = _model_and_tokenizer(model, tokenizer, tokens_data, config)
    adapters = add_adapters(model, config.lora, config.lora_targets, config.seed) if config.lora else None
    if adapters is not None:  # the same model, its linear layers holding adapters; everything else frozen
        model = adapters.model
    tokens_per_step = _tokens_per_step(config, env.world)
    loader = _loader(config, tokens_data, env, tokens_per_step)
    teacher = make_teacher(config, teacher_model, tokens_data, model)
    model_name = final_paths(model_name)
    found = start_point(
        run_dir,
        work,
        config,
        model_name=model_name,
        data=final_paths(str(data)),
        resuming=resuming,
        overwrite=overwrite,
        env=env,
    )
    autocast = autocast_dtype(config.precision, env.device)
    prepare(model, env.device)
    if found is not None:
        checkpoint.load_into(model, found.weights, found.folder)
    flops, parameters = flops_per_token(model, config.seq_len), parameter_count(model)  # before any sharding
    scales = healing.lr_scales(model, config.train_blocks, config.rest_lr_scale)  # frozen before any wrapping
    torch.manual_seed(config.seed)
    total_steps = config.total_steps(tokens_per_step)
    step_loss, states, cache = _loss(model, config, teacher, tokens_data, total_steps * tokens_per_step, env, autocast)
    warmup, eval_every, checkpoint_every = config.schedule(total_steps)
    optimizer = make_optimizer(
        model, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay, sharded=config.fsdp, scales=scales
    )
    run = TrainState(
        config=config,
        env=env,
        run_dir=run_dir,
        work=work,
        model=model,
        tokenizer=tokenizer,
        data=tokens_data,
        loader=loader,
        step_loss=step_loss,
        forward=torch.compile(step_loss) if config.compile else step_loss,
        optimizer=optimizer,
        autocast=autocast,
        tokens_per_step=tokens_per_step,
        total_steps=total_steps,
        warmup=warmup,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        flops=flops,
        peak=config.peak_flops or (matmul_peak(env.device, autocast or torch.float32) if env.main else 1.0),
        log=RunLog(work, keep_until=found.state["step"] if found is not None else None, enabled=env.main),
        fresh=found is None,
        adapters=adapters,
        last_checkpoint=found.folder if found else None,
        teacher_states=states,
        cache=cache,
    )
    if found is not None:
        restore_checkpoint(run, found.state)
    if env.main:
        _write_config(run, model_name, data=str(data), parameters=parameters, distilling=teacher is not None)
    return run


def _loader(config: TrainConfig, data: TokenData, env: distributed.Dist, tokens_per_step: int) -> TrainLoader:
    """The batches: a pure function of (seed, step), this rank's share, past ``skip_tokens``."""
    return TrainLoader(
        data,
        config.seq_len,
        batch_size=config.batch_size,
        sequences_per_step=tokens_per_step // config.seq_len,
        seed=config.seed,
        rank=env.rank,
        world=env.world,
        skip_steps=_skip_steps(config, tokens_per_step),
    )


def _loss(
    model: PreTrainedModel,
    config: TrainConfig,
    teacher: Teacher | None,
    data: TokenData,
    tokens: int,
    env: distributed.Dist,
    autocast: torch.dtype | None,
) -> tuple[torch.nn.Module, Callable[[torch.Tensor], object] | None, teacher_cache.TeacherCache | None]:
    """The step's loss (wrapped for data parallelism, or the model sharded), what it reads of the
    teacher, and the teacher's cache (for a run of ``tokens``) when it reads through one."""
    if teacher is not None:
        teacher.model.to(device=env.device, dtype=torch.float32).eval()  # type: ignore[call-arg]  # wraps: .to unbound
    loss = CausalLMLoss(model, fused=not config.fsdp, teacher=teacher)
    step_loss: torch.nn.Module
    if config.fsdp:  # the HF model is the FSDP root, so evaluation and saving can call it directly
        distributed.shard(model)
        step_loss = loss
    else:
        step_loss = distributed.data_parallel(loss, env)
    states = states_of(teacher, config, loss.fused, autocast)
    cache = None
    if states is not None:
        assert teacher is not None  # states are a teacher's
        cache = open_teacher_cache(config, teacher, data=data, autocast=autocast, env=env, tokens=tokens)
    return step_loss, states, cache


def _model_and_tokenizer(model, tokenizer, data, config: TrainConfig):
    """The model (loaded if a reference), its tokenizer (checked against the data's) and its name."""
    if isinstance(tokenizer, (str, Path)):  # --tokenizer REF
        tokenizer = load_tokenizer(tokenizer, config.trust_remote_code)
    if isinstance(model, PreTrainedModel):
        name = f"<in-memory {type(model).__name__}>"
    else:
        name = str(model)
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model, config.trust_remote_code)
        model = load_model(model, trust_remote_code=config.trust_remote_code)
    if tokenizer is not None:
        data.check_tokenizer(tokenizer_fingerprint(tokenizer), f"the model's tokenizer ({name})")
    max_positions = context_length(model.config)
    if max_positions is not None and config.seq_len > max_positions:
        raise InherituneError(f"seq_len {config.seq_len} is larger than the model supports ({max_positions} positions)")
    return model, tokenizer, name


def _tokens_per_step(config: TrainConfig, world: int) -> int:
    micro_tokens = config.batch_size * config.seq_len * world
    tokens_per_step = config.tokens_per_step or micro_tokens
    if tokens_per_step % micro_tokens:
        raise InherituneError(
            f"tokens_per_step {tokens_per_step} is not a multiple of batch_size x seq_len x ranks "
            f"= {config.batch_size} x {config.seq_len} x {world} = {micro_tokens}"
        )
    return tokens_per_step


def _skip_steps(config: TrainConfig, tokens_per_step: int) -> int:
    if config.skip_tokens % tokens_per_step:
        raise InherituneError(
            f"skip_tokens {config.skip_tokens} is not a whole number of steps of {tokens_per_step} tokens"
        )
    return config.skip_tokens // tokens_per_step


def _write_config(run: TrainState, model_name: str, data: str, parameters: int, distilling: bool) -> None:
    atomic_write_json(
        run.work / "config.json",
        {
            "config": dataclasses.asdict(run.config),
            "model": model_name,
            "data": final_paths(data),
            "world": run.env.world,
            "precision": "bf16" if run.autocast else "fp32",
            "tokens_per_step": run.tokens_per_step,
            "micro_steps": run.loader.micro_steps,
            "total_steps": run.total_steps,
            "warmup_steps": run.warmup,
            "eval_every": run.eval_every,
            "checkpoint_every": run.checkpoint_every,
            "parameters": parameters,
            "trainable_parameters": sum(p.numel() for p in run.model.parameters() if p.requires_grad),
            "flops_per_token": run.flops,
            "tokenizer_fingerprint": run.data.fingerprint,
            "train_loss": "distillation mix (see training/objective.py)" if distilling else "cross-entropy",
            "val_loss": {**YARDSTICK, "context": val_context(run.model)},
        },
    )


def _finalize(run: TrainState) -> TrainResult:
    """The final model folder and result.json; a replacement is swapped in only now."""
    full = full_state(run.model, run.optimizer, run.config.fsdp, optimizer_too=False)
    result = TrainResult(
        run.run_dir,
        run.run_dir / "final",
        steps=run.step,
        tokens=run.step * run.tokens_per_step,
        final_val_loss=run.val_history[-1].val_loss,
        val_history=run.val_history,
        wall_time=run.train_seconds,
        teacher_cache=run.cache.stats() if run.cache is not None else None,
        memory=dataclasses.replace(run.memory, peak_bytes=peak_bytes(run.env.device)) if run.memory else None,
    )
    if run.env.main:
        with atomic_dir(run.work / "final", overwrite=True) as tmp:
            _save_final(run, tmp, full[0])
            if run.tokenizer is not None:
                run.tokenizer.save_pretrained(tmp)
            write_card(tmp, _card(run, result), source=read_json(run.work / "config.json", "run config")["model"])
        atomic_write_json(run.work / "result.json", final_paths(result.to_json()))
        if run.work != run.run_dir:
            swap_in(run.work, run.run_dir)  # the new run is complete: only now is the old one replaced
    barrier(run.env)
    return result


def _save_final(run: TrainState, folder: Path, state: dict | None) -> None:
    """The final weights: as trained, or with LoRA adapters merged in (or beside, in adapter/)."""
    if run.adapters is None:
        run.model.save_pretrained(folder, safe_serialization=True, state_dict=state)
        return
    run.adapters.save(folder, merge=run.config.lora_merge)


def _card(run: TrainState, result: TrainResult) -> dict:
    """The final model's card facts: how it was trained and where it ended."""
    c = run.config
    loss = (
        f"distillation from {c.distill_from} (alpha {c.distill_alpha}, T {c.distill_temperature})"
        if c.distill_from
        else "cross-entropy"
    )
    trained = str(c.train_blocks)
    if c.lora:
        how = "merged" if c.lora_merge else "in adapter/"
        trained = f"LoRA adapters of rank {c.lora} on {c.lora_targets} ({how}), the rest frozen"
    return {
        "command": "train",
        "loss": loss,
        "training tokens": result.tokens,
        "trained": trained,
        "val loss": round(result.final_val_loss, 4),
        "val loss definition": YARDSTICK["definition"],
    }


# --- helpers, in the order the loop uses them ---------------------------------------------


@contextmanager
def _quiet_hf():
    """Our bar and log lines are the output: no 'Writing model shards' bar at every checkpoint."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
