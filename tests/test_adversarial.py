"""The adversarial term's pieces (m2lcodec/adversarial.py): shapes, zero points, gradients, and that the
discriminator learns to tell a tone from noise in a few steps."""

import math

import torch

from m2lcodec.adversarial import MultiResolutionDiscriminator, discriminator_loss, generator_terms


def tones(n: int, length: int = 8192, seed: int = 0) -> torch.Tensor:
    """n waveforms of a few harmonics of a random fundamental: sharp spectral lines."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 44100
    f0 = 200 + 400 * torch.rand(n, 1, generator=g)
    return sum(0.1 / k * torch.sin(2 * math.pi * k * f0 * t) for k in range(1, 6))


def noise(n: int, length: int = 8192, seed: int = 1) -> torch.Tensor:
    return 0.05 * torch.randn(n, length, generator=torch.Generator().manual_seed(seed))


def test_generator_terms_shapes_and_zero_feature_matching_on_the_original():
    torch.manual_seed(0)
    disc = MultiResolutionDiscriminator(channels=4)
    ref = tones(3)
    adv, fm = generator_terms(disc, ref.clone(), ref)
    assert adv.shape == fm.shape == (3,)
    assert torch.all(adv > 0)  # hinge: an untrained discriminator's logits sit near 0, below the margin 1
    torch.testing.assert_close(fm, torch.zeros(3))
    _, fm_noise = generator_terms(disc, noise(3), ref)
    assert torch.all(fm_noise > 0.05)


def test_generator_terms_train_the_estimate_and_discriminator_loss_does_not():
    torch.manual_seed(0)
    disc = MultiResolutionDiscriminator(channels=4)
    est = noise(2).requires_grad_()
    adv, fm = generator_terms(disc, est, tones(2))
    (adv + fm).sum().backward()
    assert est.grad is not None and float(est.grad.abs().sum()) > 0
    est.grad = None
    discriminator_loss(disc, est, tones(2)).backward()
    assert est.grad is None  # the discriminator's step leaves the decoder alone
    assert all(p.grad is not None for p in disc.parameters())


def test_discriminator_learns_tones_from_noise():
    torch.manual_seed(0)
    disc = MultiResolutionDiscriminator(channels=4)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.9))
    real, fake = tones(4), noise(4)
    first = discriminator_loss(disc, fake, real).item()
    for _ in range(30):
        opt.zero_grad()
        discriminator_loss(disc, fake, real).backward()
        opt.step()
    last = discriminator_loss(disc, fake, real).item()
    assert last < 0.5 * first
    # the generator's hinge now says noise is further from "real" than tones are
    with torch.no_grad():
        adv_fake, _ = generator_terms(disc, fake, real)
        adv_real, _ = generator_terms(disc, real, real)
    assert float(adv_fake.mean()) > float(adv_real.mean()) + 0.5
