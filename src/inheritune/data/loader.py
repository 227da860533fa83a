"""Training batches: context-length windows drawn from the memory-mapped train shards.

The batch of any (step, micro-step, rank) is a pure function of the seed, so the loader has
no state to save: a resumed run, or a run on a different number of ranks with the same
global batch, sees exactly the same windows.

How windows are drawn: the train split is one virtual stream (shards concatenated). Each
epoch cuts it into aligned windows of ``seq_len + 1`` tokens, shifted by a random offset,
and visits them in a random order (sampling without replacement, so a small data slice is
covered evenly). Global sample ``g`` of the run is window ``perm[g % n]`` of epoch ``g // n``.
Step ``s`` owns samples ``s*G .. s*G+G-1`` (``G`` = sequences per optimizer step); micro-step
``m`` of rank ``r`` takes the ``batch_size`` samples starting at ``(m*world + r)*batch_size``,
so ranks draw disjoint windows and their union is the single-process batch. ``skip_steps``
starts the order that many steps in: a run that continues another one's windows (grow's rounds).
"""

from __future__ import annotations

import numpy as np
import torch

from inheritune.data.shards import TokenData
from inheritune.errors import InherituneError


class TrainLoader:
    def __init__(
        self,
        data: TokenData,
        seq_len: int,
        batch_size: int,
        sequences_per_step: int,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        skip_steps: int = 0,
    ):
        self.shards = data.shards("train")  # memory maps: nothing is read until a window is asked for
        self.ends = np.cumsum([len(s) for s in self.shards])
        total = int(self.ends[-1]) if len(self.ends) else 0
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.per_step, self.rank, self.world, self.skip = sequences_per_step, rank, world, skip_steps
        if sequences_per_step % (batch_size * world):
            raise InherituneError(
                f"{sequences_per_step} sequences per step do not split into micro-batches "
                f"of {batch_size} on {world} rank(s)"
            )
        # Room for any offset in [0, seq_len): the last window must end inside the stream.
        self.windows = (total - 1 - seq_len) // seq_len
        if self.windows < 1:
            raise InherituneError(
                f"the train split of {data.root} has {total} tokens, too few for "
                f"seq_len {seq_len} (needs at least {2 * seq_len + 1})"
            )
        self._epoch: tuple[int, int, np.ndarray] | None = None

    @property
    def micro_steps(self) -> int:
        """Gradient-accumulation steps per optimizer step on each rank."""
        return self.per_step // (self.batch_size * self.world)

    def _order(self, epoch: int) -> tuple[int, np.ndarray]:
        if self._epoch is None or self._epoch[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._epoch = (epoch, int(rng.integers(0, self.seq_len)), rng.permutation(self.windows))
        return self._epoch[1], self._epoch[2]

    def _window(self, start: int) -> np.ndarray:
        """Tokens [start, start + seq_len + 1) of the virtual stream, across a shard border if needed."""
        out, need, pos = [], self.seq_len + 1, start
        while need:
            i = int(np.searchsorted(self.ends, pos, side="right"))
            begin = pos - (int(self.ends[i - 1]) if i else 0)
            piece = self.shards[i][begin : begin + need]
            out.append(piece)
            need -= len(piece)
            pos += len(piece)
        return np.concatenate(out) if len(out) > 1 else np.asarray(out[0])

    def starts(self, step: int, micro: int) -> list[int]:
        """Where in the train stream each window of this rank's micro-batch of ``step`` starts: with
        seq_len, a window's identity (what the teacher cache keys its states by)."""
        first = (self.skip + step) * self.per_step + (micro * self.world + self.rank) * self.batch_size
        starts = []
        for g in range(first, first + self.batch_size):
            offset, perm = self._order(g // self.windows)
            starts.append(offset + int(perm[g % self.windows]) * self.seq_len)
        return starts

    def batch(self, step: int, micro: int) -> torch.Tensor:
        """Token ids [batch_size, seq_len + 1] (int64) of this rank's micro-batch of ``step`` (0-based)."""
        rows = [self._window(start) for start in self.starts(step, micro)]
        return torch.from_numpy(np.stack(rows).astype(np.int64))
