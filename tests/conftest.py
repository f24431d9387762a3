"""Shared fixtures: tiny randomly initialised model files and short music-like test audio.

Everything here is small so the codec, CLI and weights tests run in seconds on one CPU thread: the
"tiny" preset (~0.3M parameters) and clips of 2-2.5 s (a few 32768-sample chunks).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from m2lcodec.model import Music2Latent2, get_config
from m2lcodec.weights import save_weights


def music_like(seconds: float, sample_rate: int, channels: int, seed: int = 0) -> np.ndarray:
    """(channels, n) float32: a few notes with harmonics (all below 16 kHz), decaying envelopes and
    a little low-passed noise, 10 ms fades at both ends; channels differ slightly (level, phase)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    out = np.zeros((channels, n))
    note_len = 0.25
    for start in np.arange(0.0, seconds, note_len):
        f0 = 110.0 * 2 ** (rng.integers(0, 36) / 12)
        mask = (t >= start) & (t < start + 2 * note_len)
        tt = t[mask] - start
        release = np.clip((2 * note_len - tt) / 0.01, 0.0, 1.0)
        env = np.minimum(tt / 0.01, 1.0) * np.exp(-tt * 6.0) * release
        for h in range(1, 12):
            if f0 * h >= 16000:
                break
            amp = 0.12 / h
            for c in range(channels):
                phase = rng.uniform(0, 2 * np.pi)
                out[c, mask] += amp * (1 - 0.2 * c) * env * np.sin(2 * np.pi * f0 * h * tt + phase)
    noise = rng.standard_normal((channels, n + 2))
    out += 0.003 * (noise[:, :-2] + 2 * noise[:, 1:-1] + noise[:, 2:]) / 4  # gently low-passed
    fade = np.clip(np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.01 * sample_rate), 0.0, 1.0)
    return (out * fade).astype(np.float32)


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_listing(directory: Path) -> list[str]:
    """Every path under `directory` (hidden temporaries included), relative, sorted."""
    return sorted(str(p.relative_to(directory)) for p in Path(directory).rglob("*"))


def _save_tiny(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    cfg = get_config("tiny")
    model = Music2Latent2(cfg)
    save_weights(path, cfg, model.state_dict())
    return path


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """Weights file of a tiny random model (seed 0)."""
    return _save_tiny(tmp_path_factory.mktemp("weights") / "tiny0.safetensors", 0)


@pytest.fixture(scope="session")
def other_weights(tmp_path_factory) -> Path:
    """Weights file of a *different* tiny random model (seed 1), for model-mismatch tests."""
    return _save_tiny(tmp_path_factory.mktemp("weights_other") / "tiny1.safetensors", 1)


@pytest.fixture(scope="session")
def codec(tiny_weights):
    from m2lcodec.codec import load_codec

    return load_codec(tiny_weights, device="cpu")


@pytest.fixture(scope="session")
def stereo_audio() -> tuple[np.ndarray, int]:
    """Stereo 44.1 kHz, 2.5 s (4 chunks)."""
    return music_like(2.5, 44100, 2, seed=1), 44100


@pytest.fixture(scope="session")
def mono48_audio() -> tuple[np.ndarray, int]:
    """Mono 48 kHz, 2 s (resampled to the model rate and back)."""
    return music_like(2.0, 48000, 1, seed=2), 48000


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory, stereo_audio, mono48_audio) -> Path:
    """A read-only-by-convention folder with the two clips as WAV (tests must copy before editing)."""
    d = tmp_path_factory.mktemp("audio")
    (x, sr), (y, sr48) = stereo_audio, mono48_audio
    sf.write(d / "stereo44.wav", x.T, sr, subtype="PCM_16")
    sf.write(d / "mono48.wav", y.T, sr48, subtype="FLOAT")
    return d


@pytest.fixture(scope="session")
def stereo_wav(audio_dir) -> Path:
    return audio_dir / "stereo44.wav"


@pytest.fixture(scope="session")
def mono48_wav(audio_dir) -> Path:
    return audio_dir / "mono48.wav"
