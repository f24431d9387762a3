"""Decode-side deblocking: smooth the level step the decoder leaves at each chunk seam.

Each chunk is decoded in one network step, and neighbouring chunks disagree about the level at the seam
between them (bench/seams.py: level jumps ~1.7x the music's own). Like a video codec's deblocking filter,
this runs on the decoded output only (the bitstream is unchanged): per frequency band, the mean level of
the `window_frames` frames after a seam is compared with that of the frames before it, and `strength`
of the difference is removed by a linear gain ramp over `ramp_frames` frames on each side, so the two
sides meet halfway at the seam. strength 0 is the plain decode (the paper's). docs/codec.md, "Deblocking".

Everything is on the model's compressed spectrogram (m2lcodec/spectral.py): a linear amplitude gain a
scales the compressed magnitude by a ** AMP_POWER, phase kept.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from m2lcodec import spectral

LOWEST_EDGE_HZ = 125.0  # bands: [0, 125 Hz), then bands_per_octave per octave up to 16 kHz, then the rest
HIGHEST_EDGE_HZ = 16000.0


def band_edges_hz(bands_per_octave: int) -> tuple[float, ...]:
    """Inner band edges: 125 Hz * 2 ** (k / bands_per_octave) up to 16 kHz."""
    octaves = round(torch.log2(torch.tensor(HIGHEST_EDGE_HZ / LOWEST_EDGE_HZ)).item())
    return tuple(LOWEST_EDGE_HZ * 2 ** (k / bands_per_octave) for k in range(octaves * bands_per_octave + 1))


@dataclass(frozen=True)
class DeblockConfig:
    strength: float = 0.0  # fraction of each seam's level step removed; 0 = off (the plain decode)
    ramp_frames: int = 8  # frames on each side of a seam the correction is spread over (<= 32)
    window_frames: int = 4  # frames on each side whose mean level is compared
    max_db: float = 12.0  # the largest step (dB) corrected per band; larger ones are clamped
    bands_per_octave: int = 3  # frequency resolution of the level match (125 Hz - 16 kHz, plus two edge bands)

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"deblock strength must be in [0, 1], got {self.strength}")
        if not 1 <= self.ramp_frames <= spectral.CHUNK_FRAMES // 2:
            raise ValueError(f"ramp_frames must be in 1..{spectral.CHUNK_FRAMES // 2}, got {self.ramp_frames}")
        if not 1 <= self.bands_per_octave <= 12:
            raise ValueError(f"bands_per_octave must be in 1..12, got {self.bands_per_octave}")
        if not 1 <= self.window_frames <= spectral.CHUNK_FRAMES:
            raise ValueError(f"window_frames must be in 1..{spectral.CHUNK_FRAMES}, got {self.window_frames}")

    @property
    def active(self) -> bool:
        return self.strength > 0


@functools.lru_cache(maxsize=16)
def band_index(bands_per_octave: int, device: torch.device | None = None) -> torch.Tensor:
    """(1024,) band of every frequency bin, 0 .. len(band_edges_hz(bands_per_octave)) (cached: read-only).
    Built outside inference mode even when first asked for inside it, so that the cached tensor also
    serves computations autograd tracks (an inference tensor cannot be saved for backward)."""
    with torch.inference_mode(False):
        freqs = torch.arange(spectral.FREQ_BINS, device=device) * (spectral.SAMPLE_RATE / spectral.N_FFT)
        edges = torch.tensor(band_edges_hz(bands_per_octave), device=device)
        return torch.bucketize(freqs, edges, right=True)


def band_energy(spec: torch.Tensor, bands_per_octave: int = 3) -> torch.Tensor:
    """(C, 2, F, T) compressed spectrogram -> (C, bands, T) mean linear power per band and frame."""
    power = (spec.float().pow(2).sum(1) / spectral.AMP_SCALE ** 2) ** (1 / spectral.AMP_POWER)  # |c|^2
    idx = band_index(bands_per_octave, spec.device)
    bands = len(band_edges_hz(bands_per_octave)) + 1
    total = torch.zeros(power.shape[0], bands, power.shape[-1], device=spec.device)
    total.index_add_(1, idx, power)
    count = torch.bincount(idx, minlength=bands).clamp_min(1).to(power.dtype)
    return total / count[None, :, None]


def seam_step_db(left: torch.Tensor, right: torch.Tensor, cfg: DeblockConfig) -> torch.Tensor:
    """Band level (dB) of the first `window_frames` frames of `right` minus the last ones of `left`
    ((C, 2, F, T) chunk spectrograms) -> (C, bands), clamped to +-max_db; quiet bands (60 dB below the
    loudest band of the pair's windows) count as no step."""
    w = cfg.window_frames
    el = band_energy(left[..., -w:], cfg.bands_per_octave).mean(-1)
    er = band_energy(right[..., :w], cfg.bands_per_octave).mean(-1)
    loud = torch.maximum(el, er)
    floor = loud.amax(1, keepdim=True) * 1e-6 + 1e-20
    step = 10 * torch.log10((er + floor) / (el + floor))
    step = torch.where(loud > floor, step, torch.zeros_like(step))
    return step.clamp(-cfg.max_db, cfg.max_db)


def seam_gains(step_db: torch.Tensor, cfg: DeblockConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, bands) seam step -> compressed-magnitude gains (C, F, ramp) for the last `ramp_frames` frames
    of the left chunk and the first ones of the right chunk: +strength/2 of the step on the left, rising
    to the seam, -strength/2 on the right, fading from it."""
    r = cfg.ramp_frames
    ramp = torch.arange(1, r + 1, device=step_db.device, dtype=torch.float32) / r  # 1/r .. 1
    half = 0.5 * cfg.strength * step_db[:, band_index(cfg.bands_per_octave, step_db.device)]  # (C, F) dB
    left_db = half[..., None] * ramp  # rises towards the seam
    right_db = -half[..., None] * ramp.flip(0)  # strongest at the seam
    to_gain = spectral.AMP_POWER / 20 * torch.log(torch.tensor(10.0))
    return torch.exp(left_db * to_gain), torch.exp(right_db * to_gain)


class StreamingDeblocker:
    """Deblocks a stream of decoded chunks in order, with no added latency: `push` gets each chunk with
    the decoder's estimate of the next one (the codec has it already: the pair step that finishes chunk
    t also makes the first estimate of chunk t + 1; with sigma_cond 0 it is exactly the next chunk), or
    None where no chunk follows (the end, or a lost chunk). Seam steps are read from the chunks as
    decoded, before any gain, so the result does not depend on how the stream is cut."""

    def __init__(self, cfg: DeblockConfig) -> None:
        self.cfg = cfg
        self.head_gain: torch.Tensor | None = None  # for the next chunk's first frames

    def push(self, chunk: torch.Tensor, next_chunk: torch.Tensor | None) -> torch.Tensor:
        """(C, 2, F, 64) chunk (and the next one's estimate) -> the chunk deblocked."""
        if not self.cfg.active:
            return chunk
        r = self.cfg.ramp_frames
        out = chunk.clone()
        if self.head_gain is not None:
            out[..., :r] *= self.head_gain[:, None].to(out.dtype)
        self.head_gain = None
        if next_chunk is not None:
            tail_gain, self.head_gain = seam_gains(seam_step_db(chunk, next_chunk, self.cfg), self.cfg)
            out[..., -r:] *= tail_gain[:, None].to(out.dtype)
        return out


def deblock_spectrogram(spec: torch.Tensor, cfg: DeblockConfig) -> torch.Tensor:
    """(C, 2, F, 64 T) decoded spectrogram of a whole clip -> deblocked copy (a seam every 64 frames)."""
    chunks = list(spec.split(spectral.CHUNK_FRAMES, dim=-1))
    deblocker = StreamingDeblocker(cfg)
    return torch.cat([deblocker.push(c, chunks[i + 1] if i + 1 < len(chunks) else None)
                      for i, c in enumerate(chunks)], dim=-1)
