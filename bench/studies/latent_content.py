"""What do a model's latents carry about a chunk's time structure, and how much of it does the decode render?

Each 0.74 s chunk's log-mel spectrogram (32 bands x 31 frames, n_fft 2048, hop 1024) is split into its
*level* (the mean of each band over the chunk: the timbre) and its *motion* (what is left: onsets, notes
changing, the level moving inside the chunk). Ridge regressions from the chunk's K x 64 latents, fitted on
chunks of training files and scored on chunks of val files, say how much of each part the latents hold
linearly (R^2 on val; a lower bound on what they hold). The codec's own decode of the same val audio
(`Codec.decode`, the CLI's decode, from float latents) is scored the same way against the original. If the
latents hold motion that the decode does not render, the decoder is what to train; if they hold none, the
encoder is. A second, nonlinear reading: the decoder's envelope channel (channel 0 of its finest features,
trained by the envelope term to equal the chunk's magnitude envelope on the 256 x 32 grid,
docs/training.md) scored with the same level/motion split against the true envelope. A third part, the
*lines* (session 23): each chunk's mean fine spectrum (60-2000 Hz, 10.8 Hz bins) minus its running median
over 250 Hz, i.e. where the notes' harmonics stand above their neighbourhood (what spectral peakiness
asks for), read from the latents the same way and compared with the decode's.

    python bench/studies/latent_content.py --model m2lcodec/weights/default.safetensors \\
        --train ~/m2l-corpus/train.txt --val ~/m2l-corpus/val.txt --out latent_content.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from m2lcodec.codec import load_codec
from m2lcodec.data import SAMPLE_RATE, cached_audio, list_audio
from m2lcodec.metrics import log_mel_spectrogram
from m2lcodec.spectral import CHUNK_SAMPLES, envelope

N_FFT, HOP, N_MELS = 2048, 1024, 32
LINE_FFT, LINE_FMIN, LINE_FMAX, LINE_WIDTH_HZ = 4096, 60.0, 2000.0, 250.0  # as metrics.spectral_peakiness


def excerpts(files: list[Path], cache_dir: Path, seconds: float, count: int, seed: int) -> list[np.ndarray]:
    """Mono float32 excerpts of `seconds` from the middle of up to `count` files (files shorter are skipped)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(files))
    n = int(seconds * SAMPLE_RATE) // CHUNK_SAMPLES * CHUNK_SAMPLES
    out = []
    for i in order:
        pcm = cached_audio(files[i], cache_dir)
        if pcm.shape[1] < n:
            continue
        start = (pcm.shape[1] - n) // 2
        out.append(np.asarray(pcm[:, start:start + n], np.float32).mean(axis=0) / 32768.0)
        if len(out) == count:
            break
    return out


def chunk_mels(audio: np.ndarray) -> np.ndarray:
    """(samples,) -> (chunks, frames * bands): the log-mel of each chunk's 32768 samples."""
    chunks = len(audio) // CHUNK_SAMPLES
    return np.stack([log_mel_spectrogram(audio[t * CHUNK_SAMPLES:(t + 1) * CHUNK_SAMPLES], SAMPLE_RATE,
                                         N_FFT, HOP, N_MELS).ravel() for t in range(chunks)])


def chunk_lines(audio: np.ndarray) -> np.ndarray:
    """(samples,) -> (chunks, bins): each chunk's harmonic lines, i.e. its mean log magnitude spectrum
    (Hann 4096, hop 1024, 60-2000 Hz, 10.8 Hz bins) minus its running median over 250 Hz: what stands
    above the neighbourhood (where the notes are), with the envelope (the level part) taken out."""
    freqs = np.fft.rfftfreq(LINE_FFT, 1.0 / SAMPLE_RATE)
    band = (freqs >= LINE_FMIN) & (freqs <= LINE_FMAX)
    half = int(round(LINE_WIDTH_HZ / (SAMPLE_RATE / LINE_FFT) / 2))
    win = np.hanning(LINE_FFT).astype(np.float32)
    rows = []
    for t in range(len(audio) // CHUNK_SAMPLES):
        seg = audio[t * CHUNK_SAMPLES:(t + 1) * CHUNK_SAMPLES]
        frames = np.lib.stride_tricks.sliding_window_view(seg, LINE_FFT)[::1024] * win
        level = 20 * np.log10(np.abs(np.fft.rfft(frames, axis=1))[:, band] + 1e-6).mean(0)
        padded = np.pad(level, half, mode="edge")
        rows.append(level - np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=-1))
    return np.stack(rows)


def line_correlation(target: np.ndarray, estimate: np.ndarray) -> float:
    """Mean over chunks of the correlation across bins of two (chunks, bins) line profiles."""
    t, e = target - target.mean(1, keepdims=True), estimate - estimate.mean(1, keepdims=True)
    return float(((t * e).sum(1) / np.sqrt((t ** 2).sum(1) * (e ** 2).sum(1) + 1e-12)).mean())


def fixed_share(lines: np.ndarray) -> float:
    """Share of the lines' variance that is one profile common to all chunks (a fixed pattern, e.g. the
    stem's comb, rather than the music's notes, which change from chunk to chunk and file to file)."""
    common = lines.mean(0)
    return float(((common - common.mean()) ** 2).mean() / lines.var())


def envelope_parts(codec, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(true, decoder-predicted) envelopes (chunks, time, freq) on the decoder's finest grid."""
    true, pred = [], []
    with torch.inference_mode():
        for c in clips:
            n = len(c) // CHUNK_SAMPLES
            spec = torch.cat([s for _, s in codec._spec_batches(c[None], SAMPLE_RATE)])[:n]
            feat = codec.model.decoder_features(codec.model.encode(spec))[0][:, 0].float()
            true.append(envelope(spec, tuple(feat.shape[-2:])).transpose(1, 2).numpy())
            pred.append(feat.transpose(1, 2).numpy())
    return np.concatenate(true), np.concatenate(pred)


def level_motion(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(chunks, time, freq) -> level (chunks, freq), motion (chunks, time * freq)."""
    level = x.mean(axis=1)
    return level, (x - level[:, None]).reshape(len(x), -1)


def split_parts(mels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(chunks, frames * bands) log-mels -> level (chunks, bands) and motion (chunks, frames * bands)."""
    return level_motion(mels.reshape(len(mels), -1, N_MELS))


def r2(target: np.ndarray, estimate: np.ndarray) -> float:
    """1 - residual / total sum of squares, the total taken around the target's mean over chunks."""
    return float(1 - ((target - estimate) ** 2).sum() / ((target - target.mean(axis=0)) ** 2).sum())


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit y ~ standardised x; returns (x mean, x std, weights, y mean)."""
    mx, sx, my = x.mean(0), x.std(0) + 1e-6, y.mean(0)
    xs = (x - mx) / sx
    w = np.linalg.solve(xs.T @ xs + lam * np.eye(x.shape[1]), xs.T @ (y - my))
    return mx, sx, w, my


def predict(fit: tuple[np.ndarray, ...], x: np.ndarray) -> np.ndarray:
    mx, sx, w, my = fit
    return (x - mx) / sx @ w + my


def best_ridge(x: np.ndarray, y: np.ndarray, lams: list[float]) -> tuple[tuple[np.ndarray, ...], float]:
    """Pick lambda on the last fifth of the training chunks, then refit on all of them."""
    cut = len(x) * 4 // 5
    scores = {lam: r2(y[cut:], predict(ridge(x[:cut], y[:cut], lam), x[cut:])) for lam in lams}
    lam = max(scores, key=scores.get)
    return ridge(x, y, lam), lam


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="weights file (default: the bundled model)")
    ap.add_argument("--train", required=True, help="file list to fit the probes on")
    ap.add_argument("--val", required=True, help="file list to score on")
    ap.add_argument("--cache-dir", default=str(Path.home() / "m2l-cache"))
    ap.add_argument("--train-files", type=int, default=100)
    ap.add_argument("--val-files", type=int, default=26)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--no-decode", action="store_true", help="skip the codec decode (the slow part)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the scores here as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cache = Path(args.cache_dir)
    codec = load_codec(args.model, device="cpu")
    t0 = time.time()

    def latents_of(clips: list[np.ndarray]) -> list[np.ndarray]:
        return [codec.encode(c[None], SAMPLE_RATE) for c in clips]

    def chunk_rows(latents: list[np.ndarray], clips: list[np.ndarray]) -> np.ndarray:
        # chunk t's frames end at sample (t + 1) * 32768 of the input; the extra last chunk covers the tail
        return np.concatenate([z[0, :len(c) // CHUNK_SAMPLES].reshape(len(c) // CHUNK_SAMPLES, -1)
                               for z, c in zip(latents, clips)])

    train = excerpts(list_audio(args.train), cache, args.seconds, args.train_files, seed=0)
    val = excerpts(list_audio(args.val), cache, args.seconds, args.val_files, seed=0)
    latents_val = latents_of(val)
    z_train, z_val = chunk_rows(latents_of(train), train), chunk_rows(latents_val, val)
    mel_train = np.concatenate([chunk_mels(c) for c in train])
    mel_val = np.concatenate([chunk_mels(c) for c in val])
    print(f"{len(z_train)} train chunks from {len(train)} files, {len(z_val)} val chunks from {len(val)} files, "
          f"encoded in {time.time() - t0:.0f} s", flush=True)

    level_tr, motion_tr = split_parts(mel_train)
    level_va, motion_va = split_parts(mel_val)
    lams = [1.0, 10.0, 100.0, 1000.0, 10000.0]
    fit_level, lam_level = best_ridge(z_train, level_tr, lams)
    fit_motion, lam_motion = best_ridge(z_train, motion_tr, lams)

    def loudness(motion: np.ndarray) -> np.ndarray:
        """The frame-to-frame loudness curve alone (mean over bands of the motion): onsets and swells."""
        return motion.reshape(len(motion), -1, N_MELS).mean(axis=2)

    lines_tr = np.concatenate([chunk_lines(c) for c in train])
    lines_va = np.concatenate([chunk_lines(c) for c in val])
    fit_lines, lam_lines = best_ridge(z_train, lines_tr, lams)
    loud_va = loudness(motion_va)
    fit_loud, lam_loud = best_ridge(z_train, loudness(motion_tr), lams)
    env_true, env_pred = envelope_parts(codec, val)
    (env_level, env_motion), (pred_level, pred_motion) = level_motion(env_true), level_motion(env_pred)
    scores = {
        "model": args.model or "bundled", "train_chunks": len(z_train), "val_chunks": len(z_val),
        "level": {"latents_r2": r2(level_va, predict(fit_level, z_val)), "lambda": lam_level},
        "motion": {"latents_r2": r2(motion_va, predict(fit_motion, z_val)), "lambda": lam_motion},
        "loudness_curve": {"latents_r2": r2(loud_va, predict(fit_loud, z_val)), "lambda": lam_loud},
        "lines": {"latents_r2": r2(lines_va, predict(fit_lines, z_val)), "lambda": lam_lines},
        "decoder_envelope": {"level_r2": r2(env_level, pred_level), "motion_r2": r2(env_motion, pred_motion),
                             "motion_var_ratio": float(pred_motion.var() / env_motion.var())},
    }
    if not args.no_decode:
        decoded = [codec.decode(z, len(c), SAMPLE_RATE)[0] for z, c in zip(latents_val, val)]
        print(f"decoded in {time.time() - t0:.0f} s", flush=True)
        level_dec, motion_dec = split_parts(np.concatenate([chunk_mels(d) for d in decoded]))
        loud_dec = loudness(motion_dec)
        scores["level"]["decode_r2"] = r2(level_va, level_dec)
        scores["motion"].update(decode_r2=r2(motion_va, motion_dec),
                                decode_motion_var_ratio=float(motion_dec.var() / motion_va.var()))
        scores["loudness_curve"].update(decode_r2=r2(loud_va, loud_dec),
                                        decode_var_ratio=float(loud_dec.var() / loud_va.var()))
        lines_dec = np.concatenate([chunk_lines(d) for d in decoded])
        scores["lines"].update(decode_r2=r2(lines_va, lines_dec), decode_var_ratio=float(lines_dec.var() / lines_va.var()),
                               decode_corr=line_correlation(lines_va, lines_dec),
                               shuffled_corr=line_correlation(lines_va[np.random.default_rng(0).permutation(len(lines_va))],
                                                              lines_dec),
                               decode_fixed_share=fixed_share(lines_dec), original_fixed_share=fixed_share(lines_va))
    print(json.dumps(scores, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(scores, indent=1))


if __name__ == "__main__":
    main()
