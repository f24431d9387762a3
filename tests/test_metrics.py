"""Known-value tests for m2lcodec.metrics (seeded, a few seconds in total)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import butter, sosfiltfilt

from m2lcodec import metrics


def music_like(seconds: float, sample_rate: int, seed: int = 0, channels: int = 1) -> np.ndarray:
    """Harmonic tones with an amplitude envelope plus a little noise, (channels, samples)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    out = []
    for c in range(channels):
        f0 = 220.0 * (1.0 + 0.25 * c)
        phases = rng.uniform(0, 2 * np.pi, size=11)
        tone = sum(np.sin(2 * np.pi * f0 * k * t + phases[k - 1]) / k for k in range(1, 12))
        envelope = 0.3 + 0.7 * np.abs(np.sin(2 * np.pi * 1.5 * t))
        out.append(0.2 * tone * envelope + 0.01 * rng.standard_normal(t.shape))
    return np.stack(out).astype(np.float32)


def add_noise_at_snr(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """x plus white noise scaled to exactly snr_db relative to x's power."""
    noise = np.random.default_rng(seed).standard_normal(x.shape)
    noise *= np.sqrt(np.mean(x**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return x + noise


# ---------------------------------------------------------------- SI-SDR


def test_si_sdr_identical_and_scale_invariant() -> None:
    x = music_like(1.0, 16000)[0].astype(np.float64)
    assert metrics.si_sdr(x, x) > 100.0
    assert metrics.si_sdr(x, 0.5 * x) > 100.0
    assert metrics.si_sdr(x, 3.0 * x) > 100.0


@pytest.mark.parametrize("snr_db", [10.0, 20.0])
def test_si_sdr_matches_known_snr(snr_db: float) -> None:
    x = np.random.default_rng(1).standard_normal(200_000)
    y = add_noise_at_snr(x, snr_db, seed=2)
    assert abs(metrics.si_sdr(x, y) - snr_db) < 0.3


def test_si_sdr_multichannel_averages_channels() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 100_000))
    y = np.stack([add_noise_at_snr(x[0], 10.0, 4), add_noise_at_snr(x[1], 20.0, 5)])
    expected = 0.5 * (metrics.si_sdr(x[0], y[0]) + metrics.si_sdr(x[1], y[1]))
    assert metrics.si_sdr(x, y) == pytest.approx(expected)
    assert abs(metrics.si_sdr(x, y) - 15.0) < 0.3


def test_si_sdr_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        metrics.si_sdr(np.zeros(10), np.zeros(11))


def test_estimate_lag_finds_known_delay() -> None:
    x = music_like(2.0, 16000, channels=2)
    delayed = np.pad(x, ((0, 0), (20, 0)))[:, : x.shape[1]]
    assert metrics.estimate_lag(x, delayed, 40) == 20
    assert metrics.estimate_lag(delayed, x, 40) == -20
    assert metrics.estimate_lag(x, x, 40) == 0


# ---------------------------------------------------------------- mel distance


def test_mel_filterbank_shape_and_peaks() -> None:
    bank = metrics.mel_filterbank(44100, 2048, 80)
    assert bank.shape == (80, 1025)
    assert bank.min() >= 0.0 and bank.max() <= 1.0 + 1e-9
    assert (bank.max(axis=1) > 0.5).all()  # at 2048 every band covers a bin


def test_mel_distance_zero_for_identical_and_monotonic_in_noise() -> None:
    sr = 22050
    x = music_like(2.0, sr, channels=2)
    assert metrics.mel_distance(x, x, sr) == 0.0
    distances = [
        metrics.mel_distance(x, add_noise_at_snr(x, snr, seed=7), sr) for snr in (40, 25, 10, 0)
    ]
    assert all(a < b for a, b in zip(distances, distances[1:])), distances
    assert distances[0] > 0.0


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_identical_stats_is_zero() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 8))
    sigma = a @ a.T + 8 * np.eye(8)
    mu = rng.standard_normal(8)
    assert abs(metrics.frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_frechet_diagonal_closed_form() -> None:
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.5, 0.0])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 9.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = metrics.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_singular_covariance_is_finite() -> None:
    sigma = np.zeros((4, 4))
    sigma[0, 0] = 1.0
    value = metrics.frechet_distance(np.zeros(4), sigma, np.ones(4), sigma)
    assert np.isfinite(value) and value == pytest.approx(4.0, abs=1e-3)


def test_embedding_statistics_matches_numpy() -> None:
    emb = np.random.default_rng(5).standard_normal((50, 3))
    mu, sigma = metrics.embedding_statistics(emb)
    np.testing.assert_allclose(mu, emb.mean(axis=0))
    np.testing.assert_allclose(sigma, np.cov(emb.T))


def test_mel_statistics_embedding_shape() -> None:
    x = music_like(3.0, 44100)[0]
    emb = metrics.mel_statistics_embedding(x, 44100)
    assert emb.shape == (5, 128)  # 1 s windows, 0.5 s hop over 3 s
    assert np.isfinite(emb).all()


def test_fad_zero_for_same_set_and_larger_for_degraded() -> None:
    sr = 16000
    clips = [music_like(3.0, sr, seed=s, channels=2) for s in range(4)]
    assert metrics.fad(clips, clips, sr) < 1e-6
    lowpass = butter(8, 1000, fs=sr, output="sos")
    dull = [sosfiltfilt(lowpass, c, axis=-1) for c in clips]
    assert metrics.fad(clips, dull, sr) > 1.0


def test_fad_accepts_custom_embedding() -> None:
    def energy_embed(audio: np.ndarray, sample_rate: int) -> np.ndarray:
        frames = audio[: len(audio) // 100 * 100].reshape(-1, 100)
        return np.stack([frames.mean(axis=1), (frames**2).mean(axis=1)], axis=1)

    sr = 8000
    clips = [music_like(1.0, sr, seed=s) for s in range(2)]
    assert metrics.fad(clips, clips, sr, embed=energy_embed) < 1e-9
    louder = [2.0 * c for c in clips]
    assert metrics.fad(clips, louder, sr, embed=energy_embed) > 0.0


# ---------------------------------------------------------------- ViSQOL


def test_visqol_identical_high_lowpassed_lower() -> None:
    pytest.importorskip("visqol")
    sr = 44100
    x = music_like(2.0, sr, seed=0, channels=2)
    same = metrics.visqol(x, x, sr)
    assert same is not None and same > 4.0
    lowpass = butter(8, 1500, fs=sr, output="sos")
    dull = sosfiltfilt(lowpass, x, axis=-1)
    degraded = metrics.visqol(x, dull, sr)
    assert degraded is not None and degraded < same - 1.0


def test_visqol_too_short_is_none() -> None:
    pytest.importorskip("visqol")
    x = music_like(0.5, 16000)
    assert metrics.visqol(x, x, 16000) is None


# ---------------------------------------------------------------- harmonic lines and onsets


def noise_with_envelope_of(x: np.ndarray, sample_rate: int, seed: int = 0) -> np.ndarray:
    """The shaped-noise decode's failure mode: x's magnitude spectrogram (frame by frame) with random
    phase, i.e. the same envelope and level but no harmonic lines."""
    rng = np.random.default_rng(seed)
    n = 1024
    spec = np.fft.rfft(x.reshape(x.shape[0], -1, n), axis=-1)
    smooth = np.sqrt(np.convolve(np.abs(spec[0, 0]) ** 2, np.ones(64) / 64, mode="same"))
    phases = np.exp(2j * np.pi * rng.uniform(size=spec.shape))
    return np.fft.irfft(smooth * np.abs(spec).mean(-1, keepdims=True) / smooth.mean() * phases, n=n,
                        axis=-1).reshape(x.shape)


def test_peakiness_high_for_harmonics_low_for_noise() -> None:
    sr = 44100
    tones = music_like(3.0, sr)[:, : (3 * sr // 1024) * 1024]
    noise = np.random.default_rng(1).standard_normal(tones.shape)
    p_tones, p_noise = metrics.spectral_peakiness(tones, sr), metrics.spectral_peakiness(noise, sr)
    assert p_tones > 15.0 > 8.0 > p_noise > 3.0
    assert metrics.spectral_peakiness(noise_with_envelope_of(tones, sr), sr) < 9.0
    # the level does not matter
    assert metrics.spectral_peakiness(0.01 * tones, sr) == pytest.approx(p_tones, abs=0.01)


def clicks(seconds: float, sample_rate: int, times: list[float], seed: int = 0) -> np.ndarray:
    """Decaying noise bursts (drum-like onsets) at `times` over a faint bed."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    x = 0.001 * rng.standard_normal(n)
    decay = np.exp(-np.arange(4096) / 600.0)
    for t in times:
        i = int(t * sample_rate)
        x[i:i + 4096] += 0.5 * rng.standard_normal(4096)[: n - i] * decay[: n - i]
    return x[None, :]


def test_onset_correlation_finds_onsets_where_the_reference_has_them() -> None:
    sr = 44100
    ref = clicks(4.0, sr, [0.3, 0.9, 1.4, 2.2, 2.7, 3.5])
    assert metrics.onset_correlation(ref, ref, sr) == pytest.approx(1.0)
    same_times = clicks(4.0, sr, [0.3, 0.9, 1.4, 2.2, 2.7, 3.5], seed=5)  # other noise, same onsets
    other_times = clicks(4.0, sr, [0.6, 1.1, 1.9, 2.5, 3.1, 3.8], seed=5)
    steady = np.random.default_rng(2).standard_normal(ref.shape) * ref.std()
    assert metrics.onset_correlation(ref, same_times, sr) > 0.8
    assert metrics.onset_correlation(ref, other_times, sr) < 0.2
    assert abs(metrics.onset_correlation(ref, steady, sr)) < 0.2
    assert metrics.onset_correlation(ref, np.zeros_like(ref), sr) == 0.0
