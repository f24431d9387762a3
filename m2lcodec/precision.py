"""Which dtype the model computes in: the one place codec and training decide "auto" precision.

bf16 autocast only pays where the hardware does bf16 arithmetic. On a CPU that means oneDNN's bf16
kernels (AVX-512 / AMX): there a training step ran 1.26-1.6x faster in bf16 (docs/training.md, "Throughput
measured here"). On an AVX2-only CPU bf16 is emulated: measured 6.6x *slower* than fp32 (session 16, AMD EPYC,
1 thread, the shipped model on a 10 s stereo clip: decode 0.3x vs 2.3x real time, encode 2x vs 10x), so
"auto" picks fp32 there. oneDNN's own probe is not enough: it also says yes on AVX-512 CPUs *without*
the bf16 instructions (avx512_bf16 / amx_bf16), where bf16 is emulated too: measured 2.2x slower per training
step than fp32 (session 18, an Intel Xeon with AVX-512F/VNNI only, 2 threads: fp32 1.26 s/step, bf16 2.77).
So on Linux "auto" also asks /proc/cpuinfo for the instructions themselves.
"""

from __future__ import annotations

from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "fp32")


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags_have_bf16(cpuinfo: str) -> bool:
    """True when a /proc/cpuinfo text lists a native bf16 instruction set (AVX512-BF16 or AMX-BF16)."""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def cpu_has_fast_bf16(cpuinfo_path: Path = Path("/proc/cpuinfo")) -> bool:
    """True when this CPU does bf16 arithmetic natively: oneDNN has bf16 kernels and, where /proc/cpuinfo
    exists (Linux), the CPU lists avx512_bf16 or amx_bf16 (oneDNN alone also says yes for emulation)."""
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False
    try:
        cpuinfo = cpuinfo_path.read_text()
    except OSError:
        return True
    return cpu_flags_have_bf16(cpuinfo)


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
