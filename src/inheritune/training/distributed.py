"""Data parallelism through torchrun: read its environment, wrap the model in DDP or FSDP2.

torchrun does all process management (``torchrun --nproc_per_node=K -m inheritune train ...``;
multi-node through its ``--nnodes/--node-rank/--rdzv-*`` flags). Without torchrun's variables
this is a single process and nothing is initialised.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

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
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[env.local_rank] if env.device.type == "cuda" else None)


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2: parameters, gradients and optimizer state sharded per block, gathered just in time."""
    from torch.distributed.fsdp import fully_shard

    for block in blocks(model):
        fully_shard(block)
    return fully_shard(model)
