"""How much one batch may hold, and what happens when it is still too much.

The scoring commands (analyze, importance, prune, induction) batch their passes by a byte budget
instead of a fixed size, so that a 135M model on a laptop and a 66B model spread over GPUs both
run: :func:`budget` is a share of the free memory where the model's activations live (the
smallest free share over its devices and the host, rounded down to a power of two so that a
little background noise never changes a batch), and a :class:`Batcher` cuts the work into
pieces under that budget, halving it for the rest of the run when a piece still runs out of memory.
A piece of one item that does not fit is an error that says so, never a traceback.

Batch composition never changes a score beyond float rounding: every caller sums or concatenates
per-item results.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence, Sized
from typing import TypeVar

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from inheritune.errors import InherituneError
from inheritune.models.families import num_heads, num_layers

SHARE = 0.25  # of the free memory one batch's activations may take (the rest: weights' copies, fragmentation)
FLOOR = 64 * 2**20  # never plan below this; out-of-memory halving still goes lower
CEILING = 16 * 2**30  # past this, bigger batches buy no speed and cost latency

Items = TypeVar("Items", bound=Sized)  # a sequence or tensor: ``items[a:b]`` is a piece of the same kind
Out = TypeVar("Out")


def host_free() -> int:
    """Bytes the host can still give (MemAvailable; the physical size where /proc is missing)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_free(device: torch.device) -> int:
    """Free bytes on ``device`` (the host's for the CPU)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return host_free()


def budget(model: nn.Module) -> int:
    """Bytes one batch may take: ``SHARE`` of the least free memory among the model's devices and
    the host (results are gathered there), as a power of two within [FLOOR, CEILING]."""
    devices = {p.device for p in model.parameters()} | {torch.device("cpu")}
    free = min(device_free(d) for d in devices)
    planned = min(CEILING, max(FLOOR, int(SHARE * free)))
    return 1 << (planned.bit_length() - 1)


def attention_bytes(model: PreTrainedModel, length: int) -> int:
    """Planned bytes of one sequence's attention probabilities in every layer, fp32, twice over
    (the probabilities, and the copy or sum a caller keeps of them)."""
    return 8 * num_layers(model.config) * num_heads(model.config) * length * length


def out_of_memory(error: RuntimeError) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's refusal (both RuntimeErrors)."""
    text = str(error)
    return (
        isinstance(error, torch.cuda.OutOfMemoryError) or "can't allocate memory" in text or "not enough memory" in text
    )


def release() -> None:
    """Give cached CUDA blocks back after an out-of-memory error, so the smaller retry can use them."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Batcher:
    """Cuts work into pieces whose cost stays within ``limit`` (bytes or tokens), and halves the
    limit for the rest of its life when a piece still runs out of memory, saying so in one line."""

    def __init__(self, limit: int, what: str):
        self.limit, self.what = limit, what

    def pieces(
        self,
        items: Items,
        cost: Callable[[Items], int],
        run: Callable[[Items], Out],
        unit: str | None = None,
    ) -> Iterator[Out]:
        """``run(piece)`` for consecutive pieces of ``items``, each as long as its ``cost`` stays
        within the limit (at least one item), with a progress bar counting ``unit`` when given.
        ``run`` must keep nothing from a piece that fails (it returns its results instead of
        adding them up), as that piece is run again, smaller."""
        with tqdm(
            total=len(items), desc=self.what, unit=unit or "item", disable=None if unit else True, leave=False
        ) as bar:
            yield from self._pieces(items, cost, run, bar)

    def _pieces(self, items, cost, run, bar) -> Iterator:
        start = 0
        while start < len(items):
            end = start + 1
            while end < len(items) and cost(items[start : end + 1]) <= self.limit:
                end += 1
            piece = items[start:end]
            try:
                out = run(piece)
            except RuntimeError as error:
                if not out_of_memory(error):
                    raise
                self._shrink(piece, cost(piece))
                continue
            bar.update(len(piece))
            yield out
            start = end

    def _shrink(self, piece: Sequence, planned: int) -> None:
        release()
        if len(piece) == 1:
            raise InherituneError(
                f"{self.what}: out of memory with a single item ({planned:,} planned); use a "
                "larger device, --device-map auto, or shorter inputs"
            ) from None
        self.limit = max(1, planned // 2)
        print(f"{self.what}: out of memory with {len(piece)} per batch; retrying with fewer", flush=True)
