"""Objective quality metrics for the codec benchmark.

Everything here runs offline on numpy/scipy (plus the optional
``visqol-python`` package for ViSQOL). Audio arrays follow the project
convention: 1-D ``(samples,)`` or ``(channels, samples)`` float arrays.

Metrics:

* :func:`si_sdr` -- scale-invariant signal-to-distortion ratio (dB); rewards
  waveform (phase-exact) reconstruction.
* :func:`mel_distance` -- multi-resolution log-mel L1 distance; rewards
  matching the spectral envelope over time, ignores phase.
* :func:`spectral_peakiness` -- how far spectral peaks stand above their
  neighbourhood (dB): harmonic lines score high, noise with the same
  envelope low. Compare a decode's value with its original's.
* :func:`onset_correlation` -- correlation of the onset envelopes (log-mel
  spectral flux) of two signals: 1 when every onset is where the original's is.
* :func:`visqol` -- ViSQOL v3 audio mode MOS-LQO (1..5), a perceptual model.
* :func:`fad` -- Fréchet distance between embedding distributions of a set of
  reference clips and a set of decoded clips, with a pluggable embedding
  function. The shipped embedding :func:`mel_statistics_embedding` is a
  hand-made log-mel statistics vector, *not* VGGish/CLAP/PANNs, so its numbers
  are not comparable with published FAD values.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import soxr

__all__ = [
    "EmbeddingFn",
    "MetricUnavailable",
    "VISQOL_SAMPLE_RATE",
    "embedding_statistics",
    "estimate_lag",
    "fad",
    "frechet_distance",
    "log_mel_spectrogram",
    "mel_distance",
    "mel_filterbank",
    "mel_statistics_embedding",
    "onset_correlation",
    "si_sdr",
    "spectral_peakiness",
    "visqol",
]

VISQOL_SAMPLE_RATE = 48_000
_EPS = 1e-12


class MetricUnavailable(RuntimeError):
    """A metric's optional dependency is missing; the caller may skip it."""


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _as_2d(audio: np.ndarray) -> np.ndarray:
    """Return audio as float64 ``(channels, samples)``; 1-D becomes one channel."""
    arr = np.asarray(audio, dtype=np.float64)
    if arr.ndim == 1:
        return arr[None, :]
    if arr.ndim == 2:
        return arr
    raise ValueError(f"audio must be 1-D or (channels, samples), got shape {arr.shape}")


def _check_pair(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coerce a reference/estimate pair to 2-D and check the shapes agree."""
    ref, est = _as_2d(reference), _as_2d(estimate)
    if ref.shape != est.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs estimate {est.shape}")
    if ref.shape[1] == 0:
        raise ValueError("empty audio")
    return ref, est


def _mono(audio: np.ndarray) -> np.ndarray:
    """Mono mix (channel mean) as float64 1-D."""
    return _as_2d(audio).mean(axis=0)


def estimate_lag(reference: np.ndarray, estimate: np.ndarray, max_lag: int) -> int:
    """Integer lag (samples) of ``estimate`` behind ``reference``, within +-max_lag.

    Maximises the cross-correlation of the mono mixes: a positive value means
    ``estimate[n + lag]`` lines up with ``reference[n]`` (the estimate is late).
    Used to undo small codec delays before waveform metrics such as SI-SDR.
    """
    ref, est = _mono(reference), _mono(estimate)
    n = min(ref.shape[0], est.shape[0])
    ref, est = ref[:n], est[:n]
    size = 1 << int(np.ceil(np.log2(2 * n)))
    xcorr = np.fft.irfft(np.fft.rfft(est, size) * np.conj(np.fft.rfft(ref, size)), size)
    lags = np.arange(-max_lag, max_lag + 1)
    return int(lags[np.argmax(xcorr[lags % size])])


# --------------------------------------------------------------------------
# SI-SDR
# --------------------------------------------------------------------------


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), averaged over channels.

    Both signals are made zero-mean, the reference is scaled by the optimal
    gain ``<s, s_hat> / ||s||^2`` and the ratio of target to residual energy is
    returned. Identical signals give a very large value (~+300 dB for float64
    round-off) rather than ``inf``. The metric is sensitive to sub-sample
    misalignment and to any phase change, so it favours waveform codecs.
    """
    ref, est = _check_pair(reference, estimate)
    ref = ref - ref.mean(axis=1, keepdims=True)
    est = est - est.mean(axis=1, keepdims=True)
    values = []
    for s, s_hat in zip(ref, est):
        alpha = np.dot(s_hat, s) / (np.dot(s, s) + _EPS)
        target = alpha * s
        residual = s_hat - target
        values.append(
            10.0 * np.log10((np.dot(target, target) + _EPS) / (np.dot(residual, residual) + _EPS))
        )
    return float(np.mean(values))


# --------------------------------------------------------------------------
# mel spectrogram and multi-resolution mel distance
# --------------------------------------------------------------------------


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``mel = 2595 * log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`_hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=32)
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Triangular mel filterbank ``(n_mels, n_fft // 2 + 1)``, HTK formula.

    Band edges are equally spaced on the HTK mel scale
    (``2595 * log10(1 + f/700)``) between ``fmin`` and ``fmax`` (default
    Nyquist). Each triangle peaks at 1 (no area normalisation), like HTK and
    ``torchaudio``'s ``norm=None``. With a small FFT the lowest bands can fall
    between FFT bins and be all-zero; they then contribute 0 to distances.
    """
    fmax = sample_rate / 2.0 if fmax is None else fmax
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_freqs[None, :] - lower) / np.maximum(center - lower, _EPS)
    falling = (upper - fft_freqs[None, :]) / np.maximum(upper - center, _EPS)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    bank.setflags(write=False)
    return bank


def _stft_magnitude(signal: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Centred (reflect-padded) Hann-window STFT magnitude, ``(frames, bins)``."""
    pad = n_fft // 2
    mode = "reflect" if signal.shape[-1] > pad else "constant"
    padded = np.pad(signal, (pad, pad), mode=mode)
    if padded.shape[-1] < n_fft:
        padded = np.pad(padded, (0, n_fft - padded.shape[-1]))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    window = np.hanning(n_fft + 1)[:-1]  # periodic Hann
    return np.abs(np.fft.rfft(frames * window, axis=-1))


def log_mel_spectrogram(
    signal: np.ndarray,
    sample_rate: int,
    n_fft: int = 1024,
    hop: int | None = None,
    n_mels: int = 80,
    floor: float = 1e-5,
) -> np.ndarray:
    """``log10(clamp(mel(|STFT|), floor))`` of a 1-D signal, ``(frames, n_mels)``."""
    hop = n_fft // 4 if hop is None else hop
    magnitude = _stft_magnitude(np.asarray(signal, dtype=np.float64), n_fft, hop)
    mel = magnitude @ mel_filterbank(int(sample_rate), n_fft, n_mels).T
    return np.log10(np.maximum(mel, floor))


def mel_distance(
    reference: np.ndarray,
    estimate: np.ndarray,
    sample_rate: int,
    n_ffts: Sequence[int] = (512, 1024, 2048),
    n_mels: int = 80,
) -> float:
    """Multi-resolution log-mel L1 distance (lower is better, 0 for identical).

    For each FFT size (hop = n_fft / 4, Hann window) the magnitude STFT is
    projected on an 80-band HTK mel filterbank, ``log10(clamp(mel, 1e-5))`` is
    taken and the mean absolute difference over frames and bands is computed;
    the result is averaged over resolutions and channels. Phase is ignored, so
    a codec that resynthesises phase is not penalised for it. The value is in
    log10 units (0.1 ~ 2 dB mean magnitude error).
    """
    ref, est = _check_pair(reference, estimate)
    total = 0.0
    for n_fft in n_ffts:
        per_channel = [
            np.mean(
                np.abs(
                    log_mel_spectrogram(r, sample_rate, n_fft, n_mels=n_mels)
                    - log_mel_spectrogram(e, sample_rate, n_fft, n_mels=n_mels)
                )
            )
            for r, e in zip(ref, est)
        ]
        total += float(np.mean(per_channel))
    return total / len(n_ffts)


# --------------------------------------------------------------------------
# harmonic lines and onsets (what a noise texture with the right envelope lacks)
# --------------------------------------------------------------------------


def spectral_peakiness(
    audio: np.ndarray,
    sample_rate: int,
    n_fft: int = 4096,
    fmin: float = 60.0,
    fmax: float = 5000.0,
    width_hz: float = 250.0,
    quantile: float = 0.95,
) -> float:
    """Height of the spectral peaks above their neighbourhood, in dB, of the mono mix.

    Per frame (Hann ``n_fft``, hop ``n_fft / 4``) the log magnitude between
    ``fmin`` and ``fmax`` minus its running median over ``width_hz``; the
    ``quantile`` of that per frame, averaged over frames within 50 dB of the
    loudest. Harmonic lines stand 15-30 dB above the median between them; noise
    of any envelope reaches only the tail of its Rayleigh fluctuations (~5-6 dB
    at the 95th percentile). A decode that lost the harmonics scores near the
    noise value whatever its envelope, so compare with the original's value.
    """
    signal = _mono(audio)
    mag = _stft_magnitude(signal, n_fft, n_fft // 4)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    band = (freqs >= fmin) & (freqs <= fmax)
    level = 20.0 * np.log10(mag[:, band] + 1e-9)
    half = max(1, int(round(width_hz / (sample_rate / n_fft) / 2)))
    padded = np.pad(level, ((0, 0), (half, half)), mode="edge")
    median = np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1, axis=1), axis=-1)
    frame_db = 10.0 * np.log10(np.mean(mag[:, band] ** 2, axis=1) + 1e-18)
    loud = frame_db >= frame_db.max() - 50.0
    return float(np.mean(np.quantile(level[loud] - median[loud], quantile, axis=1)))


def _onset_envelope(signal: np.ndarray, sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Half-wave rectified log-mel flux per frame (hop n_fft / 4), summed over bands."""
    spec = log_mel_spectrogram(signal, sample_rate, n_fft, n_mels=n_mels, floor=1e-4)
    return np.maximum(np.diff(spec, axis=0), 0.0).sum(axis=1)


def onset_correlation(
    reference: np.ndarray, estimate: np.ndarray, sample_rate: int, n_fft: int = 2048, n_mels: int = 80
) -> float:
    """Pearson correlation of the onset envelopes (log-mel spectral flux) of the mono mixes.

    1 when the estimate's onsets rise where and as strongly as the reference's,
    ~0 for unrelated signals; a decode that smears drum hits into a steady
    texture scores low even with the right envelope. 0.0 if either envelope is
    flat (no onsets at all).
    """
    ref, est = _check_pair(reference, estimate)
    a = _onset_envelope(ref.mean(axis=0), sample_rate, n_fft, n_mels)
    b = _onset_envelope(est.mean(axis=0), sample_rate, n_fft, n_mels)
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt(np.dot(a, a) * np.dot(b, b))
    return float(np.dot(a, b) / denom) if denom > _EPS else 0.0


# --------------------------------------------------------------------------
# ViSQOL
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _visqol_api() -> Any:
    """Create (once) a ViSQOL v3 API object in audio mode."""
    try:
        from visqol import VisqolApi
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise MetricUnavailable(
            "ViSQOL needs the 'visqol-python' package: pip install visqol-python "
            "(or pip install 'm2lcodec[bench]')"
        ) from exc
    api = VisqolApi()
    api.create(mode="audio")
    return api


def visqol(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float | None:
    """ViSQOL v3 audio-mode MOS-LQO (1..5, higher is better) of the mono mixes.

    Both signals are mixed to mono and resampled to 48 kHz with soxr (ViSQOL's
    audio mode, with its bundled SVR model, is defined at 48 kHz). Uses the
    pure-Python port ``visqol-python`` (``VisqolApi.measure_from_arrays``),
    which runs offline. Returns ``None`` when the score is undefined: silent
    reference or shorter than 1 s. Raises :class:`MetricUnavailable` if the
    package is not installed.
    """
    ref, est = _check_pair(reference, estimate)
    api = _visqol_api()
    ref_m, est_m = ref.mean(axis=0), est.mean(axis=0)
    if ref_m.shape[0] < sample_rate or not np.any(ref_m):
        return None
    if sample_rate != VISQOL_SAMPLE_RATE:
        ref_m = soxr.resample(ref_m, sample_rate, VISQOL_SAMPLE_RATE, quality="HQ")
        est_m = soxr.resample(est_m, sample_rate, VISQOL_SAMPLE_RATE, quality="HQ")
    result = api.measure_from_arrays(
        np.ascontiguousarray(ref_m, dtype=np.float64),
        np.ascontiguousarray(est_m, dtype=np.float64),
        VISQOL_SAMPLE_RATE,
    )
    score = float(result.moslqo)
    return score if np.isfinite(score) else None


# --------------------------------------------------------------------------
# Fréchet audio distance
# --------------------------------------------------------------------------


class EmbeddingFn(Protocol):
    """An audio embedding: mono float32 audio + sample rate -> ``(frames, dims)``.

    Any callable with this shape works with :func:`fad`, e.g. a wrapper around
    the codec's own encoder returning its latent frames.
    """

    def __call__(self, audio: np.ndarray, sample_rate: int) -> np.ndarray: ...


MEL_EMBED_SAMPLE_RATE = 16_000


def mel_statistics_embedding(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Offline hand-made embedding: log-mel mean and std over 1 s windows.

    Audio (mono) is resampled to 16 kHz; a 64-band HTK log-mel spectrogram is
    computed with 25 ms Hann windows and a 10 ms hop (a VGGish-like front end,
    but no neural network). Each 1 s window (hop 0.5 s) becomes one 128-dim row:
    the per-band mean (spectral envelope) and standard deviation (temporal
    texture) of the log-mel frames. Clips shorter than 1 s give one row. This
    is NOT VGGish or CLAP: FAD values computed with it are only comparable with
    other values computed with it.
    """
    mono = np.asarray(audio, dtype=np.float64)
    if mono.ndim != 1:
        mono = _mono(mono)
    if sample_rate != MEL_EMBED_SAMPLE_RATE:
        mono = soxr.resample(mono, sample_rate, MEL_EMBED_SAMPLE_RATE, quality="HQ")
    logmel = log_mel_spectrogram(mono, MEL_EMBED_SAMPLE_RATE, n_fft=400, hop=160, n_mels=64)
    window, hop = 100, 50  # frames of 10 ms: 1 s windows, 0.5 s hop
    starts = range(0, max(logmel.shape[0] - window, 0) + 1, hop)
    rows = [
        np.concatenate([logmel[s : s + window].mean(axis=0), logmel[s : s + window].std(axis=0)])
        for s in starts
    ]
    return np.stack(rows).astype(np.float32)


def embedding_statistics(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean vector and (unbiased) covariance matrix of ``(n, dims)`` embeddings."""
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] < 2:
        raise ValueError(f"need a (n >= 2, dims) array of embeddings, got shape {emb.shape}")
    return emb.mean(axis=0), np.atleast_2d(np.cov(emb, rowvar=False))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ``||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``, computed
    as in the reference FID code: if the matrix square root is not finite
    (near-singular product) ``eps * I`` is added to both covariances; a
    negligible imaginary part from round-off is dropped (a large one raises).
    """
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("mean vectors and covariances must have matching shapes")
    diff = mu1 - mu2
    from scipy import linalg  # the bench extra; imported here so the mel functions need numpy alone

    with warnings.catch_warnings():  # singular products are handled just below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0.0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))} in sqrtm")
        covmean = covmean.real
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)  # tiny negative values are round-off


def fad(
    reference_clips: Sequence[np.ndarray],
    estimate_clips: Sequence[np.ndarray],
    sample_rate: int,
    embed: EmbeddingFn = mel_statistics_embedding,
) -> float:
    """Fréchet audio distance between two sets of clips (lower is better).

    Each clip (1-D or ``(channels, samples)``) is mixed to mono float32 and
    embedded with ``embed``; all rows of a set are pooled into one Gaussian.
    It measures whether the *distribution* of decoded audio matches the
    references, not per-clip fidelity, so it needs many rows (ideally more than
    the embedding dimension) to be stable.
    """
    if len(reference_clips) == 0 or len(estimate_clips) == 0:
        raise ValueError("fad needs at least one clip in each set")

    def stats(clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        rows = []
        for clip in clips:
            emb = np.asarray(embed(_mono(clip).astype(np.float32), sample_rate))
            if emb.ndim != 2:
                raise ValueError(f"embedding must be (frames, dims), got shape {emb.shape}")
            rows.append(emb)
        return embedding_statistics(np.concatenate(rows, axis=0))

    mu1, sigma1 = stats(reference_clips)
    mu2, sigma2 = stats(estimate_clips)
    return frechet_distance(mu1, sigma1, mu2, sigma2)
