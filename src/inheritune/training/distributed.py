"""Data parallelism through torchrun: read its environment, wrap the model in DDP or FSDP2.

torchrun does all process management (``torchrun --nproc_per_node=K -m inheritune train ...``;
multi-node through its ``--nnodes/--node-rank/--rdzv-*`` flags). Without torchrun's variables
this is a single process and nothing is initialised. Also the training step's helpers that
differ under DDP/FSDP2: barriers, gradient sync, clipping, gathering the full state.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import cast

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from transformers import PreTrainedModel

from inheritune.models.families import blocks


@dataclass(frozen=True)
class Dist:
    rank: int
    local_rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup() -> Dist:
    """One process per device: NCCL on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, local_rank, world, device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def data_parallel(module: torch.nn.Module, env: Dist) -> torch.nn.Module:
    """DDP: every rank holds the whole model; gradients are all-reduced in buckets during backward."""
    if env.world == 1:
        return module
    return DistributedDataParallel(module, device_ids=[env.local_rank] if env.device.type == "cuda" else None)


def shard(model: PreTrainedModel) -> torch.nn.Module:
    """FSDP2: parameters, gradients and optimizer state sharded per block, gathered just in time."""
    from torch.distributed.fsdp import fully_shard  # FSDP2: slow to import, only under --fsdp

    for block in blocks(model):
        fully_shard(block)
    return cast(torch.nn.Module, fully_shard(model))  # the model itself, its class made an FSDPModule too


# --- the training step's parallel-aware helpers ----------------------------------------------


def barrier(env: Dist) -> None:
    if env.world > 1:
        torch.distributed.barrier()


def prepare(model: PreTrainedModel, device: torch.device) -> None:
    """fp32 master weights on the device, no dropout (the paper's recipe), SDPA attention."""
    model.to(device=device, dtype=torch.float32)  # type: ignore[call-arg]  # functools.wraps types .to unbound
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = 0.0  # type: ignore[assignment]  # torch types Module attributes as Tensor | Module
    if getattr(model.config, "_attn_implementation", None) == "eager":
        with suppress(ValueError, ImportError):  # the family has no SDPA kernel: eager it stays
            model.set_attn_implementation("sdpa")
    model.train()


def load_optimizer(model, optimizer, state: dict, fsdp: bool) -> None:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict  # FSDP2 only

        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state)


def full_state(model, optimizer, fsdp: bool, optimizer_too: bool = True) -> tuple[dict | None, dict | None]:
    """(model state, optimizer state) in full, gathered from shards under FSDP2 (None = take them as they are)."""
    if not fsdp:
        return None, optimizer.state_dict() if optimizer_too else None
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,  # FSDP2 only
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return (
        get_model_state_dict(model, options=options),
        get_optimizer_state_dict(model, optimizer, options=options) if optimizer_too else None,
    )


@contextmanager
def grad_sync(model, sync: bool):
    """Gradient accumulation: all-reduce (DDP) or reduce-scatter (FSDP2) only on a step's last micro-batch."""
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(sync)
        yield
    elif isinstance(model, torch.nn.parallel.DistributedDataParallel) and not sync:
        with model.no_sync():
            yield
    else:
        yield


def clip(model, max_norm: float) -> torch.Tensor:
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm
