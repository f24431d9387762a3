"""Are chunk boundaries measurable? Spectral flux and level jumps at the seams between 32768-sample chunks.

Per clip, three signals at the model rate (44.1 kHz; clips at other rates are resampled first):

* original    -- the clip itself (reference: its ratios should be ~1);
* ar          -- the codec's two-step autoregressive decode (`codec.decode`, seed 0);
* alone       -- every chunk decoded on its own: one step from pure noise at SIGMA_MAX with only its own
                 latents (the same seeded noise as the AR decode's first step), no context.

Where the seams are (m2lcodec/spectral.py): the codec pads PAD_LEFT = 1536 samples in front, frame j covers
padded samples [512 j, 512 j + 2048) and chunk t owns frames 64t .. 64t + 63. So in the decoded output
(padded index - 1536) chunk t's frames cover [32768 t - 1536, 32768 (t + 1)), and the overlap-add of two
neighbouring chunks is the 1536-sample crossfade [32768 t - 1536, 32768 t). `boundary_positions` returns
its start, b_t = 32768 t - 1536 (also where StreamingISTFT's block for chunk t begins); the metrics
treat [b, b + overlap) as the seam, overlap = 1536 by default.

Metrics (mono mix):

* flux ratio: log-magnitude STFT (Hann 1024, hop 256), flux = mean over bins of |difference between
  consecutive frames|; mean flux of the frame pairs that touch a seam / mean flux of all others;
* level-jump ratio: |dB difference| of the RMS of the 10 ms window ending at b and the 10 ms window
  starting at b + overlap, averaged over seams / the same at seeded random non-seam positions;
* periodic level error (decodes only): the level above 4 kHz per short frame (Hann 1024, hop 256), decode
  minus original in dB, folded at the 32768-sample chunk period into 32 phase bins and averaged per bin;
  its std across the bins (dB). A decode with no chunk grid (Opus) has no structure over that period; a
  chunk-periodic pattern (say, high-frequency energy at each chunk's start that fades) raises it.

Signals also include `opus-12k` (ffmpeg libopus, when available: `--no-opus` to skip), the reference for
the periodic level error of a codec without a chunk grid.

    python bench/seams.py --clips /root/bench-clips --out /root/seams [--model W.safetensors] [--count 10]

Writes OUT/seams.json (per clip and mean ratios, raw flux/jump values, arguments, model hash) and prints
a table. Ratios well above the original's mean the seams stand out.
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
import torch

from m2lcodec import schedule, spectral
from m2lcodec.audio import read_audio, resample
from m2lcodec.bench import find_clips
from m2lcodec.codec import chunk_noise, fit_length, model_length

SIGNALS = ("original", "ar", "alone", "opus-12k")
PERIODIC_CUTOFF_HZ = 4000.0
PERIODIC_BINS = 32
FLUX_N_FFT = 1024
FLUX_HOP = 256
LEVEL_WINDOW_S = 0.010


def boundary_positions(num_samples: int) -> list[int]:
    """Output sample indices (model rate) where a chunk seam starts, b_t = 32768 t - 1536 for t >= 1,
    keeping those inside (0, num_samples). The overlap-add crossfade is [b_t, b_t + PAD_LEFT)."""
    out = []
    t = 1
    while (b := t * spectral.CHUNK_SAMPLES - spectral.PAD_LEFT) < num_samples:
        out.append(b)
        t += 1
    return out


def _mono(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float64)
    return a if a.ndim == 1 else a.mean(axis=0)


def spectral_flux(audio: np.ndarray, n_fft: int = FLUX_N_FFT, hop: int = FLUX_HOP) -> np.ndarray:
    """Per consecutive frame pair (i, i + 1): mean over bins of |log|X_{i+1}| - log|X_i||| (natural log of
    the magnitude, floored at 1e-5 of the clip's peak magnitude). Frames: Hann n_fft, hop, no padding."""
    x = _mono(audio)
    if x.shape[0] < n_fft + hop:
        raise ValueError(f"audio too short for flux: {x.shape[0]} samples")
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    mag = np.abs(np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=1))
    logmag = np.log(np.maximum(mag, 1e-5 * max(float(mag.max()), 1e-12)))
    return np.abs(np.diff(logmag, axis=0)).mean(axis=1)


def flux_split(audio: np.ndarray, boundaries: Sequence[int], overlap: int = spectral.PAD_LEFT,
               n_fft: int = FLUX_N_FFT, hop: int = FLUX_HOP) -> tuple[float, float]:
    """(mean flux of the frame pairs whose span meets a seam [b, b + overlap], mean flux of the others)."""
    flux = spectral_flux(audio, n_fft, hop)
    start = np.arange(flux.shape[0]) * hop  # pair i spans samples [start, start + hop + n_fft)
    near = np.zeros(flux.shape[0], bool)
    for b in boundaries:
        near |= (start < b + max(overlap, 1)) & (start + hop + n_fft > b)
    if not near.any() or near.all():
        return math.nan, math.nan
    return float(flux[near].mean()), float(flux[~near].mean())


def flux_ratio(audio: np.ndarray, sample_rate: int, boundaries: Sequence[int],
               overlap: int = spectral.PAD_LEFT) -> float:
    """Mean spectral flux at the seams / elsewhere (~1 when the seams are not special). `sample_rate` is
    unused (the STFT is in samples) but kept for a uniform signature."""
    at, inside = flux_split(audio, boundaries, overlap)
    return at / inside if inside > 0 else math.nan


def _rms_db(x: np.ndarray, start: np.ndarray, n: int) -> np.ndarray:
    """RMS in dB of windows [s, s + n) for each start s (cumulative sums: O(len) total)."""
    c = np.concatenate([[0.0], np.cumsum(x * x)])
    energy = np.maximum((c[start + n] - c[start]) / n, 0.0)
    return 10 * np.log10(energy + 1e-12)


def level_jumps(audio: np.ndarray, sample_rate: int, positions: Sequence[int],
                overlap: int = spectral.PAD_LEFT, window_s: float = LEVEL_WINDOW_S) -> np.ndarray:
    """|dB(RMS of [p - w, p)) - dB(RMS of [p + overlap, p + overlap + w))| for each position p that fits."""
    x = _mono(audio)
    w = max(1, int(round(window_s * sample_rate)))
    p = np.asarray([q for q in positions if q - w >= 0 and q + overlap + w <= x.shape[0]], dtype=np.int64)
    if p.size == 0:
        return np.zeros(0)
    return np.abs(_rms_db(x, p - w, w) - _rms_db(x, p + overlap, w))


def random_positions(num_samples: int, boundaries: Sequence[int], sample_rate: int, count: int | None = None,
                     overlap: int = spectral.PAD_LEFT, window_s: float = LEVEL_WINDOW_S,
                     seed: int = 0) -> np.ndarray:
    """Seeded random positions whose level-jump windows stay clear of every seam (and of the ends).
    Default count: max(200, 20 per seam)."""
    w = max(1, int(round(window_s * sample_rate)))
    count = count or max(200, 20 * len(boundaries))
    lo, hi = w, num_samples - overlap - w
    if hi <= lo:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    cand = rng.integers(lo, hi, size=count * 4)
    ok = np.ones(cand.shape[0], bool)
    for b in boundaries:  # the span [p - w, p + overlap + w) must miss the seam [b, b + overlap)
        ok &= (cand + overlap + w <= b) | (cand - w >= b + overlap)
    return np.sort(cand[ok][:count])


def level_jump_ratio(audio: np.ndarray, sample_rate: int, boundaries: Sequence[int],
                     overlap: int = spectral.PAD_LEFT, seed: int = 0) -> float:
    """Mean level jump across the seams / mean level jump at random non-seam positions (~1 if unremarkable)."""
    at = level_jumps(audio, sample_rate, boundaries, overlap)
    ref = level_jumps(audio, sample_rate, random_positions(_mono(audio).shape[0], boundaries, sample_rate,
                                                          overlap=overlap, seed=seed), overlap)
    if at.size == 0 or ref.size == 0 or ref.mean() <= 0:
        return math.nan
    return float(at.mean() / ref.mean())


def periodic_level_error(decoded: np.ndarray, original: np.ndarray, sample_rate: int,
                         cutoff_hz: float = PERIODIC_CUTOFF_HZ, bins: int = PERIODIC_BINS,
                         n_fft: int = FLUX_N_FFT, hop: int = FLUX_HOP,
                         max_hz: float = math.inf) -> tuple[float, np.ndarray]:
    """(std over phase bins of the mean dB level error between `cutoff_hz` and `max_hz`, the per-bin means).

    Per frame: 10 log10 of the energy in the bins above the cutoff, decode minus original; frames where
    the original is more than 60 dB below its loudest such frame are left out. A frame's phase is its
    centre's position in the chunk grid of the output, ((centre + PAD_LEFT) mod 32768) / 32768."""
    x, y = _mono(original), _mono(decoded)
    n = min(x.shape[0], y.shape[0])
    win = np.hanning(n_fft + 1)[:-1]

    def level_db(a: np.ndarray) -> np.ndarray:
        frames = np.lib.stride_tricks.sliding_window_view(a[:n], n_fft)[::hop]
        spec = np.abs(np.fft.rfft(frames * win, axis=1)) ** 2
        freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
        high = (freqs >= cutoff_hz) & (freqs < max_hz)
        return 10 * np.log10(spec[:, high].sum(1) + 1e-12)

    ref, dec = level_db(x), level_db(y)
    keep = ref > ref.max() - 60
    centre = np.arange(ref.shape[0]) * hop + n_fft // 2
    phase = ((centre + spectral.PAD_LEFT) % spectral.CHUNK_SAMPLES) * bins // spectral.CHUNK_SAMPLES
    per_bin = np.array([np.mean((dec - ref)[keep & (phase == k)]) if (keep & (phase == k)).any() else np.nan
                        for k in range(bins)])
    return float(np.nanstd(per_bin)), per_bin


@torch.inference_mode()
def decode_chunks_alone(codec: Any, latents: np.ndarray, num_samples: int, seed: int = 0) -> np.ndarray:
    """Latents (C, T, K, D) -> (C, num_samples) float32 at 44.1 kHz, every chunk decoded on its own in one
    step from noise at SIGMA_MAX (chunk_noise(seed, t, 0): the AR decode's first-step noise), the chunks'
    spectrograms concatenated along frames and inverted in one overlap-add, trimmed as the codec does."""
    channels, total = latents.shape[:2]
    shape = (channels, 1, 2, spectral.FREQ_BINS, spectral.CHUNK_FRAMES)
    step = max(1, codec.batch_chunks // channels)
    specs = []
    for first in range(0, total, step):
        last = min(first + step, total)
        block = torch.from_numpy(np.ascontiguousarray(latents[:, first:last], dtype=np.float32))
        z = block.transpose(0, 1).reshape(-1, *block.shape[2:]).to(codec.device)  # (chunk, channel) order
        x = torch.cat([chunk_noise(seed, t, 0, shape) for t in range(first, last)]).to(codec.device)
        sigma = torch.full((x.shape[0], 1), schedule.SIGMA_MAX, device=codec.device)
        with codec._autocast():
            out = codec.model.denoise(x * schedule.SIGMA_MAX, sigma, codec.model.decoder_features(z))
        specs.append(out[:, 0].float().view(last - first, channels, *out.shape[2:]))
    spec = torch.cat(specs).permute(1, 2, 3, 0, 4).reshape(channels, 2, spectral.FREQ_BINS, -1)
    wave = spectral.trim(spectral.spec_to_wave(spec), num_samples)
    return wave.cpu().numpy().astype(np.float32)


def clip_signals(codec: Any, audio: np.ndarray, sample_rate: int, seed: int = 0,
                 opus: bool = True) -> dict[str, np.ndarray]:
    """{"original", "ar", "alone"[, "opus-12k"]}: the clip at the model rate and its decodes, all (C, n)."""
    sr = codec.sample_rate
    x = fit_length(resample(np.asarray(audio, np.float32), sample_rate, sr), model_length(audio.shape[1], sample_rate))
    latents = codec.encode(x, sr)
    out = {"original": x, "ar": codec.decode(latents, x.shape[1], sr, seed=seed),
           "alone": decode_chunks_alone(codec, latents, x.shape[1], seed)}
    if opus:
        from m2lcodec.baselines import get_baseline, run_baseline

        out["opus-12k"] = run_baseline(get_baseline("opus-12k"), x, sr).audio
    return out


def _clean(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def seam_metrics(audio: np.ndarray, sample_rate: int, overlap: int = spectral.PAD_LEFT, seed: int = 0) -> dict:
    """Flux and level-jump ratios (and their raw parts) of (C, n) model-rate audio at the chunk seams."""
    n = np.shape(audio)[-1]
    bounds = boundary_positions(n)
    flux_at, flux_in = flux_split(audio, bounds, overlap)
    jumps_at = level_jumps(audio, sample_rate, bounds, overlap)
    jumps_ref = level_jumps(audio, sample_rate, random_positions(n, bounds, sample_rate, overlap=overlap,
                                                                 seed=seed), overlap)
    jump_ratio = float(jumps_at.mean() / jumps_ref.mean()) if jumps_at.size and jumps_ref.size and \
        jumps_ref.mean() > 0 else math.nan
    return {"flux_ratio": _clean(flux_at / flux_in if flux_in > 0 else math.nan),
            "level_jump_ratio": _clean(jump_ratio),
            "flux_boundary": _clean(flux_at), "flux_inside": _clean(flux_in),
            "level_jump_boundary_db": _clean(float(jumps_at.mean()) if jumps_at.size else math.nan),
            "level_jump_random_db": _clean(float(jumps_ref.mean()) if jumps_ref.size else math.nan),
            "seams": len(bounds)}


def run_seams(codec: Any, clips: Sequence[Path], mono: bool = True, seed: int = 0,
              overlap: int = spectral.PAD_LEFT, root: Path | None = None,
              log: Callable[[str], None] | None = None, opus: bool = True) -> dict:
    """Seam metrics of the original, AR decode, chunk-alone decode (and Opus 12k) of every clip, plus
    their means; decodes also get the periodic level error against the original."""
    log = log or (lambda msg: None)
    per_clip: dict[str, dict[str, dict]] = {}
    for i, path in enumerate(clips):
        name = Path(path).relative_to(root).as_posix() if root is not None else Path(path).name
        audio, sr = read_audio(path)
        if mono:
            audio = audio.mean(axis=0, keepdims=True)
        t0 = time.perf_counter()
        signals = clip_signals(codec, audio, sr, seed, opus)
        per_clip[name] = {k: seam_metrics(v, codec.sample_rate, overlap, seed) for k, v in signals.items()}
        for k, v in signals.items():
            per_clip[name][k]["periodic_level_std_db"] = None if k == "original" else \
                _clean(periodic_level_error(v, signals["original"], codec.sample_rate)[0])
        log(f"[{i + 1}/{len(clips)}] {name}: " + ", ".join(
            f"{k} flux {_fmt(m['flux_ratio'])} jump {_fmt(m['level_jump_ratio'])}" for k, m in per_clip[name].items())
            + f" ({time.perf_counter() - t0:.1f} s)")
    mean = {}
    for s in [s for s in SIGNALS if all(s in c for c in per_clip.values())]:
        mean[s] = {}
        for key in ("flux_ratio", "level_jump_ratio", "periodic_level_std_db"):
            vals = [c[s][key] for c in per_clip.values() if c[s][key] is not None]
            mean[s][key] = float(np.mean(vals)) if vals else None
    return {"clips": list(per_clip), "mean": mean, "per_clip": per_clip}


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def print_table(result: dict) -> None:
    labels = {"original": "original", "ar": "AR decode", "alone": "chunk alone", "opus-12k": "Opus 12k"}
    print(f"{'signal':<12} {'flux ratio':>10} {'level-jump ratio':>16} {'periodic dB':>11}"
          f"   (mean over {len(result['clips'])} clips)")
    for s, m in result["mean"].items():
        print(f"{labels[s]:<12} {_fmt(m['flux_ratio']):>10} {_fmt(m['level_jump_ratio']):>16} "
              f"{_fmt(m['periodic_level_std_db']):>11}")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", required=True, help="folder of clips (e.g. made by bench/prepare_clips.py)")
    ap.add_argument("--model", default=None, help=".safetensors weights (default: the bundled model)")
    ap.add_argument("--count", type=int, default=10, help="first N clips (sorted by path)")
    ap.add_argument("--mono", action=argparse.BooleanOptionalAction, default=True,
                    help="mix clips to mono before coding (default; --no-mono codes every channel)")
    ap.add_argument("--seed", type=int, default=0, help="decoding noise and random-position seed")
    ap.add_argument("--overlap", type=int, default=spectral.PAD_LEFT,
                    help="seam width in samples after each boundary (default 1536, the overlap-add crossfade)")
    ap.add_argument("--opus", action=argparse.BooleanOptionalAction, default=True,
                    help="add Opus 12 kbps as a signal without a chunk grid (needs ffmpeg with libopus)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", required=True, help="output folder for seams.json")
    args = ap.parse_args(argv)

    from m2lcodec import load_codec

    codec = load_codec(args.model, device=args.device)
    clips = find_clips(args.clips, args.count)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"model {codec.info.name} ({codec.info.hash}); {len(clips)} clips", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    if args.opus:
        from m2lcodec.baselines import available_encoders

        if "libopus" not in available_encoders():
            sys.exit("error: no ffmpeg with libopus for the opus-12k reference (install ffmpeg, or pass --no-opus)")
    result = run_seams(codec, clips, mono=args.mono, seed=args.seed, overlap=args.overlap, root=Path(args.clips),
                       log=lambda msg: print(msg, file=sys.stderr, flush=True), opus=args.opus)
    report = {"args": vars(args), "model": {"name": codec.info.name, "hash": codec.info.hash},
              "geometry": {"sample_rate": codec.sample_rate, "chunk_samples": spectral.CHUNK_SAMPLES,
                           "pad_left": spectral.PAD_LEFT, "overlap": args.overlap,
                           "boundary": "b_t = 32768 t - 1536 (output samples), seam = [b_t, b_t + overlap)",
                           "flux_stft": {"n_fft": FLUX_N_FFT, "hop": FLUX_HOP}, "level_window_s": LEVEL_WINDOW_S},
              "seconds": round(time.perf_counter() - t0, 1), **result}
    (out / "seams.json").write_text(json.dumps(report, indent=2) + "\n")
    print_table(result)
    print(f"wrote {out / 'seams.json'}")


if __name__ == "__main__":
    main()
