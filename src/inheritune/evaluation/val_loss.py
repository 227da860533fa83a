"""Validation loss: the one yardstick that train, grow, run and eval all report.

"val loss" in every result, log and report of inheritune means exactly this (``YARDSTICK``):
the mean next-token negative log-likelihood, in nats, of every token of the data folder's
validation split after its first, the split cut into consecutive windows of 512 tokens (the
model's context when that is shorter), computed in fp32 whatever the training precision. It
does not depend on the batch size, the training ``seq_len`` or the device's bf16 support, so
the same model on the same data folder gets the same number from every command.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from inheritune.data.shards import TokenData
from inheritune.models.families import context_length

VAL_CONTEXT = 512
YARDSTICK = {
    "metric": "val_loss",
    "definition": "mean next-token NLL (nats) over every token of the data folder's validation split after "
    "the first, consecutive windows of 512 tokens (the model's context if shorter), fp32",
    "split": "val (whole)",
    "context": VAL_CONTEXT,
    "precision": "fp32",
}


@torch.no_grad()
def token_nll(
    model: torch.nn.Module, tokens: np.ndarray, seq_len: int, batch_size: int = 8, autocast: torch.dtype | None = None
) -> tuple[float, int]:
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
    ctx = (
        torch.autocast(device.type, dtype=autocast)
        if autocast is not None
        else torch.autocast(device.type, enabled=False)
    )
    bar = tqdm(total=len(starts), desc="validation loss", unit="window", disable=None, leave=False)
    try:
        for b in range(0, len(starts), batch_size):
            group = starts[b : b + batch_size]
            full = [s for s in group if s + seq_len <= n]
            batches = [full] + [[s] for s in group if s + seq_len > n]  # the short tail alone
            for batch in batches:
                if not batch:
                    continue
                length = min(seq_len, n - batch[0])
                window = np.stack([np.asarray(tokens[s : s + length + 1], dtype=np.int64) for s in batch])
                ids = torch.from_numpy(window).to(device)
                with ctx:
                    logits = model(input_ids=ids[:, :-1]).logits
                total += F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten(), reduction="sum").item()
                count += ids[:, 1:].numel()
            bar.update(len(group))
    finally:
        bar.close()
        model.train(was_training)
    return total, count


def val_context(model: PreTrainedModel) -> int:
    """The yardstick's window: 512 tokens, or the model's whole context when shorter."""
    return min(VAL_CONTEXT, context_length(model.config) or VAL_CONTEXT)


def val_loss(model: PreTrainedModel, data: TokenData, batch_size: int = 8) -> dict:
    """The yardstick (see the module docstring): loss, perplexity, token count and the definition."""
    context = val_context(model)
    total, count = token_nll(model, data.tokens("val"), context, batch_size)
    loss = total / max(count, 1)
    return {
        "loss": loss,
        "ppl": math.exp(min(loss, 50.0)),
        "tokens": count,
        "yardstick": {**YARDSTICK, "context": context},
    }
