"""Seam deblocking (m2lcodec.deblock) and its place in the codec's decode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m2lcodec import spectral
from m2lcodec.codec import load_codec
from m2lcodec.deblock import DeblockConfig, band_energy, band_index, deblock_spectrogram, seam_step_db
from m2lcodec.salvage import gap_sample
from m2lcodec.model import Music2Latent2, get_config
from m2lcodec.weights import read_info, save_weights

CH = spectral.CHUNK_FRAMES


def noise_chunks(levels_db: list[float], channels: int = 1, seed: int = 0) -> torch.Tensor:
    """(C, 2, 1024, 64 n) compressed spectrogram of white-ish noise, chunk i at levels_db[i] (linear dB)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.complex(torch.randn(channels, spectral.FREQ_BINS, CH * len(levels_db), generator=g),
                      torch.randn(channels, spectral.FREQ_BINS, CH * len(levels_db), generator=g))
    gain = torch.cat([torch.full((CH,), 10 ** (db / 20)) for db in levels_db])
    return spectral.compress_amplitude(c * gain)


def frame_level_db(spec: torch.Tensor, frames: slice, bands_per_octave: int = 1) -> torch.Tensor:
    """(C, bands) mean level (dB) over the given frames."""
    return 10 * torch.log10(band_energy(spec[..., frames], bands_per_octave).mean(-1))


def test_strength_zero_is_the_plain_decode():
    spec = noise_chunks([0.0, 6.0, -3.0])
    assert torch.equal(deblock_spectrogram(spec, DeblockConfig(strength=0.0)), spec)


@pytest.mark.parametrize("strength", [0.5, 0.8, 1.0])
def test_step_at_the_seam_shrinks_by_the_strength(strength):
    """A 6 dB step between two chunks of steady noise: at the two frames next to the seam the step is
    (1 - strength) of what it was; frames beyond the ramps are untouched; the phase is kept."""
    cfg = DeblockConfig(strength=strength, ramp_frames=8, window_frames=4, bands_per_octave=1)
    spec = noise_chunks([0.0, 6.0], channels=2)
    out = deblock_spectrogram(spec, cfg)
    step = seam_step_db(spec[..., :CH], spec[..., CH:], cfg)
    # a noisy estimate of the true 6 dB (4 frames x 6 bins in the lowest band, x 744 in the highest)
    assert (step - 6.0).abs().max() < 3.5 and (step[:, 3:] - 6.0).abs().max() < 1.0
    assert abs(step.mean().item() - 6.0) < 0.5
    before = frame_level_db(spec, slice(CH - 1, CH + 1))
    left, right = frame_level_db(out, slice(CH - 1, CH)), frame_level_db(out, slice(CH, CH + 1))
    left0, right0 = frame_level_db(spec, slice(CH - 1, CH)), frame_level_db(spec, slice(CH, CH + 1))
    # per band the correction is exactly +-strength/2 of the measured step at the seam frames
    assert torch.allclose(left - left0, 0.5 * strength * step, atol=1e-3)
    assert torch.allclose(right - right0, -0.5 * strength * step, atol=1e-3)
    assert before.shape == step.shape
    r = cfg.ramp_frames
    assert torch.equal(out[..., : CH - r], spec[..., : CH - r]) and torch.equal(out[..., CH + r:], spec[..., CH + r:])
    # gains are real and positive: the phase of every bin is kept
    c_in, c_out = torch.complex(spec[:, 0], spec[:, 1]), torch.complex(out[:, 0], out[:, 1])
    ratio = c_out / c_in
    assert torch.allclose(ratio.imag, torch.zeros_like(ratio.imag), atol=1e-4) and (ratio.real > 0).all()
    # the ramp: the correction grows towards the seam
    gains = (out[:, 0, :, CH - r:CH] / spec[:, 0, :, CH - r:CH])[0, 100]
    assert (gains[1:] > gains[:-1]).all()


def test_no_step_no_change_and_large_steps_are_clamped():
    cfg = DeblockConfig(strength=1.0, max_db=12.0, bands_per_octave=1)
    flat = noise_chunks([0.0, 0.0, 0.0])
    steps = seam_step_db(flat[..., :CH], flat[..., CH:2 * CH], cfg)
    assert steps.abs().max() < 3.5 and steps[:, 3:].abs().max() < 1.0  # only the estimate's noise
    big = noise_chunks([0.0, 40.0])
    assert torch.allclose(seam_step_db(big[..., :CH], big[..., CH:], cfg), torch.full((1, 9), 12.0))
    fine = DeblockConfig(strength=1.0, max_db=12.0)  # the default: 3 bands per octave, 23 bands
    assert torch.allclose(seam_step_db(big[..., :CH], big[..., CH:], fine), torch.full((1, 23), 12.0))


def test_silence_stays_silent_and_finite():
    zeros = torch.zeros(1, 2, spectral.FREQ_BINS, 3 * CH)
    out = deblock_spectrogram(zeros, DeblockConfig(strength=1.0))
    assert torch.equal(out, zeros)
    half = torch.cat([noise_chunks([0.0]), torch.zeros(1, 2, spectral.FREQ_BINS, CH)], dim=-1)
    out = deblock_spectrogram(half, DeblockConfig(strength=1.0))
    assert torch.isfinite(out).all() and torch.equal(out[..., CH:], half[..., CH:])


def test_bands_cover_every_bin():
    for bpo in (1, 3):
        idx = band_index(bpo)
        assert idx.shape == (spectral.FREQ_BINS,) and idx.min() == 0
        assert (torch.diff(idx) >= 0).all() and len(torch.unique(idx)) == idx.max() + 1


@pytest.mark.parametrize("kwargs", [{"strength": -0.1}, {"strength": 1.5}, {"ramp_frames": 0},
                                    {"ramp_frames": 33}, {"window_frames": 0}, {"bands_per_octave": 0}])
def test_config_is_checked(kwargs):
    with pytest.raises(ValueError):
        DeblockConfig(**kwargs)


# -- in the codec ----------------------------------------------------------------------------------

def plain_spectrogram(codec, latents: np.ndarray, seed: int, sigma_cond: float) -> torch.Tensor:
    return torch.cat([s for _, s, _ in codec._chunk_steps(latents, seed, sigma_cond, 0)], dim=-1)


def test_streaming_decode_equals_deblocking_the_whole_spectrogram(codec, stereo_audio):
    """With sigma_cond 0 the lookahead the stream uses is exactly the next emitted chunk, so the streamed
    deblocked decode is the offline deblocking of the plain decode's spectrogram, inverted."""
    x, sr = stereo_audio
    z = codec.encode(x, sr)
    n = x.shape[1]
    got = codec.decode(z, n, sr, seed=3, sigma_cond=0.0, deblock=0.8)
    spec = deblock_spectrogram(plain_spectrogram(codec, z, 3, 0.0), DeblockConfig(strength=0.8))
    with torch.inference_mode():
        want = spectral.trim(spectral.spec_to_wave(spec), n).numpy()
    np.testing.assert_allclose(got, want, atol=2e-5)
    plain = codec.decode(z, n, sr, seed=3, sigma_cond=0.0, deblock=0.0)
    assert np.abs(got - plain).max() > 1e-4  # it did something
    np.testing.assert_array_equal(plain, codec.decode(z, n, sr, seed=3, sigma_cond=0.0))  # the tiny model: off


def test_deblocked_ranged_decode_from_chunk_0_is_a_slice(codec, stereo_audio):
    x, sr = stereo_audio
    z = codec.encode(x, sr)
    n = x.shape[1]
    for sigma_cond in (0.0, 0.4):
        full = codec.decode(z, n, sr, seed=2, sigma_cond=sigma_cond, deblock=1.0)
        part = codec.decode(z, n, sr, seed=2, sigma_cond=sigma_cond, deblock=1.0, start=0.3, duration=0.8)
        a = round(0.3 * sr)
        np.testing.assert_array_equal(part, full[:, a:a + round(0.8 * sr)])


def test_deblocked_salvage_keeps_the_decode_before_the_gap(codec, stereo_audio):
    """Chunk 1 lost: chunk 0 has no seam to smooth, so the deblocked salvaged decode equals the deblocked
    clean one up to chunk 0's tail ramp, and never uses the lost chunk's latents."""
    x, sr = stereo_audio
    z = codec.encode(x, sr)
    n = x.shape[1]
    damaged = z.copy()
    damaged[:, 1] = 0.0  # what a salvaging reader gives: decoded as a pair's right chunk, but no seam is read
    cfg = DeblockConfig(strength=1.0)
    clean = codec.decode(z, n, sr, seed=2, sigma_cond=0.0, deblock=1.0)
    salvaged = codec.decode(damaged, n, sr, seed=2, sigma_cond=0.0, deblock=1.0, lost=[(1, 2)])
    plain = codec.decode(z, n, sr, seed=2, sigma_cond=0.0, deblock=0.0)
    gap = gap_sample(1, sr)
    tail = (CH - cfg.ramp_frames) * spectral.HOP - spectral.PAD_LEFT  # where chunk 0's first ramped frame begins
    np.testing.assert_array_equal(salvaged[:, :tail], clean[:, :tail])
    np.testing.assert_allclose(salvaged[:, :gap], plain[:, :gap], atol=1e-6)  # no ramp at all before a gap


def test_the_weights_file_carries_the_strength(tmp_path, stereo_audio):
    torch.manual_seed(0)
    cfg = get_config("tiny")
    path = tmp_path / "w.safetensors"
    save_weights(path, cfg, Music2Latent2(cfg).state_dict(), metadata={"deblock": "0.7"})
    assert read_info(path).metadata["deblock"] == "0.7"
    codec = load_codec(path, device="cpu")
    assert codec.deblock == 0.7
    x, sr = stereo_audio
    data = codec.compress(x[:, : sr], sr)
    default, _ = codec.decompress(data)
    explicit, _ = codec.decompress(data, deblock=0.7)
    off, _ = codec.decompress(data, deblock=0.0)
    np.testing.assert_array_equal(default, explicit)
    assert np.abs(default - off).max() > 0


def test_a_single_chunk_has_no_seam(codec):
    """A clip of one chunk (0.5 s) decodes the same with and without deblocking: nothing to smooth."""
    x = np.random.default_rng(0).standard_normal((1, 22050)).astype(np.float32) * 0.1
    z = codec.encode(x, 44100)
    assert z.shape[1] == 1
    np.testing.assert_array_equal(codec.decode(z, x.shape[1], 44100, deblock=1.0),
                                  codec.decode(z, x.shape[1], 44100, deblock=0.0))


def test_band_index_cached_in_inference_mode_still_serves_autograd():
    """The cache is filled by whichever call comes first; a decode (inference mode) must not leave an
    inference tensor that breaks a later differentiable use (a training loss, the offline deblocker)."""
    band_index.cache_clear()
    with torch.inference_mode():
        band_energy(torch.randn(1, 2, spectral.FREQ_BINS, 4))
    spec = torch.randn(1, 2, spectral.FREQ_BINS, 4, requires_grad=True)
    band_energy(spec).sum().backward()
    assert spec.grad is not None and spec.grad.abs().sum() > 0
