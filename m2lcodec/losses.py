"""Loss terms of training, apart from the loop that combines them (m2lcodec/train.py).

- `pseudo_huber`: the consistency distance of the paper, per chunk.
- `envelope_error`: the decoder's anti-collapse term (docs/training.md, "Decoder collapse").
- `stft_loss`: multi-resolution STFT loss on waveforms (log-magnitude L1 + spectral convergence), the
  reconstruction term of the codec's own decode steps (docs/training.md, "Reconstruction terms").
- `mel_loss`: the multi-resolution log-mel L1 of `metrics.mel_distance`, differentiable (same filterbank).
- `log_mel`: the log-mel spectrogram both `mel_loss` and `onset_envelope` read.
- `lines_loss`: the frame-mean fine spectrum (what stands above each bin's neighbourhood over a chunk):
  harmonic lines, and the fixed 4-bin comb the stem leaves in the decode (docs/training.md, "Lines term").
- `onset_loss`: 1 - correlation of the two onset envelopes (log-mel flux), the measure
  `metrics.onset_correlation` reads (docs/training.md, "Onset term").
- `contour_loss`: the frame-by-frame level above 4 kHz, offset removed: the fade across each chunk that
  bench/seams.py's periodic level error reads (docs/training.md, "The contour term").
- `seam_level_loss`: band levels where the decode joins chunks: the right chunk's start must step from
  the left chunk's end as the original steps, and its end (what the next seam joins) must have the
  original's level (docs/training.md, "Seam level term").
- `unrolled_pair`: the codec's two-step decode of two consecutive chunks, written once so that training
  can run exactly what `Codec` runs (tests/test_losses.py checks the two agree).
"""

from __future__ import annotations

import math

import torch

from m2lcodec import schedule
from m2lcodec.metrics import mel_filterbank
from m2lcodec.model import Music2Latent2
from m2lcodec.spectral import CHUNK_SAMPLES, PAD_LEFT, envelope

HUBER_C = 0.00054 * math.sqrt(2 * 1024 * 64)  # ~0.1955, d = elements per chunk
STFT_SIZES = (2048, 1024, 512, 256)
LOG_EPS = 1e-5
SEAM_BAND_EDGES_HZ = (0.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0, 22050.0)


def pseudo_huber(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per chunk: sqrt(||a - b||^2 + c^2) - c over all elements of a chunk; a, b (B, n, 2, F, T) -> (B, n)."""
    sq = (a.float() - b.float()).pow(2).flatten(2).sum(-1)
    return torch.sqrt(sq + HUBER_C**2) - HUBER_C


def envelope_error(feats: list[torch.Tensor], chunks: torch.Tensor) -> torch.Tensor:
    """Per chunk: L2 distance between channel 0 of the decoder's finest features and the chunk's magnitude
    envelope on that grid; feats for N chunks, chunks (N, 2, F, T) -> (N,)."""
    pred = feats[0][:, 0].float()
    return (pred - envelope(chunks, tuple(pred.shape[-2:]))).pow(2).flatten(1).sum(-1).sqrt()


def stft_magnitude(wave: torch.Tensor, n_fft: int) -> torch.Tensor:
    """(B, N) -> |STFT| (B, n_fft / 2 + 1, frames): centred Hann n_fft, hop n_fft / 4, float32 (call with
    autocast off: no bf16 FFT on CPU). The spectrogram every term here, and the discriminator, reads."""
    win = torch.hann_window(n_fft, device=wave.device)
    return torch.stft(wave.float(), n_fft, n_fft // 4, window=win, return_complex=True).abs()


def stft_loss(est: torch.Tensor, ref: torch.Tensor, sizes: tuple[int, ...] = STFT_SIZES) -> torch.Tensor:
    """Multi-resolution STFT loss per example: est, ref (B, N) waveforms -> (B,).

    Mean over FFT sizes n (Hann, hop n/4) of mean |log(|S_est| + eps) - log(|S_ref| + eps)| plus the
    spectral convergence ||S_ref| - |S_est||_F / ||S_ref||_F. Always float32 (no bf16 FFT on CPU).
    A few lines of torch.stft rather than auraloss: same definition, no extra dependency, per-example
    values, and measured faster here (docs/training.md)."""
    est, ref = est.float(), ref.float()
    total = est.new_zeros(est.shape[0])
    with torch.autocast(est.device.type, enabled=False):
        for n in sizes:
            s_est, s_ref = stft_magnitude(est, n), stft_magnitude(ref, n)
            log_l1 = (torch.log(s_est + LOG_EPS) - torch.log(s_ref + LOG_EPS)).abs().flatten(1).mean(1)
            conv = (s_ref - s_est).flatten(1).norm(dim=1) / s_ref.flatten(1).norm(dim=1).clamp_min(1e-8)
            total = total + log_l1 + conv
    return total / len(sizes)


def log_mel(wave: torch.Tensor, n_fft: int, n_mels: int, floor: float, sample_rate: int = 44100) -> torch.Tensor:
    """(B, N) -> (B, n_mels, frames): log10(mel + floor) of a centred Hann STFT (hop n_fft / 4, reflect
    padding) through `metrics.mel_filterbank`, in float32: the spectrogram `mel_loss` and `onset_envelope`
    compare, as `metrics.log_mel_spectrogram` computes it (floor added rather than clamped, for gradient)."""
    with torch.autocast(wave.device.type, enabled=False):
        bank = torch.tensor(mel_filterbank(sample_rate, n_fft, n_mels), dtype=torch.float32, device=wave.device)
        return torch.log10(bank @ stft_magnitude(wave, n_fft) + floor)


def mel_loss(est: torch.Tensor, ref: torch.Tensor, sizes: tuple[int, ...] = (512, 1024, 2048), n_mels: int = 80,
             floor: float = 1e-5, sample_rate: int = 44100) -> torch.Tensor:
    """Per example (B, N) -> (B,): `metrics.mel_distance` in torch (centred Hann STFT, hop n/4, HTK
    filterbank on magnitudes, log10, mean |difference|), with log10(mel + floor) instead of clamping at
    the floor so that a band the estimate left silent still has a gradient."""
    total = est.new_zeros(est.shape[0], dtype=torch.float32)
    for n in sizes:
        mels = [log_mel(w, n, n_mels, floor, sample_rate) for w in (est, ref)]
        total = total + (mels[0] - mels[1]).abs().flatten(1).mean(1)
    return total / len(sizes)


def lines_loss(est: torch.Tensor, ref: torch.Tensor, n_fft: int = 2048, width: int = 9) -> torch.Tensor:
    """Per example (B, N) -> (B,): mean |difference| of the two waveforms' *lines*: the mean over frames
    (Hann n_fft, hop n/4) of log(|S| + eps), minus its running mean over `width` bins (what stands above
    the neighbourhood). Averaging over frames first takes out the noise texture's frame-to-frame
    fluctuation, which per-frame log-L1 (`stft_loss`) is dominated by, and leaves the stationary part of
    a chunk's fine spectrum: its harmonics, and any fixed pattern of the decoder (docs/training.md, "Lines
    term"). Both sides' running means are removed, so the envelope is left to the other terms."""
    est, ref = est.float(), ref.float()
    with torch.autocast(est.device.type, enabled=False):
        lines = []
        for w in (est, ref):
            level = torch.log(stft_magnitude(w, n_fft) + LOG_EPS).mean(-1)  # (B, F)
            local = torch.nn.functional.avg_pool1d(
                torch.nn.functional.pad(level[:, None], (width // 2, width // 2), mode="replicate"),
                width, stride=1)[:, 0]
            lines.append(level - local)
        return (lines[0] - lines[1]).abs().mean(1)


def onset_envelope(wave: torch.Tensor, n_fft: int = 2048, n_mels: int = 80, floor: float = 1e-4,
                   sample_rate: int = 44100) -> torch.Tensor:
    """(B, N) -> (B, frames - 1): half-wave rectified log10-mel flux summed over bands, hop n_fft / 4:
    `metrics.onset_correlation`'s envelope in torch (log10(mel + floor) instead of clamping at the floor,
    so that a silent band still has a gradient)."""
    return torch.relu(log_mel(wave, n_fft, n_mels, floor, sample_rate).diff(dim=-1)).sum(1)


def onset_loss(est: torch.Tensor, ref: torch.Tensor, n_fft: int = 2048) -> torch.Tensor:
    """Per example (B, N) -> (B,): 1 - Pearson correlation of the two onset envelopes (`onset_envelope`).
    0 when the decode's onsets rise where, and in proportion as, the crop's do; ~1 for a steady texture
    or unrelated onsets. Blind to the envelope's scale and offset (the noise floor of flux a noise texture
    adds everywhere), as the measure is; a crop with no onsets at all gives ~1 and a small gradient."""
    a, b = onset_envelope(est, n_fft), onset_envelope(ref, n_fft)
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    corr = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-6)
    return 1.0 - corr


def high_band_level(wave: torch.Tensor, cutoff_hz: float = 4000.0, n_fft: int = 1024, hop: int = 256,
                    sample_rate: int = 44100) -> torch.Tensor:
    """(B, N) -> (B, frames): log10 energy above `cutoff_hz` per Hann frame (n_fft, hop, no centring), the
    level bench/seams.py's periodic error reads per frame, floored 60 dB below the loudest frame."""
    frames = wave.float().unfold(-1, n_fft, hop) * torch.hann_window(n_fft, device=wave.device)
    power = torch.fft.rfft(frames).abs().pow(2)
    high = torch.fft.rfftfreq(n_fft, 1.0 / sample_rate).to(wave.device) >= cutoff_hz
    energy = power[..., high].sum(-1)
    return torch.log10(energy + 1e-6 * energy.amax(-1, keepdim=True).detach() + 1e-12)


def contour_loss(est: torch.Tensor, ref: torch.Tensor, cutoff_hz: float = 4000.0) -> torch.Tensor:
    """Per example (B, N) -> (B,): mean over frames of |e - mean(e)|, e the decode's high-band level error
    per frame (`high_band_level`, log10 energy above `cutoff_hz`: 1 = 10 dB). The mean is removed, so a
    constant level error (which the mel term sees) costs nothing, and what is left is the error's
    *shape* across the chunk: the decode's high band fading from each chunk's start, which folded at the
    chunk period is bench/seams.py's periodic level error, and high-band onsets it smears. A broadband
    level fluctuates far less from frame to frame than a mel band's, so a drift of a dB or two, lost in
    the per-band noise of `mel_loss`, stands out here."""
    with torch.autocast(est.device.type, enabled=False):
        err = high_band_level(est, cutoff_hz) - high_band_level(ref, cutoff_hz)
        return (err - err.mean(-1, keepdim=True)).abs().mean(-1)


def band_levels(wave: torch.Tensor, start: int, window: int, sample_rate: int = 44100) -> torch.Tensor:
    """log10 energy per band (SEAM_BAND_EDGES_HZ) of wave[:, start:start + window], Hann-windowed, floored
    40 dB below the window's total energy; (B, N) -> (B, bands)."""
    seg = wave[:, start:start + window].float() * torch.hann_window(window, device=wave.device)
    power = torch.fft.rfft(seg).abs().pow(2)
    freqs = torch.fft.rfftfreq(window, 1.0 / sample_rate).to(wave.device)
    edges = SEAM_BAND_EDGES_HZ
    bands = torch.stack([power[:, (freqs >= lo) & (freqs < hi)].sum(1) for lo, hi in zip(edges[:-1], edges[1:])], 1)
    floor = 1e-4 * bands.sum(1, keepdim=True).detach() + 1e-10
    return torch.log10(bands + floor)


SEAM_STARTS = ("step", "level")


def seam_level_loss(est: torch.Tensor, ref: torch.Tensor, window: int = 1024, start: str = "step") -> torch.Tensor:
    """Per example (B, N) -> (B,), on the waveforms of a decoded pair and the original pair (N >= 2 chunks).

    Mean over bands of two L1 terms in log10 energy. (1) The start of the right chunk, the window just
    after its overlap with the left chunk's frames (CHUNK_SAMPLES + PAD_LEFT, right chunk only): with
    start="step", the decode's step from the window just before the right chunk's frames begin (sample
    CHUNK_SAMPLES, left chunk only) against the original's step, so the right chunk continues the left
    as decoded (and inherits the left's level error); with start="level", its level against the
    original's, so each side of a seam is held to the original and the step follows. (2) The level of
    the right chunk's last final samples (the window before 2 x CHUNK_SAMPLES, where the next chunk's
    frames will begin) against the original's: the edge the next seam joins. bench/seams.py measures
    the same places (its level-jump ratio, broadband, 10 ms)."""
    if start not in SEAM_STARTS:
        raise ValueError(f"unknown seam start {start!r}; expected one of {SEAM_STARTS}")
    est, ref = est.float(), ref.float()
    with torch.autocast(est.device.type, enabled=False):
        before, after, end = CHUNK_SAMPLES - window, CHUNK_SAMPLES + PAD_LEFT, 2 * CHUNK_SAMPLES - window
        head = band_levels(est, after, window) - band_levels(ref, after, window)
        if start == "step":
            head = head - (band_levels(est, before, window) - band_levels(ref, before, window))
        edge = (band_levels(est, end, window) - band_levels(ref, end, window)).abs()
        return (head.abs() + edge).mean(1)


def unrolled_pair(model: Music2Latent2, feats: list[torch.Tensor], sigma_cond: float,
                  noise_left: torch.Tensor, noise_renoise: torch.Tensor, noise_right: torch.Tensor,
                  grad_first: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The codec's decode of two consecutive chunks, as `Codec` runs it.

    feats: decoder features of the 2B chunks ordered (pair, chunk); noises (B, 2, F, T) standard normal.
    Step 1: the left chunk alone from sigma_max (no gradient unless `grad_first`). Step 2: the pair
    (left estimate re-noised to sigma_cond, right chunk from sigma_max) in one evaluation. Returns
    (left's emitted second step, right's first step), each (B, 2, F, T)."""
    b = noise_left.shape[0]
    left_feats = [f.view(b, 2, *f.shape[1:])[:, 0] for f in feats]
    sig_max = torch.full((b, 1), schedule.SIGMA_MAX, device=noise_left.device)
    with torch.set_grad_enabled(grad_first and torch.is_grad_enabled()):
        first = model.denoise((noise_left * schedule.SIGMA_MAX)[:, None], sig_max, left_feats)[:, 0]
    context, s_cond = schedule.renoise(first, sigma_cond, noise_renoise)
    sig_pair = torch.tensor([s_cond, schedule.SIGMA_MAX], device=noise_left.device).expand(b, 2)
    out = model.denoise(torch.stack([context, noise_right * schedule.SIGMA_MAX], dim=1), sig_pair, feats)
    return out[:, 0], out[:, 1]
