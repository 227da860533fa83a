"""What the block selectors measure on a model: each block's input-output cosine (angular, Block
Influence), its heaviest attention column (lazy), and the loss with some blocks skipped (loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import cast

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from inheritune.analysis import attention as metrics
from inheritune.analysis import batching
from inheritune.analysis.depth import cosine_sums, residual_states
from inheritune.analysis.hooks import attention_probs, hooks
from inheritune.analysis.unit_importance import ffn_importance, head_importance, lm_examples
from inheritune.models.families import blocks


@torch.no_grad()
def mean_cosines(model: PreTrainedModel, windows: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Mean over tokens of cos(x_i, x_j) between every pair of the L+1 residual states, ``[L+1, L+1]``."""

    def run(batch: torch.Tensor) -> torch.Tensor:
        with residual_states(model) as states:
            model(input_ids=batch.to(model.device), use_cache=False)
        return cosine_sums(cast(list[torch.Tensor], states)).cpu()  # every state is recorded by the pass

    pieces = batching.Batcher(batch_size, "residual cosines").pieces(windows, len, run, unit="window")
    return cast(torch.Tensor, sum(pieces)) / windows.numel()  # a sum of tensors (windows are never empty)


@torch.no_grad()
def column_mass(model: PreTrainedModel, windows: torch.Tensor) -> list[float]:
    """Per layer: mean over heads of the heaviest column's share of the attention averaged over the windows."""
    n, t = windows.shape

    def run(batch: torch.Tensor) -> torch.Tensor:
        probs = attention_probs(model, batch.to(model.device))
        return torch.stack([p.sum(0).cpu() for p in probs])  # [L, H, T, T]

    batcher = batching.Batcher(max(1, batching.budget(model) // batching.attention_bytes(model, t)), "attention")
    total = cast(torch.Tensor, sum(batcher.pieces(windows, len, run, unit="window")))  # a sum of tensors
    mass, _column = metrics.heaviest_column(total / n)  # [L, H]
    return mass.mean(1).tolist()


def block_importance(model: PreTrainedModel, windows: torch.Tensor) -> list[float]:
    """Per block: summed head importance (mean |dL/dxi_h|) + the loss increase with its FFN knocked out,
    both on next-token loss over the windows (the toolkit's ``importance`` measures)."""
    examples = lm_examples(windows)
    heads = head_importance(model, examples).sum(1)
    ffn = ffn_importance(model, examples)["loss_increase"]
    return [float(h + f) for h, f in zip(heads, ffn, strict=True)]


@contextmanager
def skipped(model: PreTrainedModel, dropped: Sequence[int]):
    """Blocks ``dropped`` pass their input through unchanged: the same outputs as removing them,
    without copying the model (how ``loss`` scores hundreds of candidates)."""

    def keep_input(_module, args, kwargs, out):
        x = args[0] if args else kwargs["hidden_states"]
        return (x, *out[1:]) if isinstance(out, tuple) else x

    layers = blocks(model)
    with hooks(post=[(layers[i], keep_input) for i in dropped], post_with_kwargs=True):
        yield model


@torch.no_grad()
def window_loss(
    model: PreTrainedModel, windows: torch.Tensor, dropped: Sequence[int] = (), batch_size: int = 8
) -> float:
    """Mean next-token NLL (fp32) over the windows, with blocks ``dropped`` skipped."""
    total, count = 0.0, 0
    with skipped(model, list(dropped)):
        for start in range(0, len(windows), batch_size):
            ids = windows[start : start + batch_size].to(model.device)
            logits = model(input_ids=ids[:, :-1], use_cache=False).logits.float()
            total += F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum").item()
            count += ids[:, 1:].numel()
    return total / count
