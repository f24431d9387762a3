"""Where the chunk-periodic level error of the decode comes from, and what a fixed equaliser can do.

`source`: decodes clips with the codec's own steps (`Codec._chunk_steps`, exact latents, sigma_cond 0)
and prints the mean level error above 4 kHz per frame position inside the chunk (64 positions), twice:
in the model's output spectrogram, and after the inverse STFT and a fresh analysis of the waveform (what
a listener gets). A pattern with the period of the coarsest token grid (16 frames in `small`) points at
the network's non-overlapping resampling layers; a pattern only after the inverse STFT at the mixing of
inconsistent frames.

`eq`: calibrates a gain table (64 frame positions x 32 log-spaced bands, dB) on *training* clips so that
the decode's mean band level per position matches the original's (4 damped iterations on the cached
decodes), then scores variants of it on val clips: periodic level error (bench/seams.py), level-jump
ratio and mel distance.

    python bench/studies/periodic_source.py source --clips ~/bench-clips --count 3
    python bench/studies/periodic_source.py eq --train-clips ~/calib-clips --clips ~/bench-clips

(~/calib-clips: `python bench/prepare_clips.py --list ~/m2l-corpus/train.txt --out ~/calib-clips
--count 32 --seed 1`). Results: docs/training.md, "Chunk-periodic level error".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seams import boundary_positions, level_jump_ratio, periodic_level_error  # noqa: E402

from m2lcodec import spectral  # noqa: E402
from m2lcodec.audio import read_audio  # noqa: E402
from m2lcodec.bench import find_clips  # noqa: E402
from m2lcodec.metrics import mel_distance  # noqa: E402

BANDS = 32


def band_matrix() -> tuple[np.ndarray, torch.Tensor]:
    """Band index of each of the 1024 bins (log-spaced edges from bin 4) and the (bands, 1024) sum matrix."""
    edges = np.unique(np.round(np.geomspace(4, 1024, BANDS + 1)).astype(int))
    edges[0] = 0
    band_of = np.zeros(1024, int)
    for b in range(len(edges) - 1):
        band_of[edges[b]:edges[b + 1]] = b
    return band_of, torch.from_numpy(np.eye(len(edges) - 1)[band_of].T).float()


def band_db(spec: torch.Tensor, bands: torch.Tensor) -> np.ndarray:
    """Compressed (1, 2, 1024, T) -> (bands, T) energy in dB."""
    power = spectral.expand_amplitude(spec).abs()[0].pow(2)
    return (10 * torch.log10(bands @ power + 1e-10)).numpy()


def decode_raw(codec, path: Path) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(model output spectrogram, original spectrogram, mono audio) of one 44.1 kHz clip."""
    audio, sr = read_audio(path)
    mono = audio.mean(axis=0, keepdims=True)
    if sr != spectral.SAMPLE_RATE:
        sys.exit(f"error: {path} is not at 44.1 kHz")
    ref = spectral.wave_to_spec(spectral.pad_to_chunks(torch.from_numpy(mono))[0])
    dec = torch.cat([s for _, s, _ in codec._chunk_steps(codec.encode(mono, sr), 0, 0.0, 0)], dim=-1)
    return dec, ref, mono


def to_wave(spec: torch.Tensor, n: int) -> torch.Tensor:
    return spectral.trim(spectral.spec_to_wave(spec.float()), n)


def per_position(err: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(bands, T) errors -> (64, bands) mean over the frames at each chunk position (kept frames only)."""
    pos = np.arange(err.shape[1]) % spectral.CHUNK_FRAMES
    out = np.zeros((spectral.CHUNK_FRAMES, err.shape[0]))
    for p in range(spectral.CHUNK_FRAMES):
        k = keep[:, pos == p]
        out[p] = np.where(k, err[:, pos == p], 0).sum(1) / np.maximum(k.sum(1), 1)
    return out


def apply_gain(spec: torch.Tensor, table: np.ndarray, band_of: np.ndarray) -> torch.Tensor:
    """Scale the compressed spectrogram by table[position, band] dB of linear magnitude."""
    frames = spec.shape[-1]
    g = torch.from_numpy(table[np.arange(frames) % spectral.CHUNK_FRAMES][:, band_of].T).float()
    return spec * 10 ** (spectral.AMP_POWER * g / 20)


def reanalysed(spec: torch.Tensor, n: int) -> torch.Tensor:
    return spectral.wave_to_spec(spectral.pad_to_chunks(to_wave(spec, n))[0])


def cmd_source(codec, clips: list[Path]) -> None:
    band_of, bands = band_matrix()
    high = torch.zeros(1, 1024)
    high[0, int(4000 / spectral.SAMPLE_RATE * spectral.N_FFT):] = 1
    spec_rows, wave_rows = [], []
    for path in clips:
        dec, ref, mono = decode_raw(codec, path)
        frames = min(dec.shape[-1], ref.shape[-1])
        r = band_db(ref[..., :frames], high)
        keep = r > r.max() - 60
        spec_rows.append(per_position(band_db(dec[..., :frames], high) - r, keep)[:, 0])
        re = reanalysed(dec, mono.shape[1])[..., :frames]
        wave_rows.append(per_position(band_db(re, high) - r, keep)[:, 0])
    np.set_printoptions(precision=1, linewidth=200, suppress=True)
    for name, rows in (("model output spectrogram", spec_rows), ("after inverse STFT + analysis", wave_rows)):
        m = np.mean(rows, 0)
        print(f"{name}: level error above 4 kHz per frame position (dB), std {m.std():.2f}\n{m}")


def cmd_eq(codec, train: list[Path], val: list[Path], iterations: int = 4, damping: float = 0.9) -> None:
    band_of, bands = band_matrix()
    cal = [decode_raw(codec, p) for p in train]
    table = np.zeros((spectral.CHUNK_FRAMES, bands.shape[0]))
    for it in range(iterations):
        errs = []
        for dec, ref, mono in cal:
            re = reanalysed(apply_gain(dec, table, band_of), mono.shape[1])
            frames = min(re.shape[-1], ref.shape[-1])
            r = band_db(ref[..., :frames], bands)
            errs.append(per_position(band_db(re[..., :frames], bands) - r, r > r.max() - 60))
        err = np.mean(errs, 0)
        print(f"iteration {it}: mean |error| {np.abs(err).mean():.2f} dB, periodic std {err.std(0).mean():.2f} dB")
        table -= damping * err
    periodic = table - table.mean(0, keepdims=True)
    smooth = np.stack([np.convolve(np.r_[g[-2:], g, g[:2]], np.ones(5) / 5, "valid") for g in periodic.T], 1)
    variants = {"none": np.zeros_like(table), "full table": table, "periodic part": periodic,
                "periodic part, smoothed over 5 positions": smooth, "half the periodic part": 0.5 * periodic}
    decoded = [decode_raw(codec, p) for p in val]
    print("| equaliser | periodic dB | level-jump ratio | mel distance |\n|---|---|---|---|")
    for name, t in variants.items():
        rows = []
        for dec, _, mono in decoded:
            w = to_wave(apply_gain(dec, t, band_of), mono.shape[1]).numpy()
            rows.append((periodic_level_error(w, mono, spectral.SAMPLE_RATE)[0],
                         level_jump_ratio(w[0], spectral.SAMPLE_RATE, boundary_positions(mono.shape[1])),
                         mel_distance(mono, w, spectral.SAMPLE_RATE)))
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in np.mean(rows, 0)) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("source", "eq"))
    ap.add_argument("--clips", required=True, help="val clips (scored)")
    ap.add_argument("--count", type=int, default=5)
    ap.add_argument("--train-clips", help="eq: training clips (calibration)")
    ap.add_argument("--train-count", type=int, default=16)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    from m2lcodec import load_codec

    codec = load_codec(args.model, device="cpu")
    if args.what == "source":
        cmd_source(codec, find_clips(args.clips, args.count))
    else:
        if not args.train_clips:
            sys.exit("error: eq needs --train-clips")
        cmd_eq(codec, find_clips(args.train_clips, args.train_count), find_clips(args.clips, args.count))


if __name__ == "__main__":
    main()
