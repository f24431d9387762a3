"""Compare int8 quantisation schemes for .m2l latents (see docs/format.md).

Latents come out of a tanh, so values lie in (-1, 1). On synthetic latents
tanh(N(0, std^2)) this measures, per scheme, the RMS and max reconstruction
error (in the latent domain the decoder consumes) and the zstd-compressed size
in bits per chunk per channel (K*D = 512 values), including the 8-byte frame
prefix and any side information. fp16 (plain and byte-shuffled) is listed for
reference.

    .venv/bin/python bench/studies/quant_study.py            # ~2 s, seeded
"""

from __future__ import annotations

import argparse
from typing import Callable

import numpy as np
import zstandard

K, D = 8, 64
SECONDS_PER_CHUNK = 32768 / 44100
FRAME_OVERHEAD_BYTES = 8  # u32 length + u32 CRC per frame

Codec = Callable[[np.ndarray], tuple[bytes, np.ndarray]]  # frame (n, K, D) -> (payload, reconstruction)


def uniform(x: np.ndarray) -> tuple[bytes, np.ndarray]:
    """(a) fixed grid over [-1, 1]: q = round(x * 127)."""
    q = np.clip(np.rint(x * 127.0), -127, 127).astype(np.int8)
    return q.tobytes(), q.astype(np.float32) / 127.0


def absmax(x: np.ndarray) -> tuple[bytes, np.ndarray]:
    """(b) per-frame per-channel absmax scale stored as fp16, q = round(x / s * 127)."""
    s = np.float16(max(float(np.abs(x).max()), 1e-6))
    if float(s) < float(np.abs(x).max()):
        s = np.nextafter(s, np.float16(np.inf))
    q = np.clip(np.rint(x / float(s) * 127.0), -127, 127).astype(np.int8)
    return s.tobytes() + q.tobytes(), q.astype(np.float32) / 127.0 * float(s)


def atanh_grid(a: float) -> Codec:
    """(c1) uniform grid in the arctanh domain over [-a, a]: more levels near +-1."""

    def codec(x: np.ndarray) -> tuple[bytes, np.ndarray]:
        y = np.arctanh(np.clip(x, -0.999999, 0.999999)) / a
        q = np.clip(np.rint(y * 127.0), -127, 127).astype(np.int8)
        return q.tobytes(), np.tanh(q.astype(np.float32) / 127.0 * a)

    codec.__doc__ = f"(c1) arctanh-domain grid, a={a}"
    return codec


def mulaw(mu: float) -> Codec:
    """(c2) mu-law grid: more levels near 0."""

    def codec(x: np.ndarray) -> tuple[bytes, np.ndarray]:
        y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
        q = np.clip(np.rint(y * 127.0), -127, 127).astype(np.int8)
        yh = q.astype(np.float32) / 127.0
        return q.tobytes(), np.sign(yh) * np.expm1(np.abs(yh) * np.log1p(mu)) / mu

    codec.__doc__ = f"(c2) mu-law grid, mu={mu}"
    return codec


def fp16(x: np.ndarray) -> tuple[bytes, np.ndarray]:
    """fp16, bytes as stored in memory."""
    h = x.astype("<f2")
    return h.tobytes(), h.astype(np.float32)


def fp16_shuffled(x: np.ndarray) -> tuple[bytes, np.ndarray]:
    """fp16 with all low bytes then all high bytes (byte shuffle); tried, not adopted."""
    h = x.astype("<f2")
    b = h.view(np.uint8).reshape(-1, 2)
    return b.T.tobytes(), h.astype(np.float32)


def latents(kind: str, chunks: int, rng: np.random.Generator) -> np.ndarray:
    """Synthetic (chunks, K, D) latents mimicking tanh outputs."""
    if kind == "mixed":  # per-dimension std log-uniform in [0.3, 3]
        std = np.exp(rng.uniform(np.log(0.3), np.log(3.0), size=(1, K, D)))
    else:
        std = float(kind)
    return np.tanh(rng.standard_normal((chunks, K, D)) * std).astype(np.float32)


def measure(codec: Codec, x: np.ndarray, frame_chunks: int, level: int) -> tuple[float, float, float]:
    """Return (rms error, max error, bits per chunk incl. frame overhead) for one channel."""
    cctx = zstandard.ZstdCompressor(level=level)
    total_bytes = 0
    recon = np.empty_like(x)
    for start in range(0, x.shape[0], frame_chunks):
        frame = x[start : start + frame_chunks]
        payload, rec = codec(frame)
        recon[start : start + frame_chunks] = rec
        total_bytes += FRAME_OVERHEAD_BYTES + len(cctx.compress(payload))
    err = recon.astype(np.float64) - x
    return float(np.sqrt(np.mean(err**2))), float(np.abs(err).max()), 8.0 * total_bytes / x.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=256, help="chunks per synthetic signal")
    parser.add_argument("--frame-chunks", type=int, default=16, help="chunks per frame (container default)")
    parser.add_argument("--level", type=int, default=9, help="zstd level (container default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    schemes: dict[str, Codec] = {
        "a  uniform q=round(127x)": uniform,
        "b  absmax/frame (fp16 s)": absmax,
        "c1 atanh grid a=2": atanh_grid(2.0),
        "c1 atanh grid a=3": atanh_grid(3.0),
        "c2 mu-law mu=4": mulaw(4.0),
        "c2 mu-law mu=16": mulaw(16.0),
        "   fp16": fp16,
        "   fp16 byte-shuffled": fp16_shuffled,
    }
    kinds = ["0.5", "1.0", "2.0", "mixed"]
    print(
        f"chunks={args.chunks} frame_chunks={args.frame_chunks} zstd level={args.level} seed={args.seed}; "
        f"cell = RMS err / max err / bits per chunk per channel (kbps at 44.1 kHz)"
    )
    print(f"{'scheme':26s}" + "".join(f" | std={k:<30s}" for k in kinds))
    for name, codec in schemes.items():
        cells = []
        for kind in kinds:
            rng = np.random.default_rng(args.seed)
            x = latents(kind, args.chunks, rng)
            rms, mx, bits = measure(codec, x, args.frame_chunks, args.level)
            cells.append(f"{rms:.5f}/{mx:.4f}/{bits:5.0f} ({bits / SECONDS_PER_CHUNK / 1000:4.2f})")
        print(f"{name:26s}" + "".join(f" | {c:<34s}" for c in cells))


if __name__ == "__main__":
    main()
