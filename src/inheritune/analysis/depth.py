"""Depth-redundancy signals from the residual stream: Block Influence and angular distance.

- Block Influence (ShortGPT): BI_l = 1 - cos(x_l, x_{l+1}), mean over tokens, where x_l is the
  input of block l and x_{l+1} its output. A block that barely turns the hidden state is cheap
  to drop.
- Angular distance (Gromov et al.): d(l, l+n) = arccos(cos(x_l, x_{l+n})) / pi, mean over tokens;
  the n-block slice starting where d(l, l+n) is smallest changes the representation least.

The states are captured with hooks on the blocks themselves, not ``output_hidden_states``:
some families apply the final norm to the last returned state, which would distort the last
layer's cosine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import PreTrainedModel

from inheritune.analysis.hooks import hooks
from inheritune.models.families import blocks


@contextmanager
def residual_states(model: PreTrainedModel) -> Iterator[list[torch.Tensor | None]]:
    """Record the L+1 residual states of the next forward pass: each block's input, then the last output.

    Yields a list filled in during the forward pass, ``states[l]`` of shape ``[batch, T, hidden]``.
    """
    layers = blocks(model)
    states: list[torch.Tensor | None] = [None] * (len(layers) + 1)

    def input_hook(index: int):
        def hook(_module, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            states[index] = x.detach()

        return hook

    def output_hook(_module, _args, out):
        states[-1] = (out[0] if isinstance(out, tuple) else out).detach()

    with hooks(
        pre=[(b, input_hook(i)) for i, b in enumerate(layers)], post=[(layers[-1], output_hook)], pre_with_kwargs=True
    ):
        yield states


def cosine_sums(states: list[torch.Tensor]) -> torch.Tensor:
    """Sum over tokens of cos(x_i, x_j) for every pair of recorded states: ``[L+1, L+1]`` (fp32).

    Summed rather than averaged so that batches can be accumulated, then divided by the token count.
    """
    x = torch.stack([s.float().flatten(0, -2) for s in states])  # [L+1, tokens, hidden]
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.einsum("itd,jtd->ij", x, x)


def block_influence(mean_cos: torch.Tensor) -> list[float]:
    """BI_l = 1 - mean cos(input of block l, its output), from the ``[L+1, L+1]`` mean-cosine matrix."""
    n = mean_cos.shape[0] - 1
    return [float(1 - mean_cos[i, i + 1]) for i in range(n)]


def angular_distance(mean_cos: torch.Tensor) -> torch.Tensor:
    """arccos(cos) / pi between every pair of states, in [0, 1].

    Uses the mean cosine over tokens (one arccos per pair, not per token), so it is a monotone
    transform of the same statistic Block Influence uses.
    """
    return torch.arccos(mean_cos.clamp(-1, 1)) / torch.pi


def best_slices(distance: torch.Tensor) -> list[dict]:
    """For each slice width n, the start l minimising d(l, l+n): Gromov et al.'s choice of blocks to drop."""
    n_layers = distance.shape[0] - 1
    out = []
    for n in range(1, n_layers + 1):
        d = torch.stack([distance[s, s + n] for s in range(n_layers - n + 1)])
        start = int(d.argmin())
        out.append({"n": n, "start": start, "distance": float(d[start])})
    return out
