"""AdamW with weight decay on matrices only, and the warmup + cosine learning-rate schedule.

The schedule is a pure function of the step, so resuming needs no scheduler state.
"""
from __future__ import annotations

import inspect
import math

import torch

from inheritune.training.config import TrainConfig


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over two groups: >=2-D weights decay, biases and norm gains do not (the paper's recipe)."""
    params = [p for p in model.parameters() if p.requires_grad]  # tied weights appear once
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # The fused kernel is one pass over all tensors (CPU and CUDA); DTensors (FSDP2) take foreach.
    fused = not config.fsdp and "fused" in inspect.signature(torch.optim.AdamW).parameters
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=fused or None)


def lr_at(step: int, config: TrainConfig, total_steps: int, warmup: int) -> float:
    """Learning rate of optimizer step ``step`` (1-based): linear warmup, then cosine to ``min_lr``."""
    if step <= warmup:
        return config.lr * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))
