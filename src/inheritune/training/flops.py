"""Model FLOPs utilisation: the training FLOPs a step needs, against a matmul peak measured here.

FLOPs per token = 6 N + 12 L d T (PaLM, appendix B): N matmul parameters (the input embedding
is a lookup, so it is left out unless tied to the LM head), plus attention scores and values
over a context of T tokens in L layers of width d.
"""

from __future__ import annotations

import time

import torch
from transformers import PreTrainedModel

from inheritune.models.families import num_layers


def flops_per_token(model: PreTrainedModel, seq_len: int) -> float:
    params = {id(p): p.numel() for p in model.parameters()}
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    if head is None or head.weight is not embed:  # an untied embedding does no matmul
        params.pop(id(embed), None)
    config = model.config
    return 6.0 * sum(params.values()) + 12.0 * num_layers(config) * config.hidden_size * seq_len


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 0.5) -> float:
    """FLOP/s of a large square matmul on ``device`` in ``dtype``: the practical peak MFU is measured against."""
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):  # warm-up: kernel selection, caches
        a @ b
    sync()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(4):
            a @ b
        reps += 4
        sync()
    return 2.0 * n**3 * reps / (time.perf_counter() - start)
