"""Decode-side spectral-contrast postfilter: does sharpening the decode's smeared spectrum help? (session 23)

The decode's harmonic lines are smeared (bench/compare_models.py: spectral peakiness ~7.4 dB against the
originals' ~12.5; white noise scores ~6.4). Like a speech codec's postfilter, a variant here runs on the
decoded spectrogram only (the bitstream is unchanged), after the seam deblocker: the log of the compressed
magnitude minus its running mean over FREQ_BINS frequency bins is the local contrast D; D averaged over
TIME_FRAMES frames (centred) keeps what is stationary (harmonic lines) and drops the noise texture's
frame-to-frame fluctuation; the magnitude is then multiplied by exp(ALPHA * D_smoothed), phase kept, and,
with KEEP_POWER 1, rescaled so the running-mean linear power over FREQ_BINS bins is what it was (the
envelope, which the latents code well, stays put). Contrast is clamped to +-MAX_DB (in linear-amplitude dB).

Every clip (mono, 44.1 kHz) goes through int8 `.m2l` bytes and the codec's own chunk steps (the weights
file's sigma_cond, seed 0), then the weights file's deblocking, then each variant, and is scored on the
measures of bench/compare_models.py. "none" is the plain decode and must equal `Codec.decompress`.
Beware: spectral peakiness rewards any contrast, also a sharpened noise texture; judge by ViSQOL and
log-mel distance (the issue's bars), and read peakiness beside them.

    python bench/studies/postfilter.py --clips ~/calib-clips --count 10 \\
        --variant a05=0.5,9,5,1 --variant a1=1,9,5,1 --out r.json [--no-visqol]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_models import mean_scores, print_table, score, score_original  # noqa: E402
from deblock import decoded_spectrogram  # noqa: E402

from m2lcodec import load_codec, spectral  # noqa: E402
from m2lcodec.audio import read_audio  # noqa: E402
from m2lcodec.bench import find_clips  # noqa: E402
from m2lcodec.deblock import DeblockConfig, deblock_spectrogram  # noqa: E402


@dataclass(frozen=True)
class Contrast:
    alpha: float  # contrast gain: 0 = off, 1 = the local contrast doubled (in log magnitude)
    freq_bins: int  # odd width of the running mean over frequency (21.5 Hz per bin)
    time_frames: int  # odd width of the centred mean of the contrast over frames (11.6 ms per frame)
    keep_power: bool  # rescale to the running-mean power before the filter
    max_db: float = 12.0


def running_mean(x: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Centred box mean of odd `width` along `dim` of a (C, F, T) tensor, edges replicated."""
    if width <= 1:
        return x
    half = width // 2
    y = x.movedim(dim, -1)
    shape = y.shape
    y = F.pad(y.reshape(-1, 1, shape[-1]), (half, half), mode="replicate")
    return F.avg_pool1d(y, width, stride=1).reshape(shape).movedim(-1, dim)


def contrast_filter(spec: torch.Tensor, cfg: Contrast) -> torch.Tensor:
    """(C, 2, F, T) compressed spectrogram -> the same with its local spectral contrast expanded."""
    mag = spec.float().pow(2).sum(1).sqrt()  # (C, F, T) compressed magnitude
    log_mag = torch.log(mag + 1e-6)
    contrast = running_mean(log_mag - running_mean(log_mag, cfg.freq_bins, 1), cfg.time_frames, 2)
    limit = cfg.max_db / 20 * np.log(10) * spectral.AMP_POWER  # dB of |c| -> natural log of compressed mag
    gain = torch.exp((cfg.alpha * contrast).clamp(-limit, limit))
    if cfg.keep_power:
        power = (mag / spectral.AMP_SCALE) ** (2 / spectral.AMP_POWER)  # |c|^2
        before = running_mean(power, cfg.freq_bins, 1)
        after = running_mean(power * gain ** (2 / spectral.AMP_POWER), cfg.freq_bins, 1)
        gain = gain * ((before + 1e-12) / (after + 1e-12)) ** (spectral.AMP_POWER / 2)
    return spec * gain[:, None].to(spec.dtype)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", required=True)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--model", default=None)
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=ALPHA,FREQ_BINS,TIME_FRAMES,KEEP_POWER[,MAX_DB] (repeatable)")
    ap.add_argument("--visqol", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    codec = load_codec(args.model, device="cpu")
    deblock = DeblockConfig(strength=codec.deblock)
    variants: dict[str, Contrast | None] = {"none": None}
    for v in args.variant:
        name, spec = v.split("=", 1)
        alpha, fbins, frames, keep, *max_db = spec.split(",")
        variants[name] = Contrast(float(alpha), int(fbins), int(frames), bool(int(keep)),
                                  *(float(m) for m in max_db))
    rows: dict[str, dict[str, dict]] = {name: {} for name in ["original", *variants]}
    for path in find_clips(args.clips, args.count):
        audio, sr = read_audio(path)
        audio = audio.mean(axis=0, keepdims=True)
        assert sr == spectral.SAMPLE_RATE, f"{path}: {sr} Hz"
        t0 = time.perf_counter()
        data = codec.compress(audio, sr, quant="int8")
        kbps = len(data) * 8 / 1000 / (audio.shape[1] / sr)
        spec, n = decoded_spectrogram(codec, data)
        spec = deblock_spectrogram(spec, deblock) if deblock.active else spec
        rows["original"][path.name] = score_original(audio, sr)
        for name, cfg in variants.items():
            s = spec if cfg is None else contrast_filter(spec, cfg)
            wave = spectral.trim(spectral.spec_to_wave(s), n).numpy()
            if cfg is None:
                ref, _ = codec.decompress(data)
                assert np.allclose(ref, wave, atol=1e-4), "the study's plain decode differs from the codec's"
            rows[name][path.name] = score(audio, wave, sr, kbps, args.visqol)
        print(f"{path.name}: " + ", ".join(f"{k} {rows[k][path.name]['mel_distance']:.3f}/"
                                           f"{rows[k][path.name]['peakiness']:.2f}" for k in variants)
              + f" ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    mean = {name: mean_scores(list(per.values())) for name, per in rows.items()}
    Path(args.out).write_text(json.dumps({"args": vars(args), "mean": mean, "per_clip": rows}, indent=1) + "\n")
    print_table(mean, first="decode")


if __name__ == "__main__":
    main()
