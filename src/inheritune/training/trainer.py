"""The training loop of the recipe: one function, ``train``, used by the CLI, grow and run.

Read top to bottom: set up the run folder, model and data; resume from a checkpoint if asked;
then for each optimizer step accumulate gradients over micro-batches, clip, step, and every
so often evaluate, log and checkpoint. Everything that decides the loss curve (weights,
optimizer moments, the step number, RNG) is in the checkpoint, and the batches are a pure
function of (seed, step), so a killed run resumes on the same curve. A fresh run that replaces
another one is written beside it and swapped in at the end (``io.build_dir``/``io.swap_in``).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import PreTrainedModel

from inheritune.data.loader import TrainLoader
from inheritune.data.shards import open_data
from inheritune.errors import InherituneError
from inheritune.evaluation.loss import YARDSTICK, val_context, val_loss
from inheritune.io import (atomic_dir, atomic_write_json, build_dir, building, check_output_dir, current_paths,
                           final_paths, read_json, swap_in)
from inheritune.models.families import context_length
from inheritune.models.loading import load_model, load_tokenizer, parameter_count, tokenizer_fingerprint
from inheritune.training import checkpoint, distributed
from inheritune.training.config import TrainConfig, make_config
from inheritune.training.flops import flops_per_token, matmul_peak
from inheritune.training.logs import RunLog
from inheritune.training.loss import CausalLMLoss, Teacher
from inheritune.training.optim import lr_at, make_optimizer

# What a run folder holds before its first checkpoint (a run killed then may be started over).
RUN_FILES = {"config.json", "log.jsonl", "log.csv", "checkpoints", "tensorboard"}
# Options that may change between a run and its resumption: they do not touch the loss curve.
RESUMABLE_CHANGES = {"eval_every", "checkpoint_every", "keep_checkpoints", "log_every",
                     "compile", "peak_flops", "progress", "trust_remote_code"}


@dataclass
class TrainResult:
    run_dir: Path
    model_dir: Path  # RUN/final: HF folder (safetensors + tokenizer) of the final model
    steps: int
    tokens: int  # training tokens consumed
    final_val_loss: float
    val_history: list[dict]  # [{"step", "tokens", "val_loss", "wall_time"}...] including step 0 and the end
    wall_time: float  # seconds of optimizer steps (teacher included; evaluations and checkpoints not), over all resumes

    def to_json(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> TrainResult:
        return cls(**{**d, "run_dir": Path(d["run_dir"]), "model_dir": Path(d["model_dir"])})


class TrainingInterrupted(InherituneError):
    """SIGINT/SIGTERM: the step finished and a checkpoint was written; ``--resume`` continues."""


def train(model: str | Path | PreTrainedModel, data: str | Path, out: str | Path,
          config: TrainConfig | None = None, *, tokenizer=None, resume: bool = False,
          overwrite: bool = False, teacher: PreTrainedModel | None = None, **overrides) -> TrainResult:
    """Train ``model`` on the prepared data folder ``data``; the run folder ``out`` holds everything.

    ``resume=True``: a finished run of the same length returns its stored result (another
    length is refused), an unfinished one continues from its latest valid checkpoint, and one
    with no checkpoint yet (killed before its first) starts over. ``teacher`` is an in-memory
    model for ``config.distill_from`` (grow passes the reference it already holds).

    A fresh run over a non-empty ``out`` (``overwrite``) is built beside it in ``.NAME.new`` and
    swapped in only once complete: a failure or kill at any step leaves the previous run as it
    was. Rerunning the same command continues that replacement from its latest checkpoint (or
    starts it over if the recipe, model or data changed); ``resume`` still means the run in ``out``.
    """
    config = make_config(config, **overrides)
    out = Path(out)
    continuing = resume and ((out / "result.json").is_file() or any(checkpoint.checkpoint_dir(out).glob("step-*")))
    work = build_dir(out, continuing)
    with _quiet_hf(), building(out, work):
        return _train(model, data, out, work, config, tokenizer, resume, overwrite, teacher)


def _finished(run_dir: Path, config: TrainConfig) -> TrainResult | None:
    """The stored result of a finished run, if it ran the length asked for now."""
    if not (run_dir / "result.json").is_file():
        return None
    result = TrainResult.from_json(current_paths(read_json(run_dir / "result.json", "run result")))
    stored = read_json(run_dir / "config.json", "run config")
    asked = config.total_steps(stored["tokens_per_step"])
    if asked != result.steps:
        raise InherituneError(f"{run_dir} finished at {result.steps} steps ({result.tokens} tokens) and cannot be "
                              f"extended to {asked} steps: its cosine schedule already ended; train a new run "
                              f"from {result.model_dir} or start over with --overwrite")
    return result


def _train(model, data, run_dir: Path, work: Path, config: TrainConfig, tokenizer, resume: bool, overwrite: bool,
           teacher_model: PreTrainedModel | None) -> TrainResult:
    """``run_dir`` is the run's folder; ``work`` is where this invocation writes it (``run_dir``, or
    the sibling a replacement is built in, swapped in at the end)."""
    if resume and (done := _finished(run_dir, config)) is not None:
        return done
    env = distributed.setup()
    resuming = resume and run_dir.exists()
    if not resuming:
        check_output_dir(run_dir, overwrite)  # fail fast; nothing is written until every check has passed

    # --- data, model, tokenizer: everything checked before any training -------------------
    tokens_data = open_data(data)
    tokens_data.shards("val")  # a damaged validation split fails now, not at the first evaluation
    if isinstance(model, PreTrainedModel):
        model_name = f"<in-memory {type(model).__name__}>"
    else:
        model_name = str(model)
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model, config.trust_remote_code)
        model = load_model(model, trust_remote_code=config.trust_remote_code)
    if tokenizer is not None:
        tokens_data.check_tokenizer(tokenizer_fingerprint(tokenizer), f"the model's tokenizer ({model_name})")
    max_positions = context_length(model.config)
    if max_positions is not None and config.seq_len > max_positions:
        raise InherituneError(f"seq_len {config.seq_len} is larger than the model supports ({max_positions} positions)")
    micro_tokens = config.batch_size * config.seq_len * env.world
    tokens_per_step = config.tokens_per_step or micro_tokens
    if tokens_per_step % micro_tokens:
        raise InherituneError(f"tokens_per_step {tokens_per_step} is not a multiple of batch_size x seq_len x ranks "
                              f"= {config.batch_size} x {config.seq_len} x {env.world} = {micro_tokens}")
    total_steps = config.total_steps(tokens_per_step)
    warmup, eval_every, checkpoint_every = config.schedule(total_steps)
    loader = TrainLoader(tokens_data, config.seq_len, config.batch_size, tokens_per_step // config.seq_len,
                         config.seed, env.rank, env.world)
    teacher = _teacher(config, teacher_model, tokens_data, model)

    # --- resume: the latest checkpoint that loads (of the run, or of a replacement a kill stopped) --
    model_name = final_paths(model_name)
    found = _resume_point(run_dir, resuming, overwrite, config, env)
    if work != run_dir:
        found = _continue_beside(work, config, model_name, final_paths(str(data)), env)
    if found is None:  # a fresh run: clear the folder it writes (never the run it replaces)
        _barrier(env)  # every rank has looked before rank 0 clears
        if env.main and work.exists():
            shutil.rmtree(work)
        _barrier(env)

    autocast = autocast_dtype(config.precision, env.device)
    _prepare(model, env.device)
    if found is not None:
        checkpoint.load_into(model, found[2], found[0])
    flops = flops_per_token(model, config.seq_len)
    n_params = parameter_count(model)
    torch.manual_seed(config.seed)
    if teacher is not None:
        teacher.model.to(device=env.device, dtype=torch.float32).eval()
    if config.fsdp:  # the HF model is the FSDP root, so evaluation and saving can call it directly
        distributed.shard(model)
        step_loss = CausalLMLoss(model, fused=False, teacher=teacher)
    else:
        step_loss = distributed.data_parallel(CausalLMLoss(model, teacher=teacher), env)
    optimizer = make_optimizer(model, config)
    step, val_history, train_seconds = 0, [], 0.0
    if found is not None:
        state = found[1]
        train_seconds = state.get("wall_time", 0.0)
        _load_optimizer(model, optimizer, state["optimizer"], config.fsdp)
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and env.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"])
        step, val_history = state["step"], state["val_history"]
    forward = torch.compile(step_loss) if config.compile else step_loss

    if env.main:
        atomic_write_json(work / "config.json", {
            "config": dataclasses.asdict(config), "model": model_name, "data": final_paths(str(data)), "world": env.world,
            "precision": "bf16" if autocast else "fp32", "tokens_per_step": tokens_per_step,
            "micro_steps": loader.micro_steps, "total_steps": total_steps, "warmup_steps": warmup,
            "eval_every": eval_every, "checkpoint_every": checkpoint_every, "parameters": n_params,
            "flops_per_token": flops, "tokenizer_fingerprint": tokens_data.fingerprint,
            "train_loss": "distillation mix (see training/loss.py)" if teacher else "cross-entropy",
            "val_loss": {**YARDSTICK, "context": val_context(model)},
        })
    log = RunLog(work, keep_until=step if found is not None else None, enabled=env.main)
    peak = config.peak_flops or (matmul_peak(env.device, autocast or torch.float32) if env.main else 1.0)

    def evaluate(at: int) -> float:
        result = val_loss(model, tokens_data, batch_size=config.batch_size)
        val_history.append({"step": at, "tokens": at * tokens_per_step, "val_loss": result["loss"],
                            "wall_time": train_seconds})
        return result["loss"]

    def save(at: int) -> Path | None:
        full = _full_state(model, optimizer, config.fsdp)
        path = None
        if env.main:
            rng = {"torch": torch.get_rng_state()} | ({"cuda": torch.cuda.get_rng_state()} if env.device.type == "cuda" else {})
            state = {"step": at, "tokens": at * tokens_per_step, "val_history": val_history, "wall_time": train_seconds,
                     "optimizer": full[1], "rng": rng,
                     "loader": {"seed": config.seed, "seq_len": config.seq_len, "tokens_per_step": tokens_per_step}}
            path = checkpoint.save(work, at, model, tokenizer, state, config.keep_checkpoints, full[0])
        _barrier(env)
        return path

    if found is None:
        loss0 = evaluate(0)
        log.write({"step": 0, "tokens": 0, "lr": 0.0, "val_loss": loss0, "wall_time": 0.0})
    show = env.main and config.progress
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
               disable=not (show and sys.stderr.isatty()))
    last_time, last_step, last_ckpt = time.perf_counter(), step, found[0] if found else None
    with _stop_signals() as stop_requested:
        while step < total_steps:
            step_start = time.perf_counter()
            lr = lr_at(step + 1, config, total_steps, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=env.device)
            for micro in range(loader.micro_steps):
                batch = loader.batch(step, micro).to(env.device, non_blocking=True)
                with _grad_sync(model if config.fsdp else step_loss, micro == loader.micro_steps - 1):
                    with torch.autocast(env.device.type, dtype=autocast) if autocast else nullcontext():
                        loss = forward(batch) / loader.micro_steps
                    loss.backward()
                loss_sum += loss.detach()
            norm = _clip(model, config.grad_clip)
            # One collective per step: the mean loss, whether any rank saw a non-finite value, a stop request.
            flags = torch.stack([loss_sum.float(), (~torch.isfinite(loss_sum) | ~torch.isfinite(norm)).float(),
                                 torch.tensor(float(stop_requested()), device=env.device)])
            if env.world > 1:
                torch.distributed.all_reduce(flags)
            train_loss, nonfinite, stop = (flags[0] / env.world).item(), flags[1].item() > 0, flags[2].item() > 0
            step += 1
            if nonfinite and config.on_nonfinite == "stop":
                kept = f"; the last good checkpoint is {last_ckpt}" if last_ckpt else "; no checkpoint was written yet"
                raise InherituneError(f"non-finite loss at step {step} (loss {train_loss}){kept} "
                                      f"(lower --lr, or pass --on-nonfinite skip)")
            if nonfinite:
                optimizer.zero_grad(set_to_none=True)  # skip this batch: no update
            else:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            train_seconds += time.perf_counter() - step_start
            bar.update(1)
            at_eval = step % eval_every == 0 or step == total_steps
            if step % config.log_every == 0 or at_eval or nonfinite:
                now = time.perf_counter()
                tok_s = (step - last_step) * tokens_per_step / max(now - last_time, 1e-9)
                row = {"step": step, "tokens": step * tokens_per_step, "lr": lr, "train_loss": train_loss,
                       "tokens_per_s": tok_s, "mfu": flops * tok_s / (peak * env.world), "wall_time": train_seconds}
                if nonfinite:
                    row["skipped"] = True
                if at_eval:
                    row["val_loss"] = evaluate(step)
                    if show:
                        tqdm.write(f"step {step}/{total_steps}  tokens {step * tokens_per_step}  "
                                   f"train {train_loss:.4f}  val {row['val_loss']:.4f}  {tok_s:.0f} tok/s")
                log.write(row)
                bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tok_s:.0f}")
                last_time, last_step = time.perf_counter(), step
            if step % checkpoint_every == 0 or step == total_steps or stop:
                last_ckpt = save(step)
                last_time = time.perf_counter()  # tokens/s counts training time only
            if stop and step < total_steps:
                bar.close()
                log.close()
                raise TrainingInterrupted(f"stopped by signal after step {step}/{total_steps}; checkpoint "
                                          f"{last_ckpt or work / 'checkpoints'} written; {_how_to_continue(run_dir, work)}")
    bar.close()
    log.close()

    full = _full_state(model, optimizer, config.fsdp, optimizer_too=False)
    result = TrainResult(run_dir, run_dir / "final", step, step * tokens_per_step, val_history[-1]["val_loss"],
                         val_history, train_seconds)
    if env.main:
        with atomic_dir(work / "final", overwrite=True) as tmp:
            model.save_pretrained(tmp, safe_serialization=True, state_dict=full[0])
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
        atomic_write_json(work / "result.json", final_paths(result.to_json()))
        if work != run_dir:
            swap_in(work, run_dir)  # the new run is complete: only now is the old one replaced
    _barrier(env)
    return result


# --- helpers, in the order the loop uses them ---------------------------------------------

@contextmanager
def _quiet_hf():
    """Our bar and log lines are the output: no 'Writing model shards' bar at every checkpoint."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _barrier(env: distributed.Dist) -> None:
    if env.world > 1:
        torch.distributed.barrier()


def _teacher(config: TrainConfig, model: PreTrainedModel | None, data, student: PreTrainedModel) -> Teacher | None:
    """The distillation teacher: ``model`` when given, else loaded from ``distill_from``; its tokenizer
    must be the data's, or its distribution would be over other tokens."""
    if config.distill_from is None or config.distill_alpha == 0:
        return None  # alpha 0 is plain cross-entropy: no teacher forward at all
    if model is None:
        tokenizer = load_tokenizer(config.distill_from, config.trust_remote_code)
        data.check_tokenizer(tokenizer_fingerprint(tokenizer), f"the teacher {config.distill_from}")
        model = load_model(config.distill_from, trust_remote_code=config.trust_remote_code)
    rows = (model.get_output_embeddings().weight.shape[0], student.get_output_embeddings().weight.shape[0])
    if rows[0] != rows[1]:
        raise InherituneError(f"the teacher {config.distill_from} predicts {rows[0]} tokens and the student "
                              f"{rows[1]}: distillation needs one vocabulary")
    return Teacher(model, config.distill_alpha, config.distill_temperature)


def _resume_point(run_dir: Path, resuming: bool, overwrite: bool, config: TrainConfig, env):
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
        raise InherituneError(f"{run_dir} is not a run folder (it holds {', '.join(strays[:3])}); "
                              f"nothing to resume there")
    if env.main:
        print(f"inheritune: {run_dir} has no checkpoint yet: starting it over", file=sys.stderr)
    return None


def _continue_beside(work: Path, config: TrainConfig, model_name: str, data: str, env):
    """The checkpoint of a replacement that a kill stopped in ``work``, if it is this very run
    (same recipe, model and data): rerunning the command continues it instead of starting over."""
    if not (work / "config.json").is_file():
        return None
    stored = read_json(work / "config.json", "run config")
    if _recipe_differences(stored["config"], config) or (stored.get("model"), stored.get("data")) != (model_name, data):
        return None
    if env.main:
        checkpoint.clean_partial(work)
    found = checkpoint.latest(work)
    if found is not None and env.main:
        print(f"inheritune: continuing the replacement run in {work} from {found[0].name}", file=sys.stderr)
    return found


def _how_to_continue(run_dir: Path, work: Path) -> str:
    if work == run_dir:
        return "continue with --resume"
    return f"rerun the same command to continue the replacement ({run_dir} is kept until it completes)"


def _recipe_differences(stored: dict, config: TrainConfig) -> list[tuple[str, object, object]]:
    """(key, stored, asked) for every option that would change the loss curve."""
    return [(key, stored.get(key), value) for key, value in dataclasses.asdict(config).items()
            if key not in RESUMABLE_CHANGES and json.loads(json.dumps(value)) != stored.get(key)]


def _check_same_recipe(run_dir: Path, config: TrainConfig) -> None:
    """A resumed run must follow the same recipe, or its curve would not continue the original."""
    for key, old, value in _recipe_differences(read_json(run_dir / "config.json", "run config")["config"], config)[:1]:
        raise InherituneError(f"{run_dir} was started with {key}={old}, not {value}; "
                              f"resume with the same recipe (or start over with --overwrite)")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast (fp32 master weights) where it is faster: GPUs with bf16, CPUs with native bf16
    matmuls (AVX512-BF16/AMX; measured here: 900 vs 200 GFLOP/s fp32). Elsewhere bf16 is emulated: fp32."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        fast = torch.cuda.is_bf16_supported()
    else:
        fast = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if precision == "bf16" and not fast and device.type == "cuda":
        raise InherituneError(f"precision bf16 is not supported on {device}; use --precision fp32")
    return torch.bfloat16 if fast or precision == "bf16" else None


def _prepare(model: PreTrainedModel, device: torch.device) -> None:
    """fp32 master weights on the device, no dropout (the paper's recipe), SDPA attention."""
    model.to(device=device, dtype=torch.float32)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = 0.0
    if getattr(model.config, "_attn_implementation", None) == "eager":
        try:
            model.set_attn_implementation("sdpa")
        except (ValueError, ImportError):  # the family has no SDPA kernel: eager it stays
            pass
    model.train()


def _load_optimizer(model, optimizer, state: dict, fsdp: bool) -> None:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state)


def _full_state(model, optimizer, fsdp: bool, optimizer_too: bool = True) -> tuple[dict | None, dict | None]:
    """(model state, optimizer state) in full, gathered from shards under FSDP2 (None = take them as they are)."""
    if not fsdp:
        return None, optimizer.state_dict() if optimizer_too else None
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return (get_model_state_dict(model, options=options),
            get_optimizer_state_dict(model, optimizer, options=options) if optimizer_too else None)


@contextmanager
def _grad_sync(model, sync: bool):
    """Gradient accumulation: all-reduce (DDP) or reduce-scatter (FSDP2) only on a step's last micro-batch."""
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(sync)
        yield
    elif isinstance(model, torch.nn.parallel.DistributedDataParallel) and not sync:
        with model.no_sync():
            yield
    else:
        yield


def _clip(model, max_norm: float) -> torch.Tensor:
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


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
        print(f"inheritune: {signal.Signals(signum).name} received: finishing the step and writing a checkpoint",
              file=sys.stderr)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested.is_set
    finally:
        for s, h in old.items():
            signal.signal(s, h)
