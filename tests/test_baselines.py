"""Tests for the ffmpeg baselines (skipped when ffmpeg is missing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from m2lcodec import baselines
from m2lcodec.metrics import estimate_lag, si_sdr

pytestmark = pytest.mark.skipif(not baselines.ffmpeg_available(), reason="ffmpeg not installed")

SR = 44100


def music_like(seconds: float = 3.0, sample_rate: int = SR, seed: int = 0) -> np.ndarray:
    """Stereo harmonic tones with a tremolo envelope plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    chans = []
    for f0 in (220.0, 277.2):
        phases = rng.uniform(0, 2 * np.pi, size=11)
        tone = sum(np.sin(2 * np.pi * f0 * k * t + phases[k - 1]) / k for k in range(1, 12))
        envelope = 0.3 + 0.7 * np.abs(np.sin(2 * np.pi * 1.5 * t))
        chans.append(0.2 * tone * envelope + 0.01 * rng.standard_normal(t.shape))
    return np.stack(chans).astype(np.float32)


def _need(codec: str) -> None:
    if codec not in baselines.available_encoders():
        pytest.skip(f"ffmpeg lacks {codec}")


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return music_like()


@pytest.mark.parametrize("baseline", baselines.DEFAULT_BASELINES, ids=lambda b: b.name)
def test_baseline_roundtrip(baseline: baselines.Baseline, clip: np.ndarray, tmp_path: Path) -> None:
    _need(baseline.codec)
    result = baselines.run_baseline(baseline, clip, SR, workdir=tmp_path)
    assert result.audio.shape == clip.shape
    assert result.audio.dtype == np.float32
    assert np.isfinite(result.audio).all()
    encoded = tmp_path / f"{baseline.name}.{baseline.extension}"
    assert encoded.stat().st_size == result.encoded_bytes
    assert result.kbps == pytest.approx(result.encoded_bytes * 8 / 3.0 / 1000)
    assert result.encode_seconds > 0 and result.decode_seconds > 0
    if baseline.codec == "libopus":
        assert abs(result.kbps - baseline.kbps) / baseline.kbps < 0.25, result.kbps
    else:
        assert abs(result.kbps - baseline.kbps) / baseline.kbps < 0.1, result.kbps


def test_opus24_is_aligned(clip: np.ndarray) -> None:
    _need("libopus")
    result = baselines.run_baseline(baselines.get_baseline("opus-24k"), clip, SR)
    assert si_sdr(clip, result.audio) > 5.0
    # after re-alignment no residual lag remains
    assert estimate_lag(clip, result.audio, 100) == 0


def test_mono_and_other_rates_keep_length() -> None:
    _need("libopus")
    mono = music_like(1.0, 32000)[:1]
    result = baselines.run_baseline(baselines.get_baseline("opus-12k"), mono, 32000)
    assert result.audio.shape == mono.shape


def test_ffmpeg_failure_raises_baseline_error(clip: np.ndarray) -> None:
    bad_args = ("-application", "nonsense")
    broken = baselines.Baseline("broken", "libopus", 24.0, 48_000, "opus", bad_args)
    with pytest.raises(baselines.BaselineError):
        baselines.run_baseline(broken, clip, SR)


def test_unknown_encoder_raises(clip: np.ndarray) -> None:
    missing = baselines.Baseline("nope", "no-such-encoder", 24.0, 48_000, "opus")
    with pytest.raises(baselines.BaselineError):
        baselines.run_baseline(missing, clip, SR)


def test_get_baseline() -> None:
    assert baselines.get_baseline("mp3-32k").codec == "libmp3lame"
    with pytest.raises(KeyError):
        baselines.get_baseline("flac")
