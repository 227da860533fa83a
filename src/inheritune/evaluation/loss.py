"""Validation loss: the one implementation that train, grow, run and eval all report."""
from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from inheritune.data.shards import TokenData


@torch.no_grad()
def token_nll(model: torch.nn.Module, tokens: np.ndarray, seq_len: int, batch_size: int = 8,
              autocast: torch.dtype | None = None) -> tuple[float, int]:
    """Summed next-token NLL over ``tokens`` and the number of predicted tokens.

    The stream is cut into consecutive windows of ``seq_len`` inputs (the last one shorter),
    so every token after the first is predicted exactly once, whatever the batch size.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    n = len(tokens) - 1
    starts = list(range(0, n, seq_len))
    total, count = 0.0, 0
    ctx = torch.autocast(device.type, dtype=autocast) if autocast is not None else nullcontext()
    try:
        for b in range(0, len(starts), batch_size):
            group = starts[b:b + batch_size]
            full = [s for s in group if s + seq_len <= n]
            batches = [full] + [[s] for s in group if s + seq_len > n]  # the short tail alone
            for batch in batches:
                if not batch:
                    continue
                length = min(seq_len, n - batch[0])
                window = np.stack([np.asarray(tokens[s:s + length + 1], dtype=np.int64) for s in batch])
                ids = torch.from_numpy(window).to(device)
                with ctx:
                    logits = model(input_ids=ids[:, :-1]).logits
                total += F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten(), reduction="sum").item()
                count += ids[:, 1:].numel()
    finally:
        model.train(was_training)
    return total, count


def val_loss(model: torch.nn.Module, data: TokenData, seq_len: int = 512, batch_size: int = 8,
             max_tokens: int | None = None, autocast: torch.dtype | None = None) -> dict:
    """Mean NLL, perplexity and token count on the data folder's fixed validation split."""
    tokens = data.tokens("val")
    if max_tokens is not None:
        tokens = tokens[: max_tokens + 1]
    total, count = token_nll(model, tokens, seq_len, batch_size, autocast)
    loss = total / max(count, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": count}
