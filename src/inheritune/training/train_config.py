"""The training recipe as one dataclass: Python arguments, YAML keys and CLI options are its fields.

Defaults are the paper's (AdamW 0.9/0.95, weight decay 0.1, peak lr 2e-4, warmup then cosine to
1e-5, grad clip 1.0, no dropout). ``distill_from`` adds knowledge distillation from a teacher
that shares the tokenizer (see training/objective.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import yaml

from inheritune.errors import InherituneError
from inheritune.options import build, check_keys
from inheritune.specs import ALL_BLOCKS, ALL_LINEAR, HIDDEN, LoraTargets, TeacherStates, TrainBlocks

PRECISIONS = ("auto", "bf16", "fp32")
NONFINITE = ("stop", "skip")

HELP = {  # the CLI's help for each field (its default is added there)
    "seq_len": "context length of training windows",
    "batch_size": "micro-batch per rank",
    "tokens_per_step": "global tokens per optimizer step; gradients accumulate to reach it (default: one micro-batch "
    "per rank)",
    "steps": "optimizer steps to train",
    "tokens": "training tokens (steps = ceil(tokens / tokens_per_step))",
    "warmup_steps": "linear warmup steps (default: min(2000, 10%% of steps))",
    "weight_decay": "AdamW weight decay on >=2-D weights",
    "grad_clip": "gradient norm clip (0: none)",
    "eval_every": "validation every K steps (default: ~10 per run; always at step 0 and the end)",
    "checkpoint_every": "checkpoint every K steps (default: eval_every; always at the end)",
    "precision": "auto (bf16 autocast where the device multiplies it natively) | bf16 | fp32",
    "on_nonfinite": "stop or skip the batch on a non-finite loss",
    "fsdp": "shard parameters with FSDP2, not DDP",
    "peak_flops": "per-device peak FLOP/s for MFU (default: measured with a matmul at start)",
    "trust_remote_code": "let the model's own code (auto_map in config.json) run when loading it",
    "skip_tokens": "start where a run of this many tokens (same seed) ended",
    "distill_from": "teacher model for knowledge distillation (same tokenizer; in grow, 'reference' = the reference)",
    "distill_alpha": "distillation weight: loss = alpha*T^2*KL(teacher||student) + (1-alpha)*CE",
    "distill_temperature": "T, the softmax temperature of the KL term",
    "teacher_cache": "auto (under $INHERITUNE_CACHE or ~/.cache/inheritune when it fits the disk) | off | FOLDER: "
    "the teacher's states stored once per training window, read back by every later run on them",
    "teacher_states": "hidden (its last hidden states: exact) | top:K (its K likeliest tokens: approximate, cheaper)",
    "train_blocks": "blocks that train at the full lr: all | last:K | cuts:K (K blocks each side of every cut a "
    "derived model has) | indices like 0-3,20; the final norm trains too",
    "rest_lr_scale": "lr multiplier of everything outside --train-blocks; 0 freezes it (no gradient or state)",
    "lora": "rank of LoRA adapters to heal with (peft; alpha 2 x rank), the model's own weights frozen; 0: full "
    "fine-tuning. Adapters want a higher --lr than full fine-tuning (1e-3 in the README's measurements)",
    "lora_targets": "modules that get adapters: all-linear (every linear layer but the LM head) or names like "
    "q_proj,v_proj",
    "lora_merge": "merge the adapters into the final model's weights; --no-lora-merge keeps final/ the base and "
    "final/adapter/ the adapters (peft's format)",
}


@dataclass
class TrainConfig:
    seq_len: int = 512
    batch_size: int = 4  # micro-batch per rank
    tokens_per_step: int | None = None  # global; None = one micro-batch per rank
    steps: int | None = None  # exactly one of steps / tokens
    tokens: int | None = None
    lr: float = 2e-4
    min_lr: float = 1e-5
    warmup_steps: int | None = None  # None = min(2000, 10% of steps)
    weight_decay: float = 0.1  # on >=2-D weights only
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # 0 disables clipping
    eval_every: int | None = None  # None = ~10 evaluations per run; always at step 0 and the end
    checkpoint_every: int | None = None  # None = same as eval_every
    keep_checkpoints: int = 2
    precision: str = "auto"  # auto | bf16 | fp32 (auto = bf16 autocast on CPU and bf16-capable GPUs)
    compile: bool = False
    seed: int = 0
    skip_tokens: int = 0  # start where a run of this many tokens (same seed) ended: grow's rounds continue one order
    on_nonfinite: str = "stop"  # stop | skip
    fsdp: bool = False
    log_every: int = 1
    peak_flops: float | None = None  # per device, for MFU; None = measure a bf16/fp32 matmul at start
    progress: bool = True  # tqdm bar (on an interactive terminal)
    trust_remote_code: bool = False  # let a model's own code (config auto_map) run when loading it
    distill_from: str | None = None  # teacher (alias, folder, .gguf, hub id): knowledge distillation
    distill_alpha: float = 1.0  # loss = alpha * T^2 * KL(teacher || student) + (1 - alpha) * CE
    distill_temperature: float = 1.0  # T: softmax temperature of both models in the KL term
    teacher_cache: str = (
        "auto"  # auto | off | FOLDER: the teacher's states stored once per window (training/teacher_cache.py)
    )
    teacher_states: TeacherStates = HIDDEN  # hidden | top:K (specs.py)
    train_blocks: TrainBlocks = ALL_BLOCKS  # all | last:K | cuts:K | indices (healing.py)
    rest_lr_scale: float = 0.0  # lr multiplier of everything else when train_blocks is not all; 0 freezes it
    lora: int = 0  # LoRA rank (training/lora.py); 0 = full fine-tuning
    lora_targets: LoraTargets = ALL_LINEAR  # all-linear | module names (training/lora.py)
    lora_merge: bool = True

    def validate(self) -> TrainConfig:
        """Check values a user can get wrong, with the option's name in the message."""
        if (self.steps is None) == (self.tokens is None):
            raise InherituneError("give exactly one of steps (--steps) or tokens (--tokens)")
        for name in ("seq_len", "batch_size", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise InherituneError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.skip_tokens < 0:
            raise InherituneError(f"skip_tokens must be >= 0, not {self.skip_tokens}")
        for name in ("steps", "tokens", "tokens_per_step", "eval_every", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InherituneError(f"{name} must be at least 1, not {value}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise InherituneError(f"warmup_steps must be >= 0, not {self.warmup_steps}")
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr):
            raise InherituneError(f"need lr > 0 and 0 <= min_lr <= lr (got lr={self.lr}, min_lr={self.min_lr})")
        if self.precision not in PRECISIONS:
            raise InherituneError(f"precision must be one of {', '.join(PRECISIONS)}, not '{self.precision}'")
        if self.on_nonfinite not in NONFINITE:
            raise InherituneError(f"on_nonfinite must be one of {', '.join(NONFINITE)}, not '{self.on_nonfinite}'")
        check_distillation(self.distill_alpha, self.distill_temperature)
        if not str(self.teacher_cache).strip():
            raise InherituneError("teacher_cache must be auto, off or a folder, not empty")
        if not isinstance(self.teacher_states, TeacherStates):  # a TrainConfig built by hand: parsed here
            self.teacher_states = TeacherStates(self.teacher_states, "teacher_states")
        if not isinstance(self.train_blocks, TrainBlocks):
            self.train_blocks = TrainBlocks(self.train_blocks, "train_blocks")
        if not 0 <= self.rest_lr_scale <= 1:
            raise InherituneError(f"rest_lr_scale must be in [0, 1], not {self.rest_lr_scale}")
        if not isinstance(self.lora_targets, LoraTargets):
            self.lora_targets = LoraTargets(self.lora_targets, "lora_targets")
        self._check_lora()
        self.betas = cast(tuple[float, float], tuple(float(b) for b in self.betas))  # its length is checked next
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise InherituneError(f"betas must be two numbers in [0, 1), not {self.betas}")
        return self

    def _check_lora(self) -> None:
        if self.lora < 0:
            raise InherituneError(f"lora must be a rank >= 1 (or 0: full fine-tuning), not {self.lora}")
        if not self.lora:
            given = [
                name
                for name, on in (("lora_targets", self.lora_targets != ALL_LINEAR), ("lora_merge", not self.lora_merge))
                if on
            ]
            if given:
                raise InherituneError(
                    f"{given[0]} is set but lora is 0 (full fine-tuning, no adapters): give lora a rank"
                )
            return
        if self.train_blocks.kind != "all":
            raise InherituneError(
                f"lora trains adapters on every block and train_blocks ({self.train_blocks}) chooses blocks to "
                "train in full: give one of them"
            )
        if self.fsdp:
            raise InherituneError("lora with fsdp is not supported: the adapters are small, train them with DDP")

    def in_full(self) -> TrainConfig:
        """This config with every parameter trained at the full lr: no block focus, no adapters."""
        return dataclasses.replace(self, train_blocks=ALL_BLOCKS, lora=0, lora_targets=ALL_LINEAR, lora_merge=True)

    def total_steps(self, tokens_per_step: int) -> int:
        # validate() lets exactly one of steps and tokens through
        return self.steps if self.steps is not None else math.ceil(cast(int, self.tokens) / tokens_per_step)

    def schedule(self, total_steps: int) -> tuple[int, int, int]:
        """(warmup, eval_every, checkpoint_every) with the defaults filled in for this run length."""
        warmup = self.warmup_steps if self.warmup_steps is not None else min(2000, total_steps // 10)
        eval_every = self.eval_every or max(1, math.ceil(total_steps / 10))
        return warmup, eval_every, self.checkpoint_every or eval_every


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def check_distillation(alpha: float, temperature: float, key: Callable[[str], str] = str) -> None:
    """The distillation weight and temperature, wherever they are set (TrainConfig's ``distill_*``,
    the recipe's ``distill`` section); ``key`` names a field as the user wrote it."""
    if not 0 <= alpha <= 1:
        raise InherituneError(f"{key('distill_alpha')} must be in [0, 1], not {alpha}")
    if not temperature > 0:
        raise InherituneError(f"{key('distill_temperature')} must be positive, not {temperature}")


def make_config(config: TrainConfig | dict | None = None, **overrides) -> TrainConfig:
    """A validated TrainConfig from a config (or dict of its fields) plus keyword overrides; values
    may be CLI strings (``"1e6"``): ``options.convert`` reads them all alike."""
    base = dataclasses.asdict(config) if isinstance(config, TrainConfig) else dict(config or {})
    base.update(overrides)
    return build(TrainConfig, base, what="training option").validate()


def read_recipe(path: str | Path) -> dict:
    """The keys of a YAML recipe; every key must be a TrainConfig field."""
    path = Path(path)
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise InherituneError(f"recipe not found: {path}") from None
    except yaml.YAMLError as e:
        raise InherituneError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(recipe, dict):
        raise InherituneError(f"recipe {path} must be a mapping of option: value")
    recipe = {str(k).replace("-", "_"): v for k, v in recipe.items()}
    check_keys(recipe, FIELDS, "key", where=f"recipe {path}: ")
    return recipe
