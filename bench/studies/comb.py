"""The decoder's frequency comb, and a fixed equaliser against it: measured and rejected (session 23).

The decoder draws each 4 x 2 (frequency x time) patch of the spectrogram from one token (the stem,
m2lcodec/model.py), and the shipped model leaves a pattern with the patch's period in frequency: in its
output spectrogram, bins 4k + 1 are ~3 dB low and bins 4k + 3 ~2.6 dB high against the original, across
the whole spectrum and in every clip (in the audio, re-analysed, 4k + 3 stands ~2.7 dB above the rest).
The equaliser tried here is one gain per bin on the decoded spectrogram, fitted on --fit-clips (training
clips: int8 `.m2l` bytes, the codec's own chunk steps, before deblocking): per bin, the mean residual
(decode minus original, dB, over loud frames and clips) of the bins with the same phase (bin mod 4)
within 32 bins, minus the mean of all bins there. It is scored on --clips (val clips): the per-phase mean
residual of the model's spectrogram and of the audio as decoded (re-analysed), and the decode with and
without it (then the weights file's deblocking, as `m2lcodec decompress`) on the measures of
bench/compare_models.py. "none" must equal `Codec.decompress`. docs/codec.md, "No comb equaliser".

    python bench/studies/comb.py --fit-clips ~/calib-clips --clips ~/bench-clips --count 10 --out r.json \\
        [--no-visqol]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_models import mean_scores, print_table, score, score_original  # noqa: E402
from deblock import decoded_spectrogram  # noqa: E402

from m2lcodec import load_codec, spectral  # noqa: E402
from m2lcodec.audio import read_audio  # noqa: E402
from m2lcodec.bench import find_clips  # noqa: E402
from m2lcodec.deblock import DeblockConfig, deblock_spectrogram  # noqa: E402

PERIOD = 4  # the stem's frequency factor in every preset
WINDOW_BINS = 64  # ~1.4 kHz: the comb's depth changes slowly with frequency (3.2 dB low, 2.3 dB above 8 kHz)


def log_magnitude_db(spec: torch.Tensor) -> torch.Tensor:
    """(C, 2, F, T) compressed spectrogram -> (C, F, T) dB of the linear STFT magnitude (floored at -120 dB)."""
    mag = spec.float().pow(2).sum(-3).sqrt() / spectral.AMP_SCALE
    return 20.0 / spectral.AMP_POWER * torch.log10(mag.clamp_min(10 ** (-6 * spectral.AMP_POWER)))


def periodic_part(residual_db: np.ndarray, period: int = PERIOD, window_bins: int = WINDOW_BINS) -> np.ndarray:
    """(F,) residual -> (F,) its component of period `period` bins: at bin b, the mean over the bins
    j = b (mod period) within window_bins / 2 of b, minus the mean over all bins there."""
    r = np.asarray(residual_db, np.float64)
    box = np.ones(window_bins + 1)
    smooth = lambda x: np.convolve(x, box, mode="same")  # noqa: E731  (sums over the centred window)
    all_mean = smooth(r) / smooth(np.ones_like(r))
    phase = np.arange(len(r)) % period
    out = np.empty_like(r)
    for k in range(period):
        mask = (phase == k).astype(np.float64)
        phase_mean = smooth(r * mask) / np.maximum(smooth(mask), 1.0)
        out[phase == k] = (phase_mean - all_mean)[phase == k]
    return out


def fit_profile(decoded: list[torch.Tensor], originals: list[torch.Tensor], period: int = PERIOD,
                window_bins: int = WINDOW_BINS) -> np.ndarray:
    """Decoded and original compressed spectrograms of the same clips ((C, 2, F, T) each, frames aligned)
    -> (F,) comb profile in dB (what the decode has too much; `apply_comb` divides it out). Frames quieter
    than 60 dB below the clip's loudest are left out (the floor's log is noise)."""
    total, count = np.zeros(spectral.FREQ_BINS), np.zeros(spectral.FREQ_BINS)
    for dec, orig in zip(decoded, originals, strict=True):
        d, o = log_magnitude_db(dec), log_magnitude_db(orig)
        frames = min(d.shape[-1], o.shape[-1])
        d, o = d[..., :frames], o[..., :frames]
        frame_db = 10 * torch.log10((10 ** (o / 10)).mean(-2))  # (C, T) frame power of the original
        loud = (frame_db >= frame_db.amax() - 60.0).to(d.dtype)[:, None, :]  # (C, 1, T)
        total += ((d - o) * loud).sum((0, 2)).double().numpy()
        count += loud.sum((0, 2)).expand(d.shape[-2]).double().numpy()
    return periodic_part(total / np.maximum(count, 1.0), period, window_bins)


def apply_comb(spec: torch.Tensor, profile_db: torch.Tensor | None) -> torch.Tensor:
    """(..., 2, F, T) decoded compressed spectrogram -> the same with the comb divided out (None: as is)."""
    if profile_db is None:
        return spec
    gain = torch.pow(10.0, -profile_db.to(spec.device, torch.float32) * (spectral.AMP_POWER / 20.0))
    return spec * gain[:, None].to(spec.dtype)


def clip_pair(codec, path: Path) -> tuple[np.ndarray, bytes, torch.Tensor, torch.Tensor, int]:
    """(mono audio, int8 bytes, decoded spectrogram before deblocking, original's spectrogram, samples)."""
    audio, sr = read_audio(path)
    audio = audio.mean(axis=0, keepdims=True)
    assert sr == spectral.SAMPLE_RATE, f"{path}: {sr} Hz"
    data = codec.compress(audio, sr, quant="int8")
    spec, n = decoded_spectrogram(codec, data)
    original = spectral.wave_to_spec(spectral.pad_to_chunks(torch.from_numpy(audio).float())[0])
    return audio, data, spec, original, n


def phase_means(residual_db: np.ndarray, period: int = PERIOD) -> list[float]:
    """Mean residual (dB) of the bins of each phase (bin mod period), bins 3-900 (64 Hz - 19 kHz),
    after taking out each bin's 65-bin neighbourhood mean (the broad envelope error)."""
    r = residual_db - np.convolve(residual_db, np.ones(65) / 65, mode="same")
    bins = np.arange(3, 900)
    return [float(r[bins[bins % period == k]].mean()) for k in range(period)]


def mean_residual(dec: torch.Tensor, orig: torch.Tensor) -> np.ndarray:
    """(F,) mean over frames of decode minus original, dB."""
    frames = min(dec.shape[-1], orig.shape[-1])
    return (log_magnitude_db(dec[..., :frames]) - log_magnitude_db(orig[..., :frames])).mean((0, 2)).numpy()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit-clips", required=True, help="clips the profile is fitted on (training clips)")
    ap.add_argument("--fit-count", type=int, default=10)
    ap.add_argument("--clips", required=True, help="clips it is scored on (val clips)")
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--model", default=None)
    ap.add_argument("--window-bins", type=int, default=WINDOW_BINS)
    ap.add_argument("--visqol", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    codec = load_codec(args.model, device="cpu")
    deblock = DeblockConfig(strength=codec.deblock)
    t0 = time.perf_counter()
    fit = [clip_pair(codec, p)[2:4] for p in find_clips(args.fit_clips, args.fit_count)]
    profile = fit_profile([d for d, _ in fit], [o for _, o in fit], window_bins=args.window_bins)
    print(f"fitted on {len(fit)} clips in {time.perf_counter() - t0:.0f} s; profile per phase (dB): "
          f"{np.round(phase_means(profile), 2).tolist()}", file=sys.stderr, flush=True)
    profile_t = torch.from_numpy(profile).float()

    rows: dict[str, dict[str, dict]] = {name: {} for name in ("original", "none", "comb")}
    phases: dict[str, list[list[float]]] = {"none": [], "comb": [], "none (audio)": [], "comb (audio)": []}
    for path in find_clips(args.clips, args.count):
        t0 = time.perf_counter()
        audio, data, spec, original, n = clip_pair(codec, path)
        kbps = len(data) * 8 / 1000 / (audio.shape[1] / spectral.SAMPLE_RATE)
        rows["original"][path.name] = score_original(audio, spectral.SAMPLE_RATE)
        for name, s in (("none", spec), ("comb", apply_comb(spec, profile_t))):
            phases[name].append(phase_means(mean_residual(s, original)))
            s = deblock_spectrogram(s, deblock) if deblock.active else s
            wave = spectral.trim(spectral.spec_to_wave(s), n).numpy()
            heard = spectral.wave_to_spec(spectral.pad_to_chunks(torch.from_numpy(wave).float())[0])
            phases[f"{name} (audio)"].append(phase_means(mean_residual(heard, original)))
            if name == "none":
                ref, _ = codec.decompress(data)
                assert np.allclose(ref, wave, atol=1e-4), "the study's plain decode differs from the codec's"
            rows[name][path.name] = score(audio, wave, spectral.SAMPLE_RATE, kbps, args.visqol)
        print(f"{path.name}: mel {rows['none'][path.name]['mel_distance']:.3f} -> "
              f"{rows['comb'][path.name]['mel_distance']:.3f}, phases {np.round(phases['none'][-1], 1).tolist()} -> "
              f"{np.round(phases['comb'][-1], 1).tolist()} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    mean = {name: mean_scores(list(per.values())) for name, per in rows.items()}
    phase_mean = {k: np.mean(v, axis=0).round(3).tolist() for k, v in phases.items()}
    Path(args.out).write_text(json.dumps({"args": vars(args), "profile_db": profile.round(3).tolist(),
                                          "phase_residual_db": phase_mean, "mean": mean, "per_clip": rows},
                                         indent=1) + "\n")
    print_table(mean, first="decode")
    print("residual per phase (bin mod 4), dB, on the scored clips: " + ", ".join(f"{k} {v}" for k, v in phase_mean.items()))

if __name__ == "__main__":
    main()
