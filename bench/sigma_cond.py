"""Decoding quality vs sigma_cond: the paper's Fig. 3 sweep (design doc section 5).

In two-step autoregressive decoding every chunk's first estimate is re-noised to `sigma_cond` and
refined with the next chunk; this script decodes the same quantised latents with a grid of
`sigma_cond` values and scores each decode against the original clip (ViSQOL, SI-SDR, mel distance).
Each clip is encoded once; its latents go through the container's quantiser (`pack` / `unpack`, i.e.
exactly what a .m2l file stores) and are then decoded once per value with seed 0. A value of 0 is
decoded at schedule.SIGMA_MIN (0.002), as the codec clamps it there.

    python bench/sigma_cond.py --clips /root/bench-clips --out /root/sigma-cond \\
        [--model W.safetensors] [--count 10] [--quant int8] [--values 0,0.2,0.4] [--no-visqol]

Writes OUT/sigma_cond.json (per value: the mean and per-clip metrics; the arguments and the model
hash) and OUT/sigma_cond.png (ViSQOL and mel distance vs sigma_cond), prints one line per value and
marks the best value by ViSQOL (by mel distance when ViSQOL is unavailable). Channels: --mono (the
default) mixes each clip to mono before encoding, as the issue measures; --stereo codes every channel.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from m2lcodec import metrics, schedule
from m2lcodec.audio import read_audio
from m2lcodec.bench import find_clips
from m2lcodec.container import pack, unpack

DEFAULT_VALUES = tuple(round(0.1 * i, 1) for i in range(11))  # 0.0, 0.1, ..., 1.0
METRICS = ("visqol", "si_sdr", "mel_distance")


def quantised_latents(codec: Any, audio: np.ndarray, sample_rate: int, quant: str) -> tuple[np.ndarray, int]:
    """Encode (C, N) audio and round-trip the latents through the .m2l container with `quant`.

    Returns (latents as a decoder reads them back, size of the .m2l bytes)."""
    latents = codec.encode(audio, sample_rate)
    header = codec.make_header(latents, audio.shape[1], sample_rate, quant, seed=0, sigma_cond=None)
    data = pack(header, latents)
    return unpack(data)[1], len(data)


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def best_value(results: Sequence[dict]) -> dict | None:
    """The best sweep entry: highest mean ViSQOL (ties: lower mel distance), or lowest mean mel distance
    without ViSQOL."""
    scored = [r for r in results if r["mean"]["visqol"] is not None]
    if scored:
        # ties (e.g. an untrained model's floor of 1.0) go to the lower mel distance
        best = max(scored, key=lambda r: (r["mean"]["visqol"], -(r["mean"]["mel_distance"] or math.inf)))
        return {"sigma_cond": best["sigma_cond"], "by": "visqol", "value": best["mean"]["visqol"]}
    scored = [r for r in results if r["mean"]["mel_distance"] is not None]
    if scored:
        best = min(scored, key=lambda r: r["mean"]["mel_distance"])
        return {"sigma_cond": best["sigma_cond"], "by": "mel_distance", "value": best["mean"]["mel_distance"]}
    return None


def run_sweep(codec: Any, clips: Sequence[Path], values: Sequence[float] = DEFAULT_VALUES, quant: str = "int8",
              mono: bool = True, use_visqol: bool = True, seed: int = 0, root: Path | None = None,
              log: Callable[[str], None] | None = None) -> dict:
    """Decode every clip's quantised latents with each `sigma_cond` in `values`, score against the original.

    Returns {"values", "clips", "results": [{"sigma_cond", "mean": {metric: float|None},
    "per_clip": {clip: {metric: float|None}}}], "best", "notes", "kbps"}; clips are named by their path
    relative to `root` (default: file name). ViSQOL is None throughout when `use_visqol` is False or
    visqol-python is missing."""
    if quant not in ("int8", "fp16"):
        raise ValueError(f"quant must be int8 or fp16, got {quant!r}")
    if not values:
        raise ValueError("no sigma_cond values to sweep")
    log = log or (lambda msg: None)
    notes: list[str] = []
    if not use_visqol:
        notes.append("ViSQOL not computed (--no-visqol)")
    visqol_on = use_visqol
    per_value: dict[float, dict[str, dict[str, float | None]]] = {float(v): {} for v in values}
    kbps: dict[str, float] = {}
    names = []
    for i, path in enumerate(clips):
        name = Path(path).relative_to(root).as_posix() if root is not None else Path(path).name
        if name in kbps:
            raise ValueError(f"two clips named {name}; pass root= to name them by relative path")
        names.append(name)
        audio, sr = read_audio(path)
        if mono:
            audio = audio.mean(axis=0, keepdims=True)
        t0 = time.perf_counter()
        latents, nbytes = quantised_latents(codec, audio, sr, quant)
        kbps[name] = nbytes * 8 / 1000 / (audio.shape[1] / sr)
        log(f"[{i + 1}/{len(clips)}] {name}: encoded {audio.shape[1] / sr:.1f} s ({kbps[name]:.2f} kbps, "
            f"{time.perf_counter() - t0:.1f} s)")
        for v in values:
            t0 = time.perf_counter()
            decoded = codec.decode(latents, audio.shape[1], sr, seed=seed, sigma_cond=float(v))
            row: dict[str, float | None] = {
                "si_sdr": _finite(metrics.si_sdr(audio, decoded)),
                "mel_distance": _finite(metrics.mel_distance(audio, decoded, sr)),
                "visqol": None,
            }
            if visqol_on:
                try:
                    row["visqol"] = _finite(metrics.visqol(audio, decoded, sr))
                except metrics.MetricUnavailable as err:
                    notes.append(f"ViSQOL unavailable ({err}); left null")
                    visqol_on = False
            per_value[float(v)][name] = row
            log(f"    sigma_cond {float(v):.3g}: " + ", ".join(
                f"{k} {row[k]:.3f}" for k in METRICS if row[k] is not None) + f" ({time.perf_counter() - t0:.1f} s)")
    results = [{"sigma_cond": v, "mean": {k: _mean([r[k] for r in rows.values()]) for k in METRICS},
                "per_clip": rows} for v, rows in per_value.items()]
    return {"values": [float(v) for v in values], "clips": names, "results": results,
            "best": best_value(results), "notes": notes, "kbps": kbps}


def write_plot(sweep: dict, path: Path) -> None:
    """Two panels, ViSQOL and mel distance vs sigma_cond: each clip faint, the mean bold, the best marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["sigma_cond"] for r in sweep["results"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    panels = (("visqol", "ViSQOL MOS-LQO (higher is better)"), ("mel_distance", "mel distance (lower is better)"))
    best = sweep.get("best")
    for ax, (key, label) in zip(axes, panels):
        for clip in sweep["clips"]:
            ys = [r["per_clip"][clip][key] for r in sweep["results"]]
            if any(y is not None for y in ys):
                ax.plot(xs, [np.nan if y is None else y for y in ys], color="0.75", lw=0.8)
        means = [r["mean"][key] for r in sweep["results"]]
        if any(m is not None for m in means):
            ax.plot(xs, [np.nan if m is None else m for m in means], "o-", color="C0", lw=2, label="mean")
            ax.legend(loc="best")
        else:
            ax.text(0.5, 0.5, f"{key} not available", ha="center", va="center", transform=ax.transAxes)
        if best is not None:
            ax.axvline(best["sigma_cond"], color="C3", ls="--", lw=1)
        ax.set_xlabel("sigma_cond")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    title = f"{len(sweep['clips'])} clips"
    if best is not None:
        title += f"; best sigma_cond {best['sigma_cond']:g} by {best['by']}"
    fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(sweep: dict) -> None:
    """One line per value: mean ViSQOL, SI-SDR and mel distance, the best marked with '*'."""
    best = sweep["best"]["sigma_cond"] if sweep.get("best") else None

    def cell(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    print(f"{'sigma_cond':>10} {'ViSQOL':>7} {'SI-SDR dB':>9} {'mel dist':>8}")
    for r in sweep["results"]:
        m = r["mean"]
        mark = " *" if r["sigma_cond"] == best else ""
        print(f"{r['sigma_cond']:>10.3g} {cell(m['visqol'], '.3f'):>7} {cell(m['si_sdr'], '.2f'):>9} "
              f"{cell(m['mel_distance'], '.4f'):>8}{mark}")
    if sweep.get("best"):
        print(f"best sigma_cond {best:g} by {sweep['best']['by']} (* above)")


def parse_values(text: str) -> list[float]:
    """'0,0.2,0.4' -> [0.0, 0.2, 0.4]; each value in [0, SIGMA_MAX]."""
    values = [float(v) for v in text.replace(" ", "").split(",") if v]
    if not values or any(not 0.0 <= v <= schedule.SIGMA_MAX for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated values in [0, {schedule.SIGMA_MAX:g}]")
    return values


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", required=True, help="folder of clips (e.g. made by bench/prepare_clips.py)")
    ap.add_argument("--model", default=None, help=".safetensors weights (default: the bundled model)")
    ap.add_argument("--count", type=int, default=10, help="first N clips (sorted by path)")
    ap.add_argument("--values", type=parse_values, default=list(DEFAULT_VALUES),
                    help="comma-separated sigma_cond values (default 0,0.1,...,1)")
    ap.add_argument("--mono", action=argparse.BooleanOptionalAction, default=True,
                    help="mix clips to mono before coding (default; --no-mono codes every channel)")
    ap.add_argument("--quant", default="int8", choices=["int8", "fp16"])
    ap.add_argument("--seed", type=int, default=0, help="decoding noise seed")
    ap.add_argument("--no-visqol", dest="visqol", action="store_false", help="skip ViSQOL (slow)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", required=True, help="output folder for sigma_cond.json and sigma_cond.png")
    args = ap.parse_args(argv)

    from m2lcodec import load_codec

    codec = load_codec(args.model, device=args.device)
    clips = find_clips(args.clips, args.count)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"model {codec.info.name} ({codec.info.hash}), default sigma_cond {codec.sigma_cond:g}; "
          f"{len(clips)} clips, {len(args.values)} values, {args.quant}, {'mono' if args.mono else 'all channels'}",
          file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    sweep = run_sweep(codec, clips, args.values, quant=args.quant, mono=args.mono, use_visqol=args.visqol,
                      seed=args.seed, root=Path(args.clips), log=lambda msg: print(msg, file=sys.stderr, flush=True))
    report = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "model": {"name": codec.info.name, "hash": codec.info.hash,
                        "default_sigma_cond": codec.sigma_cond},
              "sigma_min": schedule.SIGMA_MIN, "seconds": round(time.perf_counter() - t0, 1), **sweep}
    (out / "sigma_cond.json").write_text(json.dumps(report, indent=2) + "\n")
    try:
        write_plot(sweep, out / "sigma_cond.png")
    except ImportError:
        print("matplotlib is not installed: sigma_cond.png not written", file=sys.stderr)
    print_table(sweep)
    print(f"wrote {out / 'sigma_cond.json'}")


if __name__ == "__main__":
    main()
