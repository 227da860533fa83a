"""Which precision runs fastest on a device: shared by training and by scoring that only ranks."""
from __future__ import annotations

import torch

from inheritune.errors import InherituneError


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast (fp32 master weights) where it is faster: GPUs with bf16, CPUs with native bf16
    matmuls (AVX512-BF16/AMX; measured here: 900 vs 200 GFLOP/s fp32). Elsewhere bf16 is emulated: fp32."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        fast = torch.cuda.is_bf16_supported()
    else:
        fast = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if precision == "bf16" and not fast and device.type == "cuda":
        raise InherituneError(f"precision bf16 is not supported on {device}; use --precision fp32")
    return torch.bfloat16 if fast or precision == "bf16" else None
