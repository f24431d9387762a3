"""Weights files side by side through the real codec, next to Opus, on the issue's measures.

Every clip (mono by default) goes through `Codec.compress` (int8 .m2l bytes, the weights file's own
sigma_cond) and `Codec.decompress`, exactly what `m2lcodec compress` / `decompress` do; the one decode
is scored by ViSQOL, log-mel distance (`metrics.mel_distance`), the chunk-periodic level error above
4 kHz and the seam level-jump ratio (bench/seams.py), and for the harmonic lines and onsets the issue
asks to see, `metrics.spectral_peakiness` (dB; the "original" row has the clips' own value, white noise
scores ~6.4) and `metrics.onset_correlation` with the original. Opus 6 and 12 kbps get the same measures
in the same run (Opus has no chunk grid: its periodic error is the floor the issue compares with). The
seam flux ratio (bench/seams.py: spectral flux at the seams / elsewhere) is read against the original's row.

    python bench/compare_models.py --clips ~/bench-clips --count 5 \\
        --model shipped=m2lcodec/weights/default.safetensors --model v8=/root/runs/v8/ema.safetensors \\
        --out /root/compare.json

Prints a markdown table (means over clips; per-clip values in the JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seams import boundary_positions, flux_ratio, level_jump_ratio, periodic_level_error  # noqa: E402

from m2lcodec import metrics  # noqa: E402
from m2lcodec.audio import read_audio  # noqa: E402
from m2lcodec.bench import find_clips  # noqa: E402

MEASURES = ("kbps", "visqol", "mel_distance", "periodic_db", "jump_ratio", "peakiness", "onset_corr", "flux_ratio")
HEADS = ("kbps", "ViSQOL", "mel dist", "periodic dB", "level-jump ratio", "peakiness dB", "onset corr",
         "seam flux ratio")


def score(original: np.ndarray, decoded: np.ndarray, sr: int, kbps: float,
          visqol: bool = True) -> dict[str, float | None]:
    """The issue's measures of one decode of a mono clip (C=1, N) at 44.1 kHz (ViSQOL None if not asked:
    it takes most of the time)."""
    vis = metrics.visqol(original, decoded, sr) if visqol else None
    seams = boundary_positions(original.shape[1])
    return {"kbps": kbps, "visqol": vis, "mel_distance": metrics.mel_distance(original, decoded, sr),
            "periodic_db": periodic_level_error(decoded, original, sr)[0],
            "jump_ratio": level_jump_ratio(decoded[0], sr, seams),
            "peakiness": metrics.spectral_peakiness(decoded, sr),
            "onset_corr": metrics.onset_correlation(original, decoded, sr),
            "flux_ratio": flux_ratio(decoded, sr, seams)}


def mean_scores(scores: list[dict[str, float | None]], measures: tuple[str, ...] = MEASURES) -> dict[str, float]:
    """Mean of each measure over clips, skipping None (a ViSQOL not computed); NaN if none has it."""
    return {m: float(np.mean([r[m] for r in scores if r[m] is not None] or [np.nan])) for m in measures}


def print_table(mean: dict[str, dict[str, float]], measures: tuple[str, ...] = MEASURES,
                heads: tuple[str, ...] = HEADS, first: str = "codec") -> None:
    """The means as a markdown table, one row per codec (kbps to 2 decimals, the rest to 3)."""
    print(f"| {first} | " + " | ".join(heads) + " |\n|---|" + "---|" * len(heads))
    for name, m in mean.items():
        print(f"| {name} | " + " | ".join("" if np.isnan(m[k]) else f"{m[k]:.2f}" if k == "kbps" else f"{m[k]:.3f}"
                                          for k in measures) + " |")


def score_original(original: np.ndarray, sr: int) -> dict[str, float | None]:
    """The measures that have a value for the original itself (the scale the decodes are read on)."""
    return {m: None for m in MEASURES} | {
        "jump_ratio": level_jump_ratio(original[0], sr, boundary_positions(original.shape[1])),
        "peakiness": metrics.spectral_peakiness(original, sr), "onset_corr": 1.0,
        "flux_ratio": flux_ratio(original, sr, boundary_positions(original.shape[1]))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", required=True)
    ap.add_argument("--count", type=int, default=5, help="first N clips (sorted by path)")
    ap.add_argument("--model", action="append", default=[], help="NAME=WEIGHTS.safetensors (repeatable)")
    ap.add_argument("--opus", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--visqol", action=argparse.BooleanOptionalAction, default=True,
                    help="--no-visqol: the other measures only (quick checks of seams and envelope)")
    ap.add_argument("--out", required=True, help="JSON report")
    args = ap.parse_args(argv)

    from m2lcodec import load_codec
    from m2lcodec.baselines import get_baseline, run_baseline

    models = dict(m.split("=", 1) for m in args.model) or {"shipped": None}
    codecs = {name: load_codec(path, device="cpu") for name, path in models.items()}
    clips = find_clips(args.clips, args.count)
    rows: dict[str, dict[str, dict]] = {name: {} for name in
                                        ["original", *codecs, *(["opus-6k", "opus-12k"] if args.opus else [])]}
    for path in clips:
        audio, sr = read_audio(path)
        audio = audio.mean(axis=0, keepdims=True)
        if sr != 44100:
            sys.exit(f"error: {path} is at {sr} Hz; the seam measures assume 44.1 kHz clips")
        seconds = audio.shape[1] / sr
        rows["original"][path.name] = score_original(audio, sr)
        for name, codec in codecs.items():
            t0 = time.perf_counter()
            data = codec.compress(audio, sr, quant="int8")
            decoded, _ = codec.decompress(data)
            rows[name][path.name] = score(audio, decoded, sr, len(data) * 8 / 1000 / seconds, args.visqol)
            print(f"{path.name} {name}: {rows[name][path.name]} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
        for name in ("opus-6k", "opus-12k") if args.opus else ():
            res = run_baseline(get_baseline(name), audio, sr)
            rows[name][path.name] = score(audio, res.audio, sr, res.kbps, args.visqol)
    mean = {name: mean_scores(list(per.values())) for name, per in rows.items()}
    report = {"clips": [p.name for p in clips], "models": {n: {"path": p, "hash": codecs[n].info.hash}
                                                          for n, p in models.items()},
              "mean": mean, "per_clip": rows}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print_table(mean)


if __name__ == "__main__":
    main()
