"""An adversarial term for the codec's decode: a small multi-resolution STFT discriminator.

A deviation from the paper, which trains the consistency model with its own loss only (off by default:
`TrainConfig.adv_weight` = `adv_feature_weight` = 0). Why: every reconstruction term (losses.py) is an
average distance, and the best answer to an average distance for the detail the latents do not pin down
is its conditional mean: a smooth, flat spectrum where the music has sharp harmonic lines (peakiness 6.3
dB against the original's ~10-13, docs/training.md). A discriminator rewards detail that looks like
music rather than detail at the right place, which is how EnCodec, DAC and HiFi-GAN get sharp spectra.

The discriminator sees log-magnitude spectrograms at three FFT sizes (EnCodec's MS-STFT discriminator,
on magnitudes rather than complex values and narrower, to fit a CPU step): convolutions over
(frequency, time) with stride 2 along frequency and dilation along time. `generator_terms` gives the
decoder's hinge loss and feature matching (EnCodec's relative L1) per example; `discriminator_loss`
the discriminator's hinge loss.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from m2lcodec.losses import LOG_EPS, stft_magnitude

DISC_FFTS = (512, 1024, 2048)


class STFTDiscriminator(nn.Module):
    """One resolution: (B, N) waveform -> (logits (B, 1, F', T), features of each hidden layer)."""

    def __init__(self, n_fft: int, channels: int = 16) -> None:
        super().__init__()
        self.n_fft = n_fft
        c = channels
        self.layers = nn.ModuleList([
            nn.Conv2d(1, c, (9, 3), stride=(2, 1), padding=(4, 1)),
            nn.Conv2d(c, c, (9, 3), stride=(2, 1), padding=(4, 1)),
            nn.Conv2d(c, c, (9, 3), stride=(2, 1), dilation=(1, 2), padding=(4, 2)),
            nn.Conv2d(c, c, (9, 3), stride=(2, 1), dilation=(1, 4), padding=(4, 4)),
            nn.Conv2d(c, c, (3, 3), padding=(1, 1)),
        ])
        self.out = nn.Conv2d(c, 1, (3, 3), padding=(1, 1))

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.autocast(wave.device.type, enabled=False):
            h = torch.log(stft_magnitude(wave, self.n_fft) + LOG_EPS)[:, None]  # (B, 1, F, T)
            feats = []
            for layer in self.layers:
                h = F.leaky_relu(layer(h), 0.2)
                feats.append(h)
            return self.out(h), feats


class MultiResolutionDiscriminator(nn.Module):
    """One `STFTDiscriminator` per FFT size; forward returns a list of (logits, features)."""

    def __init__(self, ffts: tuple[int, ...] = DISC_FFTS, channels: int = 16) -> None:
        super().__init__()
        self.discs = nn.ModuleList([STFTDiscriminator(n, channels) for n in ffts])

    def forward(self, wave: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [d(wave) for d in self.discs]


def generator_terms(disc: MultiResolutionDiscriminator, est: torch.Tensor,
                    ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example (B, N) -> ((B,) hinge loss, (B,) feature matching), means over resolutions.

    Hinge: mean relu(1 - D(est)) (EnCodec's generator loss). Feature matching: per hidden layer, mean
    |f(est) - f(ref)| / mean |f(ref)| (the reference's features carry no gradient)."""
    with torch.no_grad():
        real = disc(ref)
    fake = disc(est)
    adv = est.new_zeros(est.shape[0], dtype=torch.float32)
    fm = est.new_zeros(est.shape[0], dtype=torch.float32)
    for (logits, f_fake), (_, f_real) in zip(fake, real):
        adv = adv + F.relu(1 - logits).flatten(1).mean(1)
        for a, b in zip(f_fake, f_real):
            fm = fm + (a - b).abs().flatten(1).mean(1) / b.abs().flatten(1).mean(1).clamp_min(1e-8)
    return adv / len(fake), fm / sum(len(f) for _, f in fake)


def discriminator_loss(disc: MultiResolutionDiscriminator, est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Scalar hinge loss of the discriminator: mean relu(1 - D(ref)) + mean relu(1 + D(est)), est detached."""
    loss = torch.zeros((), device=est.device)
    for (real, _), (fake, _) in zip(disc(ref), disc(est.detach())):
        loss = loss + F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return loss / len(disc.discs)
