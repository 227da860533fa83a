"""AdamW with weight decay on matrices only, and the warmup + cosine learning-rate schedule.

The schedule is a pure function of the step, so resuming needs no scheduler state.
"""

from __future__ import annotations

import inspect
import math

import torch


def make_optimizer(
    model: torch.nn.Module,
    *,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    sharded: bool = False,
    scales: dict[str, float] | None = None,
) -> torch.optim.AdamW:
    """AdamW: >=2-D weights decay, biases and norm gains do not (the paper's recipe); each group
    carries its ``lr_scale`` (``scales``, per parameter name: training/healing.py), frozen
    parameters are left out. ``sharded``: the parameters are FSDP2 DTensors (no fused kernel)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # tied weights appear once
    scales = scales or {}
    groups = []
    for scale in sorted({scales.get(n, 1.0) for n, _ in params}, reverse=True):
        for decay in (True, False):
            chosen = [p for n, p in params if scales.get(n, 1.0) == scale and (p.dim() >= 2) == decay]
            if chosen:
                groups.append({"params": chosen, "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale})
    # The fused kernel is one pass over all tensors (CPU and CUDA); DTensors (FSDP2) take foreach.
    fused = not sharded and "fused" in inspect.signature(torch.optim.AdamW).parameters
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)


def lr_at(step: int, *, lr: float, min_lr: float, total_steps: int, warmup: int) -> float:
    """Learning rate of optimizer step ``step`` (1-based): linear warmup to ``lr``, then cosine to ``min_lr``."""
    if step <= warmup:
        return lr * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))
