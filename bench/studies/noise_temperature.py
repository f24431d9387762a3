"""Does the decode's starting noise matter? A temperature on the sigma_max noise (session 27).

The codec's first step denoises pure noise at sigma_max (std 80) into a chunk, given the latents. Under the
reconstruction terms the network learns to draw the chunk from the latents; how much of the output still
comes from the noise decides whether a "temperature" (starting noise of std tau * 80, the network still told
sigma_max) trades texture for fidelity, as it does in many sampled generators. Every clip (mono, 44.1 kHz)
goes through int8 `.m2l` bytes and `Codec.decompress(noise_scale=tau)` (the weights file's sigma_cond and
deblocking, seed 0) once per tau: only the starting noise is scaled, not the re-noising; tau 1 is the codec
as shipped. Scored on the measures of bench/compare_models.py, plus the rms difference
between the tau decode and the tau = 1 decode and between seeds 0 and 1 at tau 1 (how much the noise moves
the output at all).

    python bench/studies/noise_temperature.py --model W --clips ~/bench-clips --count 5 --tau 1,0.7,0.4,0 \\
        --out r.json [--no-visqol]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compare_models import mean_scores, print_table, score, score_original  # noqa: E402

from m2lcodec import load_codec  # noqa: E402
from m2lcodec.audio import read_audio  # noqa: E402
from m2lcodec.bench import find_clips  # noqa: E402

def rms_ratio(a: np.ndarray, b: np.ndarray) -> float:
    """rms(a - b) / rms(b)."""
    return float(np.sqrt(np.mean((a - b) ** 2)) / max(np.sqrt(np.mean(b ** 2)), 1e-12))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="weights file (default: the shipped one)")
    ap.add_argument("--clips", required=True)
    ap.add_argument("--count", type=int, default=5)
    ap.add_argument("--tau", default="1,0.7,0.4,0", help="comma-separated noise scales (1 = the codec)")
    ap.add_argument("--visqol", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    taus = [float(t) for t in args.tau.split(",")]
    codec = load_codec(args.model, device="cpu")
    names = [f"tau {t:g}" for t in taus]
    rows: dict[str, dict[str, dict]] = {n: {} for n in ["original", *names]}
    moves: dict[str, dict[str, float]] = {n: {} for n in [*names, "seed 1 (tau 1)"]}
    for path in find_clips(args.clips, args.count):
        audio, sr = read_audio(path)
        audio = audio.mean(axis=0, keepdims=True)
        seconds = audio.shape[1] / sr
        rows["original"][path.name] = score_original(audio, sr)
        data = codec.compress(audio, sr, quant="int8")
        kbps = len(data) * 8 / 1000 / seconds
        reference, _ = codec.decompress(data)
        for tau, name in zip(taus, names):
            t0 = time.perf_counter()
            decoded, _ = codec.decompress(data, noise_scale=tau)
            rows[name][path.name] = score(audio, decoded, sr, kbps, args.visqol)
            moves[name][path.name] = rms_ratio(decoded, reference)
            print(f"{path.name} {name}: {rows[name][path.name]} moved {moves[name][path.name]:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        other, _ = codec.decompress(data, seed=1)
        moves["seed 1 (tau 1)"][path.name] = rms_ratio(other, reference)
    mean = {n: mean_scores(list(per.values())) for n, per in rows.items()}
    moved = {n: float(np.mean(list(per.values()))) for n, per in moves.items()}
    Path(args.out).write_text(json.dumps({"model": args.model, "hash": codec.info.hash, "mean": mean,
                                          "moved_rms_ratio": moved, "per_clip": rows,
                                          "moved_per_clip": moves}, indent=1) + "\n")
    print_table(mean, first="decode")
    print("\nrms(decode - tau 1 decode) / rms(tau 1 decode): " +
          ", ".join(f"{n} {v:.3f}" for n, v in moved.items()))


if __name__ == "__main__":
    main()
