"""What a train run wrote: ``TrainResult`` (result.json in the run folder)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inheritune.result import CommandResult, Record


@dataclass
class ValPoint(Record):
    """One evaluation of the val-loss yardstick during a run."""

    step: int
    tokens: int
    val_loss: float
    wall_time: float  # training seconds before it


@dataclass
class CacheStats(Record):
    """Where a run read its teacher states, and how many windows it read or computed (this call)."""

    folder: str
    form: str  # what is stored per token: hidden states or the top-K logits
    windows_read: int
    windows_computed: int
    compute_seconds: float
    bytes_per_token: int


@dataclass
class TrainingMemory(Record):
    """What training holds in memory, measured from the tensors at this invocation's first optimizer
    step (this rank's share under FSDP), and the process's peak: what LoRA or --train-blocks save."""

    trainable_parameters: int
    weight_bytes: int  # every parameter, frozen ones included
    gradient_bytes: int
    optimizer_bytes: int  # AdamW's moments (and any other optimizer state)
    peak_bytes: int  # the device's peak allocation (GPU), or the process's peak resident set (CPU)

    @property
    def training_bytes(self) -> int:
        """Gradients and optimizer state: what training adds to holding the weights."""
        return self.gradient_bytes + self.optimizer_bytes


@dataclass
class TrainResult(CommandResult):
    """What ``train`` wrote; result.json in the run folder holds it."""

    run_dir: Path
    model_dir: Path  # RUN/final: HF folder (safetensors + tokenizer) of the final model
    steps: int
    tokens: int  # training tokens consumed
    final_val_loss: float
    val_history: list[ValPoint]  # including step 0 and the end
    wall_time: float  # seconds of optimizer steps (teacher included; evaluations and checkpoints not), over all resumes
    teacher_cache: CacheStats | None = None  # distilling through the teacher cache
    memory: TrainingMemory | None = None  # None when this invocation made no optimizer step

    def summary(self) -> str:
        """What the CLI prints (the files hold the rest)."""
        held = (
            f"; gradients + optimizer state {self.memory.training_bytes / 2**20:.1f} MiB"
            if self.memory is not None
            else ""
        )
        return (
            f"trained {self.steps} steps ({self.tokens} tokens) in {self.wall_time:.1f}s: val loss "
            f"{self.val_history[0].val_loss:.4f} -> {self.final_val_loss:.4f}{held}; model -> {self.model_dir}"
        )
