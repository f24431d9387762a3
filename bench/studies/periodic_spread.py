"""How much of the chunk-periodic level error is the same for all music (docs/training.md, session 16).

Encodes and decodes (int8, the CLI's decode) 10 s mono excerpts of training files, then per band the
level error (decode minus original, dB per 1024-sample frame) averaged per phase bin of the 32768-sample
chunk grid. Prints per band: the mean per-clip std over the bins, the std of the mean curve over clips,
and the leave-one-out residual (each clip's curve minus the other clips' mean curve): if the residual is
as large as the per-clip std, a fixed correction (a post-equaliser) cannot remove the pattern.

    python bench/studies/periodic_spread.py --list ~/m2l-corpus/train.txt --every 25 --count 12
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from m2lcodec import load_codec, spectral

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seams import periodic_level_error  # noqa: E402

BANDS_HZ = ((0, 500), (500, 2000), (2000, 4000), (4000, 8000), (8000, 22050))
BINS = 32


def phase_curves(decoded: np.ndarray, original: np.ndarray) -> np.ndarray:
    """(bands, BINS) mean dB level error per phase bin (seams.periodic_level_error per band)."""
    return np.array([periodic_level_error(decoded, original, spectral.SAMPLE_RATE, cutoff_hz=lo, max_hz=hi,
                                          bins=BINS)[1] for lo, hi in BANDS_HZ])


def excerpt(path: str, seconds: float = 10.0, at: float = 30.0) -> np.ndarray:
    info = sf.info(path)
    start = int(min(at, max(0.0, info.duration - seconds - 1)) * info.samplerate)
    x, _ = sf.read(path, start=start, frames=int(seconds * info.samplerate), dtype="float32", always_2d=True)
    x = x.mean(1)
    if info.samplerate != spectral.SAMPLE_RATE:
        x = soxr.resample(x, info.samplerate, spectral.SAMPLE_RATE)
    return x.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", required=True, help="file list (one audio path per line)")
    ap.add_argument("--every", type=int, default=25, help="take every N-th file")
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--model", default=None, help="weights file (default: the bundled model)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    codec = load_codec(args.model)
    files = [line.strip() for line in open(args.list) if line.strip()][:: args.every][: args.count]
    curves = []
    for path in files:
        x = excerpt(path)
        y, _ = codec.decompress(codec.compress(x[None], spectral.SAMPLE_RATE))
        curves.append(phase_curves(y[0], x))
        print(path.rsplit("/", 1)[-1], "per-band std", np.round(curves[-1].std(1), 2), flush=True)
    c = np.array(curves)
    c = c - c.mean(2, keepdims=True)  # clips x bands x bins, each curve centred
    loo = c - (c.sum(0, keepdims=True) - c) / (c.shape[0] - 1)
    for b, (lo, hi) in enumerate(BANDS_HZ):
        print(f"{lo}-{hi} Hz: per-clip std {c[:, b].std(1).mean():.2f} dB, mean curve std {c[:, b].mean(0).std():.2f},"
              f" leave-one-out residual {loo[:, b].std(1).mean():.2f}")


if __name__ == "__main__":
    main()
