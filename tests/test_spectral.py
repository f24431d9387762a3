"""The STFT representation without any model (design doc section 1): exact inversion, edges, streaming."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from m2lcodec import spectral as S
from conftest import music_like

LENGTHS = [1, 1000, S.CHUNK_SAMPLES - S.PAD_LEFT, S.CHUNK_SAMPLES - S.PAD_LEFT + 1, 100000]


def sinusoids(n: int, seed: int = 0, taper: bool = True) -> torch.Tensor:
    """(1, n) sum of 12 sinusoids between 50 Hz and 16 kHz at 44.1 kHz; with `taper`, a short
    raised-cosine fade in and out (as any real recording has: no jump from silence)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / S.SAMPLE_RATE
    x = np.zeros(n)
    for f in rng.uniform(50, 16000, 12):
        x += rng.uniform(0.01, 0.1) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    if taper and n >= 8:
        m = min(256, n // 4)
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(m) + 0.5) / m)
        x[:m] *= ramp
        x[n - m:] *= ramp[::-1]
    return torch.tensor(x, dtype=torch.float32)[None]


def round_trip(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    wave, chunks = S.pad_to_chunks(x)
    spec = S.wave_to_spec(wave)
    assert spec.shape == (x.shape[0], 2, S.FREQ_BINS, chunks * S.CHUNK_FRAMES)
    full = S.spec_to_wave(spec)
    assert full.shape[-1] == wave.shape[-1] == S.padded_length(chunks)
    return S.trim(full, x.shape[-1]), chunks


def rel_db(y: torch.Tensor, x: torch.Tensor) -> float:
    return 10 * math.log10(float(((y - x) ** 2).sum()) / float((x**2).sum()) + 1e-30)


@pytest.mark.parametrize("n", LENGTHS)
def test_round_trip_exact_length_and_error(n):
    x = sinusoids(n)
    y, chunks = round_trip(x)
    assert chunks == S.num_chunks(n)
    assert y.shape == x.shape  # exact sample count
    if n == 1:
        # A lone sample is an impulse: flat spectrum, so the dropped Nyquist bin (a design choice,
        # section 1) holds 1/2048 of it: about -66 dB. Nothing smoother exists at this length.
        assert rel_db(y, x) < -60
    else:
        assert rel_db(y, x) < -70


@pytest.mark.parametrize("n", [1000, 100000])
def test_round_trip_abrupt_edges(n):
    """Without fades the jump from the zero padding puts energy in the dropped Nyquist bin; still < -60 dB."""
    x = sinusoids(n, taper=False)
    y, _ = round_trip(x)
    assert y.shape == x.shape
    assert rel_db(y, x) < -60


def test_round_trip_batch_of_channels():
    x = torch.from_numpy(music_like(1.5, S.SAMPLE_RATE, 2))
    y, _ = round_trip(x)
    assert y.shape == x.shape
    for c in range(2):
        assert rel_db(y[c], x[c]) < -70


@pytest.mark.parametrize("n", [1000, S.CHUNK_SAMPLES - S.PAD_LEFT + 1, 100000])
def test_streaming_istft_equals_batch(n):
    wave, chunks = S.pad_to_chunks(sinusoids(n).repeat(2, 1) * torch.tensor([[1.0], [0.5]]))
    spec = S.wave_to_spec(wave)
    full = S.spec_to_wave(spec)
    parts_spec = S.split_chunks(spec)
    assert parts_spec.shape == (2, chunks, 2, S.FREQ_BINS, S.CHUNK_FRAMES)
    stream = S.StreamingISTFT(2)
    parts = []
    for t in range(chunks):
        block = stream.push(parts_spec[:, t])
        assert block.shape == (2, S.CHUNK_SAMPLES)
        parts.append(block)
    parts.append(stream.flush())
    streamed = torch.cat(parts, dim=-1)
    assert streamed.shape == full.shape
    torch.testing.assert_close(streamed, full, rtol=0, atol=1e-6)


def test_amplitude_compression_inverse():
    g = torch.Generator().manual_seed(0)
    c = torch.complex(torch.randn(3, 64, 16, generator=g), torch.randn(3, 64, 16, generator=g)) * 100
    c[0, 0, 0] = 0  # exact zero stays zero
    x = S.compress_amplitude(c)
    assert x.shape == (3, 2, 64, 16) and not x.is_complex()
    mag = torch.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2)
    torch.testing.assert_close(mag, S.AMP_SCALE * c.abs() ** S.AMP_POWER, rtol=1e-5, atol=1e-6)
    back = S.expand_amplitude(x)
    torch.testing.assert_close(back, c, rtol=1e-4, atol=1e-4)
    assert back[0, 0, 0] == 0
    # and the other way: compress(expand(x)) == x
    torch.testing.assert_close(S.compress_amplitude(S.expand_amplitude(x)), x, rtol=1e-4, atol=1e-5)


def test_spectrogram_scale_is_sane():
    """Music at ordinary levels gives spectrogram values of order 0.1..1 (what the model expects)."""
    x = torch.from_numpy(music_like(3.0, S.SAMPLE_RATE, 1))
    spec = S.wave_to_spec(S.pad_to_chunks(x)[0])
    std = float(spec.std())
    assert 0.05 < std < 1.0
    assert torch.isfinite(spec).all()


def test_num_chunks_edges():
    cs, pl = S.CHUNK_SAMPLES, S.PAD_LEFT
    assert S.num_chunks(0) == 1
    assert S.num_chunks(1) == 1
    assert S.num_chunks(cs - pl) == 1
    assert S.num_chunks(cs - pl + 1) == 2
    assert S.num_chunks(2 * cs - pl) == 2
    assert S.num_chunks(2 * cs - pl + 1) == 3
    assert S.padded_length(1) == cs + pl == 34304
    for n in (1, cs - pl, cs - pl + 1, 100000):
        chunks = S.num_chunks(n)
        # every real sample lies at padded index >= PAD_LEFT and before the last PAD_LEFT samples
        assert S.padded_length(chunks) - pl - n >= pl
        # frames of the padded waveform: exactly 64 per chunk
        assert (S.padded_length(chunks) - S.N_FFT) // S.HOP + 1 == chunks * S.CHUNK_FRAMES


def test_split_chunks_layout():
    spec = torch.arange(2 * 2 * 4 * 128, dtype=torch.float32).reshape(2, 2, 4, 128)
    chunks = S.split_chunks(spec)
    assert chunks.shape == (2, 2, 2, 4, 64)
    torch.testing.assert_close(chunks[1, 1], spec[1, :, :, 64:])


def test_envelope_is_cell_mean_magnitude_and_phase_free():
    g = torch.Generator().manual_seed(0)
    mag = torch.rand(3, 1024, 64, generator=g)
    phase = torch.rand(3, 1024, 64, generator=g) * 6.283
    spec = torch.stack([mag * torch.cos(phase), mag * torch.sin(phase)], dim=1)  # (3, 2, 1024, 64)
    env = S.envelope(spec, (256, 32))
    assert env.shape == (3, 256, 32)
    torch.testing.assert_close(env[1, 5, 7], mag[1, 20:24, 14:16].mean(), rtol=1e-5, atol=1e-6)
    rotated = torch.stack([mag * torch.cos(phase + 1.0), mag * torch.sin(phase + 1.0)], dim=1)
    torch.testing.assert_close(S.envelope(rotated, (256, 32)), env, rtol=1e-4, atol=1e-5)
    # leading dimensions are kept
    assert S.envelope(spec[None], (16, 4)).shape == (1, 3, 16, 4)
