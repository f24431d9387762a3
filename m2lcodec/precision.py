"""Which dtype the model computes in: the one place codec and training decide "auto" precision.

bf16 autocast only pays where the hardware does bf16 arithmetic. On a CPU that means oneDNN's bf16
kernels (AVX-512 / AMX): there a training step ran 1.26-1.6x faster in bf16 (docs/training.md, "Throughput
measured here"). On an AVX2-only CPU bf16 is emulated: measured 6.6x *slower* than fp32 (session 16, AMD EPYC,
1 thread, the shipped model on a 10 s stereo clip: decode 0.3x vs 2.3x real time, encode 2x vs 10x), so
"auto" picks fp32 there.
"""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "bf16", "fp32")


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX-512 or AMX)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`; None = plain fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    device = torch.device(device)
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return None


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """The autocast context for a dtype from autocast_dtype (None = autocast off, plain fp32)."""
    return torch.autocast(torch.device(device).type, dtype=dtype or torch.float32, enabled=dtype is not None)
