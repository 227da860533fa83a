"""Which precision runs fastest on a device: bf16 autocast only where bf16 matmuls are native."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

from inheritune.errors import InherituneError

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions that multiply bf16 natively


@functools.cache
def cpu_bf16_is_native() -> bool:
    """True where the CPU multiplies bf16 natively (AVX512-BF16 or AMX; measured on one: 900 vs 200
    GFLOP/s fp32). oneDNN also reports bf16 "supported" on AVX-512 CPUs without those instructions,
    where it emulates them: there bf16 training ran at 50 tokens/s against fp32's 2-3x more on
    SmolLM2, so only the CPU's own flags count (Linux /proc/cpuinfo; Apple silicon has bf16)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = {
            flag
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("flags")
            for flag in line.split(":", 1)[1].split()
        }
        return any(flag in flags for flag in NATIVE_BF16_FLAGS)
    return platform.machine() == "arm64" and torch.backends.mkldnn.is_available()


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast (fp32 master weights) where it is faster: GPUs with bf16, CPUs with native bf16
    matmuls (:func:`cpu_bf16_is_native`). Elsewhere bf16 would be emulated: fp32, unless asked for."""
    if precision == "fp32":
        return None
    fast = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_bf16_is_native()
    if precision == "bf16" and not fast and device.type == "cuda":
        raise InherituneError(f"precision bf16 is not supported on {device}; use --precision fp32")
    return torch.bfloat16 if fast or precision == "bf16" else None
