"""Spectrograms of original vs decoded clips (the model card's picture), through the real codec.

Each clip (mixed to mono) is compressed to int8 .m2l bytes and decompressed with the CLI's defaults
(the model file's sigma_cond, seed 0); Opus 6 kbps of the same clip is shown beside it when ffmpeg has
libopus. Log-magnitude STFT (Hann 2048, hop 512) in dB on one scale per row (the original's peak
to 90 dB below), 0-16 kHz, the chunk grid marked on the decode.

    python bench/spectrogram.py --clips ~/bench-clips --names 000,003 --model W --out docs/spectrogram.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from m2lcodec import spectral
from m2lcodec.audio import read_audio
from m2lcodec.bench import find_clips


def log_spectrogram(x: np.ndarray, n_fft: int = 2048, hop: int = 512) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    mag = np.abs(np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=1)).T
    return 20 * np.log10(mag + 1e-6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", required=True)
    ap.add_argument("--names", default="", help="comma-separated prefixes of clip file names (default: first 2)")
    ap.add_argument("--model", default=None, help=".safetensors weights (default: the bundled model)")
    ap.add_argument("--seconds", type=float, default=6.0, help="show the first N seconds")
    ap.add_argument("--no-opus", dest="opus", action="store_false")
    ap.add_argument("--out", required=True, help="PNG path")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from m2lcodec import load_codec

    codec = load_codec(args.model)
    clips = find_clips(args.clips)
    if args.names:
        clips = [c for p in args.names.split(",") for c in clips if c.name.startswith(p)]
    clips = clips[:2] if not args.names else clips
    columns = ["original", f"m2lcodec int8 ({codec.info.name})"] + (["Opus 6 kbps"] if args.opus else [])
    fig, axes = plt.subplots(len(clips), len(columns), figsize=(5 * len(columns), 3.2 * len(clips)),
                             squeeze=False, constrained_layout=True)
    for row, path in enumerate(clips):
        audio, sr = read_audio(path)
        mono = audio.mean(axis=0, keepdims=True)
        data = codec.compress(mono, sr)
        decoded, _ = codec.decompress(data)
        signals = [mono[0], decoded[0]]
        kbps = [None, len(data) * 8 / 1000 / (mono.shape[1] / sr)]
        if args.opus:
            from m2lcodec.baselines import get_baseline, run_baseline

            res = run_baseline(get_baseline("opus-6k"), mono, sr)
            signals.append(res.audio[0])
            kbps.append(res.kbps)
        n = int(args.seconds * sr)
        top = log_spectrogram(signals[0][:n]).max()  # one dB scale per row: the original's
        for col, (x, rate) in enumerate(zip(signals, kbps)):
            ax = axes[row][col]
            spec = log_spectrogram(x[:n])
            ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=top - 90, vmax=top,
                      extent=(0, n / sr, 0, sr / 2000))
            ax.set_ylim(0, 16)
            if col == 1:  # the chunk grid: seams at 32768 t - 1536 output samples
                for t in range(1, int(n / spectral.CHUNK_SAMPLES) + 1):
                    ax.axvline((t * spectral.CHUNK_SAMPLES - spectral.PAD_LEFT) / sr, color="c", lw=0.5, alpha=0.6)
            title = columns[col] + ("" if rate is None else f", {rate:.1f} kbps")
            ax.set_title(f"{path.name}: {title}", fontsize=9)
            ax.set_xlabel("s")
            ax.set_ylabel("kHz")
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
