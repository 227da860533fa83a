"""`train`: the recipe's training run, one function used by the CLI, grow and run.

Read top to bottom: set up the run folder, model and data; resume from a checkpoint if asked;
then for each optimizer step accumulate gradients over micro-batches, clip, step, and every
so often evaluate, log and checkpoint. Everything that decides the loss curve (weights,
optimizer moments, the step number, RNG) is in the checkpoint, and the batches are a pure
function of (seed, step), so a killed run resumes on the same curve. A fresh run that replaces
another one is written beside it and swapped in at the end (``atomic.build_dir``/``atomic.swap_in``). The
machinery it calls lives in ``training/`` (loss, optimizer, checkpoints, teacher, parallelism)..
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from inheritune.atomic import (
    RunFolder,
    atomic_dir,
    atomic_write_json,
    check_output_dir,
    current_paths,
    differences,
    final_paths,
    read_json,
    swap_in,
)
from inheritune.data.loader import TrainLoader
from inheritune.data.shards import TokenData, open_data
from inheritune.errors import InherituneError, TrainingInterrupted
from inheritune.evaluation.val_loss import YARDSTICK, val_context, val_loss
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
from inheritune.result import CommandResult
from inheritune.training import checkpoint, distributed, healing, teacher_cache
from inheritune.training.distributed import barrier, clip, full_state, grad_sync, load_optimizer, prepare
from inheritune.training.flops import flops_per_token, matmul_peak
from inheritune.training.logs import RunLog
from inheritune.training.objective import CausalLMLoss
from inheritune.training.optim import lr_at, make_optimizer
from inheritune.training.teacher import check_teacher_states, make_teacher, open_teacher_cache, states_of
from inheritune.training.train_config import TrainConfig, make_config, read_recipe

HELP = {"resume": "continue the run in --out from its latest valid checkpoint"}  # shared: inheritune.commands.HELP

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


@dataclass
class TrainResult(CommandResult):
    """What ``train`` wrote; result.json in the run folder holds it."""

    run_dir: Path
    model_dir: Path  # RUN/final: HF folder (safetensors + tokenizer) of the final model
    steps: int
    tokens: int  # training tokens consumed
    final_val_loss: float
    val_history: list[dict]  # [{"step", "tokens", "val_loss", "wall_time"}...] including step 0 and the end
    wall_time: float  # seconds of optimizer steps (teacher included; evaluations and checkpoints not), over all resumes
    teacher_cache: dict | None = None  # where the teacher's states were read from / stored, and how many (this call)

    def summary(self) -> str:
        """What the CLI prints (the files hold the rest)."""
        return (
            f"trained {self.steps} steps ({self.tokens} tokens) in {self.wall_time:.1f}s: val loss "
            f"{self.val_history[0]['val_loss']:.4f} -> {self.final_val_loss:.4f}; model -> {self.model_dir}"
        )


def train(
    model: str | Path | PreTrainedModel,
    data: str | Path,
    out: str | Path,
    config: TrainConfig | dict | str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    tokenizer=None,
    teacher: PreTrainedModel | None = None,
    **options,
) -> TrainResult:
    """Train ``model`` on the prepared data folder ``data``; the run folder ``out`` holds everything.

    ``inheritune train MODEL --data DIR --out RUN [--config YAML] [--OPTION VALUE ...]`` with the
    same arguments: ``config`` is a TrainConfig, a dict of its fields or a YAML recipe, and every
    TrainConfig field is also a keyword (``seq_len=1024``, or the CLI's string ``"1e6"``),
    overriding it. ``teacher`` (Python only) is an in-memory model for ``distill_from``.

    ``resume=True``: a finished run of the same length returns its stored result (another
    length is refused), an unfinished one continues from its latest valid checkpoint, and one
    with no checkpoint yet (killed before its first) starts over.

    A fresh run over a non-empty ``out`` (``overwrite``) is built beside it in ``.NAME.new`` and
    swapped in only once complete: a failure or kill at any step leaves the previous run as it
    was. Rerunning the same command continues that replacement from its latest checkpoint (or
    starts it over if the recipe, model or data changed); ``resume`` still means the run in ``out``.
    """
    config = make_config(read_recipe(config) if isinstance(config, (str, Path)) else config, **options)
    _check_specs(model, config, teacher)
    out = Path(out)
    continuing = resume and ((out / "result.json").is_file() or any(checkpoint.checkpoint_dir(out).glob("step-*")))
    with _quiet_hf(), RunFolder(out, continuing).build(swap=False) as work:  # swapped in by rank 0 (_finalize)
        return _train(
            model,
            data,
            run_dir=out,
            work=work,
            config=config,
            tokenizer=tokenizer,
            resume=resume,
            overwrite=overwrite,
            teacher_model=teacher,
        )


def _check_specs(model, config: TrainConfig, teacher: PreTrainedModel | None) -> None:
    """What the model's and the teacher's configs decide of the options (which blocks train, top:K),
    refused before any folder is made or renamed."""
    healing.focus(load_config(model, config.trust_remote_code), config.train_blocks, model_name(model))
    check_teacher_states(config.teacher_states, teacher or config.distill_from, config.trust_remote_code)


def _finished(run_dir: Path, config: TrainConfig) -> TrainResult | None:
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


@dataclass
class _Run:
    """Everything the loop reads and updates, built by ``_setup``."""

    config: TrainConfig
    env: distributed.Dist
    run_dir: Path  # the run's folder
    work: Path  # where this invocation writes it: run_dir, or the sibling a replacement is built in
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase | None
    data: TokenData
    loader: TrainLoader
    step_loss: torch.nn.Module
    forward: Callable[..., torch.Tensor]  # step_loss, compiled with config.compile
    optimizer: torch.optim.Optimizer
    autocast: torch.dtype | None
    tokens_per_step: int
    total_steps: int
    warmup: int
    eval_every: int
    checkpoint_every: int
    flops: float
    peak: float
    log: RunLog
    fresh: bool  # no checkpoint was resumed
    # inputs -> what the loss reads of the teacher (None: the loss runs it itself)
    teacher_states: Callable[[torch.Tensor], object] | None = None
    cache: teacher_cache.TeacherCache | None = None  # the teacher's states by window, when distilling through it
    step: int = 0
    val_history: list = dataclasses.field(default_factory=list)
    train_seconds: float = 0.0
    last_checkpoint: Path | None = None


def _train(
    model,
    data,
    run_dir: Path,
    work: Path,
    config: TrainConfig,
    tokenizer,
    resume: bool,
    overwrite: bool,
    teacher_model: PreTrainedModel | None,
) -> TrainResult:
    """``run_dir`` is the run's folder; ``work`` is where this invocation writes it (``run_dir``, or
    the sibling a replacement is built in, swapped in at the end)."""
    if resume and (done := _finished(run_dir, config)) is not None:
        return done
    run = _setup(
        model,
        data,
        run_dir=run_dir,
        work=work,
        config=config,
        tokenizer=tokenizer,
        resume=resume,
        overwrite=overwrite,
        teacher_model=teacher_model,
    )
    _fit(run)
    return _finalize(run)


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
) -> _Run:
    """Check every input, find the checkpoint to resume, and ready the model, loss and optimizer;
    writes config.json (nothing else is written before every check has passed)."""
    env = distributed.setup()
    resuming = resume and run_dir.exists()
    if not resuming:
        check_output_dir(run_dir, overwrite)  # fail fast; nothing is written until every check has passed
    tokens_data = open_data(data)
    tokens_data.shards("val")  # a damaged validation split fails now, not at the first evaluation
    model, tokenizer, model_name = _model_and_tokenizer(model, tokenizer, tokens_data, config)
    tokens_per_step = _tokens_per_step(config, env.world)
    total_steps = config.total_steps(tokens_per_step)
    warmup, eval_every, checkpoint_every = config.schedule(total_steps)
    loader = TrainLoader(
        tokens_data,
        config.seq_len,
        batch_size=config.batch_size,
        sequences_per_step=tokens_per_step // config.seq_len,
        seed=config.seed,
        rank=env.rank,
        world=env.world,
        skip_steps=_skip_steps(config, tokens_per_step),
    )
    teacher = make_teacher(config, teacher_model, tokens_data, model)

    model_name = final_paths(model_name)
    found = _start_point(
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
        cache = open_teacher_cache(
            config, teacher, data=tokens_data, autocast=autocast, env=env, tokens=total_steps * tokens_per_step
        )
    run = _Run(
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
        optimizer=make_optimizer(
            model,
            lr=config.lr,
            betas=config.betas,
            weight_decay=config.weight_decay,
            sharded=config.fsdp,
            scales=scales,
        ),
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
        last_checkpoint=found.folder if found else None,
        teacher_states=states,
        cache=cache,
    )
    if found is not None:
        _restore(run, found.state)
    if env.main:
        _write_config(run, model_name, data=str(data), parameters=parameters, distilling=teacher is not None)
    return run


def _start_point(
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


def _restore(run: _Run, state: dict) -> None:
    """Optimizer moments, RNG, step, history and training time of a checkpoint."""
    run.train_seconds = state.get("wall_time", 0.0)
    load_optimizer(run.model, run.optimizer, state["optimizer"], run.config.fsdp)
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and run.env.device.type == "cuda":
        torch.cuda.set_rng_state(state["rng"]["cuda"])
    run.step, run.val_history = state["step"], state["val_history"]


def _write_config(run: _Run, model_name: str, data: str, parameters: int, distilling: bool) -> None:
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
            "flops_per_token": run.flops,
            "tokenizer_fingerprint": run.data.fingerprint,
            "train_loss": "distillation mix (see training/objective.py)" if distilling else "cross-entropy",
            "val_loss": {**YARDSTICK, "context": val_context(run.model)},
        },
    )


def _evaluate(run: _Run, at: int) -> float:
    """The yardstick val loss at step ``at``, appended to the history."""
    result = val_loss(run.model, run.data, batch_size=run.config.batch_size)
    run.val_history.append(
        {"step": at, "tokens": at * run.tokens_per_step, "val_loss": result["loss"], "wall_time": run.train_seconds}
    )
    return result["loss"]


def _save(run: _Run, at: int) -> None:
    """A checkpoint of everything that decides the rest of the curve (rank 0 writes it)."""
    full = full_state(run.model, run.optimizer, run.config.fsdp)
    if run.env.main:
        rng = {"torch": torch.get_rng_state()} | (
            {"cuda": torch.cuda.get_rng_state()} if run.env.device.type == "cuda" else {}
        )
        state = {
            "step": at,
            "tokens": at * run.tokens_per_step,
            "val_history": run.val_history,
            "wall_time": run.train_seconds,
            "optimizer": full[1],
            "rng": rng,
            "loader": {"seed": run.config.seed, "seq_len": run.config.seq_len, "tokens_per_step": run.tokens_per_step},
        }
        run.last_checkpoint = checkpoint.save(
            run.work,
            at,
            model=run.model,
            tokenizer=run.tokenizer,
            state=state,
            keep=run.config.keep_checkpoints,
            model_state=full[0],
        )
    barrier(run.env)


def _fit(run: _Run) -> None:
    """The optimizer steps, from ``run.step`` to the end: evaluate, log and checkpoint as scheduled;
    a stop signal ends the run after a checkpoint (``TrainingInterrupted``)."""
    if run.fresh:
        run.log.write({"step": 0, "tokens": 0, "lr": 0.0, "val_loss": _evaluate(run, 0), "wall_time": 0.0})
    show = run.env.main and run.config.progress
    bar = tqdm(
        total=run.total_steps,
        initial=run.step,
        desc="train",
        unit="step",
        dynamic_ncols=True,
        disable=not (show and sys.stderr.isatty()),
    )
    last_time, last_step = time.perf_counter(), run.step
    with _stop_signals() as stop_requested:
        while run.step < run.total_steps:
            lr, train_loss, nonfinite, stop = _optimizer_step(run, stop_requested())
            bar.update(1)
            at_eval = run.step % run.eval_every == 0 or run.step == run.total_steps
            if run.step % run.config.log_every == 0 or at_eval or nonfinite:
                tok_s = (run.step - last_step) * run.tokens_per_step / max(time.perf_counter() - last_time, 1e-9)
                _log_step(run, lr, train_loss=train_loss, tok_s=tok_s, nonfinite=nonfinite, at_eval=at_eval, show=show)
                bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tok_s:.0f}")
                last_time, last_step = time.perf_counter(), run.step
            if run.step % run.checkpoint_every == 0 or run.step == run.total_steps or stop:
                _save(run, run.step)
                last_time = time.perf_counter()  # tokens/s counts training time only
            if stop and run.step < run.total_steps:
                bar.close()
                run.log.close()
                raise TrainingInterrupted(
                    f"stopped by signal after step {run.step}/{run.total_steps}; checkpoint "
                    f"{run.last_checkpoint or run.work / 'checkpoints'} written; "
                    f"{_how_to_continue(run.run_dir, run.work)}"
                )
    bar.close()
    run.log.close()


def _optimizer_step(run: _Run, stop_requested: bool) -> tuple[float, float, bool, bool]:
    """One optimizer step (gradients accumulated over the micro-batches, clipped); returns the lr,
    the mean train loss over ranks, whether the step was non-finite (then skipped, or an error)
    and whether any rank asked to stop."""
    start = time.perf_counter()
    config, env = run.config, run.env
    lr = lr_at(run.step + 1, lr=config.lr, min_lr=config.min_lr, total_steps=run.total_steps, warmup=run.warmup)
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)  # train_blocks: the rest at rest_lr_scale
    loss_sum = torch.zeros((), device=env.device)
    for micro in range(run.loader.micro_steps):
        batch = run.loader.batch(run.step, micro).to(env.device, non_blocking=True)
        with grad_sync(run.model if config.fsdp else run.step_loss, micro == run.loader.micro_steps - 1):
            with torch.autocast(env.device.type, dtype=run.autocast) if run.autocast else nullcontext():
                loss = run.forward(batch, _teacher_states(run, micro, batch[:, :-1])) / run.loader.micro_steps
            loss.backward()
        loss_sum += loss.detach()
    norm = clip(run.model, config.grad_clip)
    # One collective per step: the mean loss, whether any rank saw a non-finite value, a stop request.
    flags = torch.stack(
        [
            loss_sum.float(),
            (~torch.isfinite(loss_sum) | ~torch.isfinite(norm)).float(),
            torch.tensor(float(stop_requested), device=env.device),
        ]
    )
    if env.world > 1:
        torch.distributed.all_reduce(flags)
    train_loss, nonfinite, stop = (flags[0] / env.world).item(), flags[1].item() > 0, flags[2].item() > 0
    run.step += 1
    if nonfinite and config.on_nonfinite == "stop":
        kept = (
            f"; the last good checkpoint is {run.last_checkpoint}"
            if run.last_checkpoint
            else "; no checkpoint was written yet"
        )
        raise InherituneError(
            f"non-finite loss at step {run.step} (loss {train_loss}){kept} (lower --lr, or pass --on-nonfinite skip)"
        )
    if not nonfinite:  # a skipped batch makes no update
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.train_seconds += time.perf_counter() - start
    return lr, train_loss, nonfinite, stop


def _log_step(
    run: _Run, lr: float, train_loss: float, tok_s: float, nonfinite: bool, at_eval: bool, show: bool
) -> None:
    """One log row (and the evaluation, when scheduled)."""
    row = {
        "step": run.step,
        "tokens": run.step * run.tokens_per_step,
        "lr": lr,
        "train_loss": train_loss,
        "tokens_per_s": tok_s,
        "mfu": run.flops * tok_s / (run.peak * run.env.world),
        "wall_time": run.train_seconds,
    }
    if nonfinite:
        row["skipped"] = True
    if at_eval:
        row["val_loss"] = _evaluate(run, run.step)
        if show:
            tqdm.write(
                f"step {run.step}/{run.total_steps}  tokens {run.step * run.tokens_per_step}  "
                f"train {train_loss:.4f}  val {row['val_loss']:.4f}  {tok_s:.0f} tok/s"
            )
    run.log.write(row)


def _finalize(run: _Run) -> TrainResult:
    """The final model folder and result.json; a replacement is swapped in only now."""
    full = full_state(run.model, run.optimizer, run.config.fsdp, optimizer_too=False)
    result = TrainResult(
        run.run_dir,
        run.run_dir / "final",
        steps=run.step,
        tokens=run.step * run.tokens_per_step,
        final_val_loss=run.val_history[-1]["val_loss"],
        val_history=run.val_history,
        wall_time=run.train_seconds,
        teacher_cache=run.cache.stats() if run.cache is not None else None,
    )
    if run.env.main:
        with atomic_dir(run.work / "final", overwrite=True) as tmp:
            run.model.save_pretrained(tmp, safe_serialization=True, state_dict=full[0])
            if run.tokenizer is not None:
                run.tokenizer.save_pretrained(tmp)
            write_card(tmp, _card(run, result), source=read_json(run.work / "config.json", "run config")["model"])
        atomic_write_json(run.work / "result.json", final_paths(result.to_json()))
        if run.work != run.run_dir:
            swap_in(run.work, run.run_dir)  # the new run is complete: only now is the old one replaced
    barrier(run.env)
    return result


def _card(run: _Run, result: TrainResult) -> dict:
    """The final model's card facts: how it was trained and where it ended."""
    c = run.config
    loss = (
        f"distillation from {c.distill_from} (alpha {c.distill_alpha}, T {c.distill_temperature})"
        if c.distill_from
        else "cross-entropy"
    )
    return {
        "command": "train",
        "loss": loss,
        "training tokens": result.tokens,
        "trained": c.train_blocks,
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


def _teacher_states(run: _Run, micro: int, inputs: torch.Tensor):
    """What the loss reads of the teacher for this micro-batch: from the cache when there is one."""
    if run.teacher_states is None:
        return None
    if run.cache is None:
        return run.teacher_states(inputs)
    return run.cache.states(run.loader.starts(run.step, micro), inputs, run.teacher_states)


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


def _how_to_continue(run_dir: Path, work: Path) -> str:
    if work == run_dir:
        return "continue with --resume"
    return f"rerun the same command to continue the replacement ({run_dir} is kept until it completes)"


def _check_same_recipe(run_dir: Path, config: TrainConfig) -> None:
    """A resumed run must follow the same recipe, or its curve would not continue the original."""
    stored = read_json(run_dir / "config.json", "run config")["config"]
    stored = {**dataclasses.asdict(TrainConfig()), **stored}  # an option added since the run: it ran at its default
    for key, old, value in differences(stored, dataclasses.asdict(config), RESUMABLE_CHANGES)[:1]:
        raise InherituneError(
            f"{run_dir} was started with {key}={old}, not {value}; "
            f"resume with the same recipe (or start over with --overwrite)"
        )


@contextmanager
def _stop_signals():
    """SIGINT/SIGTERM set a flag: the loop finishes its step, checkpoints and stops. A second one kills."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def handler(signum, frame):
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        print(
            f"inheritune: {signal.Signals(signum).name} received: finishing the step and writing a checkpoint",
            file=sys.stderr,
        )

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested.is_set
    finally:
        for s, h in old.items():
            signal.signal(s, h)
