"""Loss terms (m2lcodec.losses): the multi-resolution STFT loss, and the unrolled pair against the codec."""

import numpy as np
import pytest
import torch

from m2lcodec import schedule
from m2lcodec.codec import chunk_noise
from m2lcodec.losses import (contour_loss, high_band_level, lines_loss, onset_envelope, onset_loss, stft_loss,
                             unrolled_pair)


def test_stft_loss_zero_for_identical_and_grows_with_error():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(2, 8192, generator=g) * 0.1
    assert torch.allclose(stft_loss(ref, ref), torch.zeros(2), atol=1e-6)
    small = stft_loss(ref + 0.001 * torch.randn(2, 8192, generator=g), ref)
    large = stft_loss(ref + 0.05 * torch.randn(2, 8192, generator=g), ref)
    assert (small > 0).all() and (large > 2 * small).all()
    # magnitude-only: a sign flip (phase change by pi everywhere) costs nothing
    assert torch.allclose(stft_loss(-ref, ref), torch.zeros(2), atol=1e-5)
    # per example: the second example's error does not leak into the first
    est = ref.clone()
    est[1] += 0.05
    out = stft_loss(est, ref)
    assert out[0] < 1e-6 < out[1]


def test_stft_loss_bf16_input_runs_in_float32():
    ref = torch.randn(1, 4096) * 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = stft_loss(ref.bfloat16(), ref)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("sigma_cond", [0.0, 0.4])
def test_unrolled_pair_matches_the_codec(codec, sigma_cond):
    """Training's unrolled pair is what Codec runs for two chunks: the left output is the codec's emitted
    chunk 0, and at sigma_cond 0 (second step = identity) the right output is its chunk 1."""
    model = codec.model
    torch.manual_seed(0)
    spec = torch.randn(1, 2, 2, 1024, 64) * 0.2
    with torch.no_grad():
        latents = model.encode(spec.flatten(0, 1)).view(1, 2, 8, 64)
    fp32 = type(codec)(model, codec.info, precision="fp32")
    steps = {t: spec for t, spec, _ in fp32._chunk_steps(latents.numpy(), seed=5, sigma_cond=sigma_cond, start=0)}
    shape = (1, 1, 2, 1024, 64)
    noises = [chunk_noise(5, 0, 0, shape)[:, 0], chunk_noise(5, 0, 1, shape)[:, 0], chunk_noise(5, 1, 0, shape)[:, 0]]
    with torch.no_grad():
        left, right = unrolled_pair(model, model.decoder_features(latents[0]), sigma_cond, *noises)
    torch.testing.assert_close(left, steps[0], rtol=1e-4, atol=1e-4)
    if sigma_cond == 0.0:
        torch.testing.assert_close(right, steps[1], rtol=1e-4, atol=1e-4)
    else:  # the codec refines chunk 1 once more; the pair's right output is its first step only
        assert not torch.allclose(right, steps[1], atol=1e-3)


def test_renoise_zero_is_exact_identity_of_the_second_step(codec):
    """sigma_cond 0: no noise added, evaluated at SIGMA_MIN where c_out = 0: f returns its input."""
    x = torch.randn(1, 2, 1024, 64)
    ctx, level = schedule.renoise(x, 0.0, torch.randn_like(x))
    assert level == schedule.SIGMA_MIN and torch.equal(ctx, x)
    with torch.no_grad():
        feats = codec.model.decoder_features(torch.zeros(1, 8, 64))
        out = codec.model.denoise(ctx[:, None], torch.full((1, 1), level), feats)
    assert torch.equal(out[:, 0], x)


def test_mel_loss_is_the_mel_distance_metric():
    """mel_loss is metrics.mel_distance in torch (to within the smooth floor), and it has a gradient."""
    from m2lcodec.losses import mel_loss
    from m2lcodec.metrics import mel_distance

    g = torch.Generator().manual_seed(0)
    t = torch.arange(16384) / 44100
    ref = (0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.05 * torch.randn(16384, generator=g))[None]
    est = (0.5 * ref + 0.02 * torch.randn(16384, generator=g)).requires_grad_(True)
    loss = mel_loss(est, ref)
    assert float(loss) == pytest.approx(mel_distance(ref.numpy(), est.detach().numpy(), 44100), rel=0.02)
    loss.sum().backward()
    assert torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0
    assert float(mel_loss(ref, ref)) < 1e-6


def test_seam_level_loss_measures_steps_at_the_seam_and_the_end_level():
    """Zero for the original; a level change of the right chunk costs at the seam (the step) and at its
    end; the whole pair 6 dB louder costs only at the end (no step); the loss reads nothing but the
    windows at the seam and at the end."""
    from m2lcodec.losses import seam_level_loss
    from m2lcodec.spectral import CHUNK_SAMPLES, PAD_LEFT

    g = torch.Generator().manual_seed(0)
    ref = torch.randn(2, 2 * CHUNK_SAMPLES + PAD_LEFT, generator=g) * 0.1
    assert torch.allclose(seam_level_loss(ref, ref), torch.zeros(2), atol=1e-6)
    gain = 10 ** (6 / 20)  # +6 dB = 0.602 in log10 energy
    louder = ref.clone()
    louder[:, CHUNK_SAMPLES:] *= gain
    assert torch.allclose(seam_level_loss(louder, ref), torch.full((2,), 2 * 0.602), atol=0.02)
    assert torch.allclose(seam_level_loss(ref * gain, ref), torch.full((2,), 0.602), atol=0.02)
    est = (ref * 0.5).requires_grad_()
    seam_level_loss(est, ref).sum().backward()
    assert est.grad[:, CHUNK_SAMPLES + PAD_LEFT:].abs().sum() > 0
    assert est.grad[:, CHUNK_SAMPLES - 1024:CHUNK_SAMPLES].abs().sum() > 0  # the step also reads the left end
    assert est.grad[:, :CHUNK_SAMPLES - 1024].abs().sum() == 0


def test_seam_level_loss_start_level_holds_each_side_to_the_original():
    """start="level": the whole pair 6 dB louder costs at the start and at the end (no step to hide
    behind); only the left chunk louder costs nothing (the right chunk is right), where "step" charges
    the right chunk for not following it; the left chunk's samples get no gradient."""
    from m2lcodec.losses import seam_level_loss
    from m2lcodec.spectral import CHUNK_SAMPLES, PAD_LEFT

    g = torch.Generator().manual_seed(0)
    ref = torch.randn(2, 2 * CHUNK_SAMPLES + PAD_LEFT, generator=g) * 0.1
    gain = 10 ** (6 / 20)
    assert torch.allclose(seam_level_loss(ref, ref, start="level"), torch.zeros(2), atol=1e-6)
    assert torch.allclose(seam_level_loss(ref * gain, ref, start="level"), torch.full((2,), 2 * 0.602), atol=0.02)
    left_loud = ref.clone()
    left_loud[:, :CHUNK_SAMPLES] *= gain
    assert torch.allclose(seam_level_loss(left_loud, ref, start="level"), torch.zeros(2), atol=1e-6)
    assert torch.allclose(seam_level_loss(left_loud, ref, start="step"), torch.full((2,), 0.602), atol=0.02)
    est = (ref * 0.5).requires_grad_()
    seam_level_loss(est, ref, start="level").sum().backward()
    assert est.grad[:, CHUNK_SAMPLES + PAD_LEFT:].abs().sum() > 0
    assert est.grad[:, :CHUNK_SAMPLES].abs().sum() == 0
    with pytest.raises(ValueError, match="seam start"):
        seam_level_loss(ref, ref, start="middle")


def test_lines_loss_sees_lines_and_combs_not_level_or_noise_texture():
    """lines_loss: zero for identical waveforms, blind to a broadband gain (the envelope is the other terms'
    job), small between two draws of the same noise (the texture's flicker averages out over frames), and
    large for a missing harmonic series or an added 4-bin comb (the stem's pattern in the decode)."""
    g = torch.Generator().manual_seed(0)
    n = 32768
    t = torch.arange(n) / 44100.0
    noise = lambda: 0.05 * torch.randn(1, n, generator=g)  # noqa: E731
    tone = sum(0.1 / k * torch.sin(2 * torch.pi * 110.0 * k * t) for k in range(1, 40))[None]
    music = noise() + tone
    assert float(lines_loss(music, music)) < 1e-6
    assert float(lines_loss(2.0 * music, music)) < 1e-4
    texture = float(lines_loss(noise(), noise()))
    missing = float(lines_loss(noise(), music))
    assert missing > 1.5 * texture
    # a comb: every 4th bin of the 2048-point STFT (86.1 Hz apart) 2.7 dB up, as a sum of sines there
    comb = sum(0.012 * torch.sin(2 * torch.pi * (4 * k + 3) * 44100 / 2048 * t + k) for k in range(1, 200))[None]
    assert float(lines_loss(music + comb, music)) > 3 * texture


def test_contour_loss_reads_the_high_bands_fade_not_its_offset():
    """contour_loss: ~0 for identical waveforms and for a constant gain (an offset of the level error); a
    high band that fades across the chunk (the decode's periodic pattern) scores high, the same fade below
    4 kHz does not; high_band_level reads the ramp's level in dB frame by frame."""
    g = torch.Generator().manual_seed(0)
    n = 32768
    t = torch.arange(n) / 44100
    low = 0.3 * torch.sin(2 * torch.pi * 220 * t)[None] * (1 + 0.5 * torch.sin(2 * torch.pi * 3 * t))[None]
    high = torch.tensor(highpass(torch.randn(n, generator=g).numpy()))[None].float() * 0.05
    ref = low + high
    fade = torch.linspace(2.0, 0.5, n)[None]  # the high band +6 dB at the start to -6 dB at the end
    assert float(contour_loss(ref, ref)) < 1e-6
    assert float(contour_loss(2.0 * ref, ref)) < 1e-4
    faded = float(contour_loss(low + fade * high, ref))
    assert faded > 0.2  # log10 units: a 12 dB ramp is ~0.3 mean |deviation|
    assert float(contour_loss(fade * low + high, ref)) < 0.2 * faded  # the low band's fade is not its concern
    level = 10 * (high_band_level(low + fade * high) - high_band_level(ref))[0]
    assert level.shape[0] == (n - 1024) // 256 + 1
    assert abs(float(level[0]) - 6.0) < 1.0 and abs(float(level[-1]) + 6.0) < 1.0
    est = (low + fade * high).requires_grad_()
    contour_loss(est, ref).sum().backward()
    assert est.grad.abs().sum() > 0


def highpass(x: np.ndarray, cutoff_hz: float = 5000.0) -> np.ndarray:
    """White noise with everything below cutoff_hz removed (FFT mask): a pure high band."""
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(x.shape[0], 1 / 44100) < cutoff_hz] = 0
    return np.fft.irfft(spec, n=x.shape[0])


def test_onset_loss_rewards_onsets_where_the_crop_has_them():
    """onset_loss: ~0 for identical waveforms and blind to gain; a steady noise texture and the same hits
    shifted by a quarter of their period score high; the same hits under other noise score low; the
    envelope matches metrics.onset_correlation's (whose measure the term trains)."""
    from m2lcodec.metrics import onset_correlation

    g = torch.Generator().manual_seed(0)
    n = 32768
    noise = lambda: 0.02 * torch.randn(1, n, generator=g)  # noqa: E731

    def hits(offset: int) -> torch.Tensor:  # decaying noise bursts every 4096 samples
        env = torch.zeros(n)
        for start in range(offset, n, 4096):
            env[start:start + 2048] = torch.exp(-torch.arange(min(2048, n - start)) / 300.0)
        return 0.3 * env[None] * torch.randn(1, n, generator=g)

    drums = hits(512) + noise()
    assert float(onset_loss(drums, drums)) < 1e-5
    assert float(onset_loss(3.0 * drums, drums)) < 1e-3  # log-mel flux: a gain is an offset, gone in a diff
    same_hits = float(onset_loss(hits(512) + noise(), drums))
    steady = float(onset_loss(0.1 * torch.randn(1, n, generator=g), drums))
    shifted = float(onset_loss(hits(512 + 1024) + noise(), drums))
    assert same_hits < 0.1 and steady > 0.7 and shifted > 0.7
    # the torch envelope is the measure's, frame for frame (the measure clamps at the floor; at these levels
    # no band sits near it), so 1 - onset_loss reads the measure's correlation
    other = hits(512) + noise()
    measured = onset_correlation(drums.numpy(), other.numpy(), 44100)
    assert abs((1 - float(onset_loss(other, drums))) - measured) < 1e-3
    assert onset_envelope(drums).shape == (1, n // 512)
    # per example, and a gradient reaches the estimate
    est = torch.cat([drums, 0.1 * torch.randn(1, n, generator=g)]).requires_grad_()
    out = onset_loss(est, torch.cat([drums, drums]))
    assert out[0] < 1e-5 < 0.5 < out[1]
    out.sum().backward()
    assert est.grad.abs().sum() > 0
