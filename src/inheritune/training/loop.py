"""The training loop: optimizer steps from a ``TrainState`` to the end of its schedule.

For each step, accumulate gradients over the micro-batches, clip, step; every so often evaluate,
log and checkpoint. Everything that decides the loss curve (weights, optimizer moments, the step
number, RNG) goes into the checkpoint, and the batches are a pure function of (seed, step), so a
killed run resumes on the same curve. SIGINT/SIGTERM end the run after a checkpoint.
"""

from __future__ import annotations

import dataclasses
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

from inheritune.data.loader import TrainLoader
from inheritune.data.shards import TokenData
from inheritune.errors import InherituneError, TrainingInterrupted
from inheritune.evaluation.val_loss import val_loss
from inheritune.training import checkpoint, distributed, teacher_cache
from inheritune.training.distributed import barrier, clip, full_state, grad_sync, load_optimizer
from inheritune.training.logs import RunLog
from inheritune.training.lora import Adapters
from inheritune.training.optim import lr_at
from inheritune.training.train_config import TrainConfig
from inheritune.training.train_result import TrainingMemory, ValPoint


@dataclass
class TrainState:
    """Everything the loop reads and updates (built by ``trainer``)."""

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
    val_history: list[ValPoint] = dataclasses.field(default_factory=list)
    train_seconds: float = 0.0
    last_checkpoint: Path | None = None
    adapters: Adapters | None = None  # LoRA (training/lora.py): the model's linear layers hold them
    memory: TrainingMemory | None = None  # measured at this invocation's first optimizer step


def evaluate_now(run: TrainState, at: int) -> float:
    """The yardstick val loss at step ``at``, appended to the history."""
    result = val_loss(run.model, run.data, batch_size=run.config.batch_size)
    run.val_history.append(ValPoint(at, at * run.tokens_per_step, result["loss"], run.train_seconds))
    return result["loss"]


def save_checkpoint(run: TrainState, at: int) -> None:
    """A checkpoint of everything that decides the rest of the curve (rank 0 writes it)."""
    full = full_state(run.model, run.optimizer, run.config.fsdp)
    if run.env.main:
        rng = {"torch": torch.get_rng_state()} | (
            {"cuda": torch.cuda.get_rng_state()} if run.env.device.type == "cuda" else {}
        )
        state = {
            "step": at,
            "tokens": at * run.tokens_per_step,
            "val_history": [point.to_json() for point in run.val_history],
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


def restore_checkpoint(run: TrainState, state: dict) -> None:
    """Optimizer moments, RNG, step, history and training time of a checkpoint (``save_checkpoint``'s state)."""
    run.train_seconds = state.get("wall_time", 0.0)
    load_optimizer(run.model, run.optimizer, state["optimizer"], run.config.fsdp)
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and run.env.device.type == "cuda":
        torch.cuda.set_rng_state(state["rng"]["cuda"])
    run.step, run.val_history = state["step"], [ValPoint.from_json(p) for p in state["val_history"]]


def fit(run: TrainState) -> None:
    """The optimizer steps, from ``run.step`` to the end: evaluate, log and checkpoint as scheduled;
    a stop signal ends the run after a checkpoint (``TrainingInterrupted``)."""
    if run.fresh:
        run.log.write({"step": 0, "tokens": 0, "lr": 0.0, "val_loss": evaluate_now(run, 0), "wall_time": 0.0})
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
    with stop_signals() as stop_requested:
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
                save_checkpoint(run, run.step)
                last_time = time.perf_counter()  # tokens/s counts training time only
            if stop and run.step < run.total_steps:
                bar.close()
                run.log.close()
                raise TrainingInterrupted(
                    f"stopped by signal after step {run.step}/{run.total_steps}; checkpoint "
                    f"{run.last_checkpoint or run.work / 'checkpoints'} written; "
                    f"{how_to_continue(run.run_dir, run.work)}"
                )
    bar.close()
    run.log.close()


def _optimizer_step(run: TrainState, stop_requested: bool) -> tuple[float, float, bool, bool]:
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
        if run.memory is None:
            run.memory = held_memory(run.model, run.optimizer)
    run.optimizer.zero_grad(set_to_none=True)
    run.train_seconds += time.perf_counter() - start
    return lr, train_loss, nonfinite, stop


def held_memory(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> TrainingMemory:
    """The bytes of the weights, the gradients and the optimizer state, read off the tensors themselves
    (this rank's shards under FSDP), with the peak so far."""

    def size(t: torch.Tensor) -> int:
        local = t.to_local() if hasattr(t, "to_local") else t  # an FSDP DTensor: this rank's shard
        return local.numel() * local.element_size()

    params = list(model.parameters())
    state = [v for entry in optimizer.state.values() for v in entry.values() if isinstance(v, torch.Tensor)]
    return TrainingMemory(
        trainable_parameters=sum(p.numel() for p in params if p.requires_grad),
        weight_bytes=sum(size(p) for p in params),
        gradient_bytes=sum(size(p.grad) for p in params if p.grad is not None),
        optimizer_bytes=sum(size(v) for v in state),
        peak_bytes=peak_bytes(params[0].device),
    )


def peak_bytes(device: torch.device) -> int:
    """The device's peak allocation (GPU), or this process's peak resident set (CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def _log_step(
    run: TrainState, lr: float, train_loss: float, tok_s: float, nonfinite: bool, at_eval: bool, show: bool
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
        row["val_loss"] = evaluate_now(run, run.step)
        if show:
            tqdm.write(
                f"step {run.step}/{run.total_steps}  tokens {run.step * run.tokens_per_step}  "
                f"train {train_loss:.4f}  val {row['val_loss']:.4f}  {tok_s:.0f} tok/s"
            )
    run.log.write(row)


def _teacher_states(run: TrainState, micro: int, inputs: torch.Tensor):
    """What the loss reads of the teacher for this micro-batch: from the cache when there is one."""
    if run.teacher_states is None:
        return None
    if run.cache is None:
        return run.teacher_states(inputs)
    return run.cache.states(run.loader.starts(run.step, micro), inputs, run.teacher_states)


def how_to_continue(run_dir: Path, work: Path) -> str:
    if work == run_dir:
        return "continue with --resume"
    return f"rerun the same command to continue the replacement ({run_dir} is kept until it completes)"


@contextmanager
def stop_signals():
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
