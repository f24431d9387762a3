"""The codec: audio <-> latents <-> .m2l, around any model with the Music2Latent2 interface.

Channels: every channel is one mono stream for the mono model; all channels go through the network
together as one batch. Sample rates: audio is resampled to 44.1 kHz for the model and back to its own
rate on output, and the exact sample count is restored.

Decoding is the two-step autoregressive procedure of the design doc (section 5), one network evaluation
per chunk, as a generator: chunk 0 is decoded alone from pure noise; then each evaluation takes the
pair (previous chunk's first estimate re-noised to sigma_cond, current chunk from pure noise), emits
the previous chunk's refined second step and keeps the current chunk's first step. Noise is drawn from
a generator seeded by (seed, chunk index), so the same file and seed always decode the same way, and a
decode that starts in the middle draws the same noise as one from the start.

The first step's starting noise is scaled by the weights file's "noise_scale" (1 = the paper's, and the
default for files that do not say; measured below 1 in docs/codec.md "Noise scale").

The decoded chunks then pass the seam deblocker (m2lcodec/deblock.py, a measured deviation from the
paper: docs/codec.md "Deblocking"), whose strength the weights file carries ("deblock"; 0 = off, the
paper's decode, and the default for files that do not say).

A damaged file's lost chunks (`lost=` of decode_stream) become silence, and decoding restarts after each gap
as a ranged decode warming up on the first intact chunk does (the timeline: m2lcodec/salvage.py,
docs/codec.md).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from m2lcodec import schedule, spectral
from m2lcodec.audio import AudioError, AudioReader, AudioWriter, StreamResampler, WavStreamWriter, resample
from m2lcodec.container import DEFAULT_FRAME_CHUNKS, Header, Reader, default_quant_params, pack, write_file
from m2lcodec.deblock import DeblockConfig, StreamingDeblocker
from m2lcodec.model import Music2Latent2, select_features
from m2lcodec.precision import autocast, autocast_dtype
from m2lcodec.salvage import DamagedRange, restart_sample, salvage_plan
from m2lcodec.version import __version__
from m2lcodec.weights import ModelInfo, load_model

DEFAULT_SIGMA_COND = 0.4  # best in the paper's sweep (Fig. 3); a model file may carry its own


def decode_defaults(info: ModelInfo) -> dict[str, float]:
    """The decode parameters a weights file carries, with the defaults for files that do not say:
    sigma_cond (DEFAULT_SIGMA_COND, the paper's), the seam deblocking strength (0 = off) and the scale of
    the first step's starting noise (1 = the paper's: std SIGMA_MAX)."""
    return {"sigma_cond": float(info.metadata.get("sigma_cond", DEFAULT_SIGMA_COND)),
            "deblock": float(info.metadata.get("deblock", 0.0)),
            "noise_scale": float(info.metadata.get("noise_scale", 1.0))}


class ModelMismatchError(ValueError):
    """The .m2l file was made by another model than the one loaded."""


@dataclass
class CodecStats:
    """What compress/decompress report: sizes, rates and timing."""

    duration: float
    sample_rate: int
    channels: int
    input_bytes: int
    output_bytes: int
    pcm16_bytes: int
    seconds: float
    damaged: list[DamagedRange] = field(default_factory=list)  # decompress --salvage: silent stretches
    notes: list[str] = field(default_factory=list)  # decompress --salvage: other damage, guessed frame indices

    @property
    def realtime(self) -> float:
        return self.duration / max(self.seconds, 1e-9)


def model_length(num_samples: int, sample_rate: int) -> int:
    """Samples at the model rate that stand for `num_samples` at `sample_rate`."""
    return max(1, math.ceil(num_samples * spectral.SAMPLE_RATE / sample_rate))


def fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad (C, N) to exactly n samples (resamplers may be off by a sample)."""
    if audio.shape[1] >= n:
        return audio[:, :n]
    return np.pad(audio, ((0, 0), (0, n - audio.shape[1])))


def chunk_noise(seed: int, chunk: int, role: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise that depends only on (seed, chunk, role): 0 = initial, 1 = re-noising."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + chunk * 2 + role) % (2**63))
    return torch.randn(shape, generator=g)


class Codec:
    """A loaded model plus everything to turn audio into latents, bytes and files, and back."""

    def __init__(self, model: Music2Latent2, info: ModelInfo, device: str = "cpu", batch_chunks: int = 16,
                 precision: str = "auto") -> None:
        self.device = torch.device(device)
        # channels-last convolutions are ~10% faster on CPU (oneDNN); docs/architecture.md
        self.model = model.eval().to(memory_format=torch.channels_last) if self.device.type == "cpu" else model.eval()
        self.info = info
        self.batch_chunks = batch_chunks
        self.dtype = autocast_dtype(precision, self.device)  # auto: bf16 only where it is fast (precision.py)
        defaults = decode_defaults(info)
        self.sigma_cond = defaults["sigma_cond"]
        self.deblock = defaults["deblock"]  # seam deblocking strength (m2lcodec/deblock.py)
        self.noise_scale = defaults["noise_scale"]  # starting noise std, in units of SIGMA_MAX

    @property
    def sample_rate(self) -> int:
        return spectral.SAMPLE_RATE

    def _autocast(self):
        return autocast(self.device, self.dtype)

    # -- encoding ----------------------------------------------------------------------------
    def _model_audio(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[None]
        if audio.ndim != 2 or audio.shape[1] == 0:
            raise AudioError("audio must be (channels, samples) with at least one sample")
        if not np.isfinite(audio).all():
            raise AudioError("audio contains NaN or infinite samples")
        return fit_length(resample(audio, sample_rate, self.sample_rate), model_length(audio.shape[1], sample_rate))

    def _chunk_specs(self, wave: torch.Tensor, first: int, last: int) -> torch.Tensor:
        """Spectrograms of chunks [first, last) of a padded (C, N) waveform -> (C * n, 2, 1024, 64)."""
        seg = wave[:, first * spectral.CHUNK_SAMPLES : last * spectral.CHUNK_SAMPLES + spectral.PAD_LEFT]
        chunks = spectral.split_chunks(spectral.wave_to_spec(seg))  # (C, n, 2, 1024, 64)
        return chunks.flatten(0, 1)

    def _spec_batches(self, audio: np.ndarray, sample_rate: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(channels, samples) -> (chunks in batch, spectrograms (C * n, 2, 1024, 64)) in bounded batches."""
        wave, chunks = spectral.pad_to_chunks(torch.from_numpy(self._model_audio(audio, sample_rate)))
        step = max(1, self.batch_chunks // wave.shape[0])
        for first in range(0, chunks, step):
            last = min(first + step, chunks)
            yield last - first, self._chunk_specs(wave, first, last).to(self.device)

    @torch.inference_mode()
    def encode(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """(channels, samples) at any rate -> latents (channels, T, K, D) float32 in (-1, 1)."""
        channels = 1 if np.ndim(audio) == 1 else np.shape(audio)[0]
        out = []
        for n, spec in self._spec_batches(audio, sample_rate):
            with self._autocast():
                z = self.model.encode(spec)
            out.append(z.float().view(channels, n, *z.shape[1:]).cpu())
        return torch.cat(out, dim=1).numpy()

    @torch.inference_mode()
    def encode_blocks(self, blocks: Iterable[np.ndarray], sample_rate: int) -> tuple[np.ndarray, int]:
        """Audio blocks (C, n) in order -> (latents (C, T, K, D), samples seen), holding only the latents
        and about one batch of audio: the streaming form of `encode` (a pipe, an hour-long file). The
        latents equal `encode` of the concatenation (same batches; StreamResampler equals `resample`)."""
        resampler: StreamResampler | None = None
        step = cut = 0
        pending: list[np.ndarray] = []  # padded model-rate stream from chunk `done` on
        buffered = done = num_samples = 0
        out: list[torch.Tensor] = []

        def run(wave: np.ndarray, chunks: int) -> None:
            spec = self._chunk_specs(torch.from_numpy(wave), 0, chunks).to(self.device)
            with self._autocast():
                z = self.model.encode(spec)
            out.append(z.float().view(wave.shape[0], chunks, *z.shape[1:]).cpu())

        for block in blocks:
            block = np.asarray(block, dtype=np.float32)
            if resampler is None:
                channels = block.shape[0]
                resampler = StreamResampler(sample_rate, self.sample_rate, channels)
                step = max(1, self.batch_chunks // channels)  # the same batches as `encode`
                cut = step * spectral.CHUNK_SAMPLES
                pending, buffered = [np.zeros((channels, spectral.PAD_LEFT), np.float32)], spectral.PAD_LEFT
            if not np.isfinite(block).all():
                raise AudioError("audio contains NaN or infinite samples")
            num_samples += block.shape[1]
            y = resampler.process(block)
            pending.append(y)
            buffered += y.shape[1]
            while buffered >= cut + spectral.PAD_LEFT:
                wave = np.concatenate(pending, axis=1)
                run(wave[:, : cut + spectral.PAD_LEFT], step)
                pending, buffered, done = [wave[:, cut:]], wave.shape[1] - cut, done + step
        if resampler is None or num_samples == 0:
            raise AudioError("audio must have at least one sample")
        pending.append(resampler.process(np.zeros((pending[0].shape[0], 0), np.float32), last=True))
        wave = np.concatenate(pending, axis=1)
        chunks = spectral.num_chunks(model_length(num_samples, sample_rate))
        # the whole-file path trims or zero-pads the resampled audio to model_length, then pads to chunks
        keep = spectral.padded_length(chunks) - done * spectral.CHUNK_SAMPLES - spectral.PAD_LEFT
        wave = fit_length(wave, min(wave.shape[1], spectral.PAD_LEFT + model_length(num_samples, sample_rate)
                                    - done * spectral.CHUNK_SAMPLES))
        wave = fit_length(wave, keep + spectral.PAD_LEFT)
        for first in range(done, chunks, step):
            n = min(step, chunks - first)
            off = (first - done) * spectral.CHUNK_SAMPLES
            run(wave[:, off : off + n * spectral.CHUNK_SAMPLES + spectral.PAD_LEFT], n)
        return torch.cat(out, dim=1).numpy(), num_samples

    @torch.inference_mode()
    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """MIR features (design doc section 6): each chunk's K summary tokens before the encoder's last
        linear layer, stacked along channels (K * width) and averaged over chunks -> (channels, K * width)."""
        channels = 1 if np.ndim(audio) == 1 else np.shape(audio)[0]
        total, chunks = 0.0, 0
        for n, spec in self._spec_batches(audio, sample_rate):
            with self._autocast():
                f = self.model.encoder.features(spec)
            total = total + f.float().view(channels, n, -1).sum(1).cpu()
            chunks += n
        return (total / chunks).numpy()

    # -- decoding ----------------------------------------------------------------------------
    def _features(self, latents, first: int, last: int) -> list[torch.Tensor]:
        """Decoder features of chunks [first, last) for all channels, ordered (chunk, channel).
        `latents` is a (C, T, K, D) array or a LazyLatents that reads only the frames asked for."""
        block = torch.from_numpy(np.ascontiguousarray(latents[:, first:last], dtype=np.float32))
        z = block.transpose(0, 1).reshape(-1, *block.shape[2:]).to(self.device)
        with self._autocast():
            return self.model.decoder_features(z)

    def _chunk_steps(self, latents, seed: int, sigma_cond: float, start: int,
                     noise_scale: float = 1.0) -> Iterator[tuple[int, torch.Tensor]]:
        """Yields (chunk index t, refined spectrogram (C, 2, 1024, 64), first estimate of chunk t + 1 or
        None for the last chunk) for chunks start.. in order. The estimate comes free with the pair step
        that refines chunk t (with sigma_cond 0 it is chunk t + 1 as emitted); the deblocker reads it.
        Each chunk's first step denoises noise of std noise_scale * SIGMA_MAX, the network told SIGMA_MAX."""
        channels, total = latents.shape[:2]
        shape = (channels, 1, 2, spectral.FREQ_BINS, spectral.CHUNK_FRAMES)
        s_cond = schedule.cond_level(sigma_cond)
        sig_single = torch.full((channels, 1), schedule.SIGMA_MAX, device=self.device)
        sig_pair = torch.tensor([s_cond, schedule.SIGMA_MAX], device=self.device).expand(channels, 2)
        sig_last = torch.full((channels, 2), s_cond, device=self.device)
        feats, feats_first = None, 0
        prev_feats = prev = None

        def chunk_feats(t: int) -> list[torch.Tensor]:
            nonlocal feats, feats_first
            if feats is None or not feats_first <= t < feats_first + feats[0].shape[0] // channels:
                feats_first = t  # decoder features in parallel batches: memory bounded by the batch
                feats = self._features(latents, t, min(t + max(1, self.batch_chunks // channels), total))
            i = (t - feats_first) * channels
            return select_features(feats, slice(i, i + channels))

        def pair_features(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[torch.Tensor]:
            return [torch.stack([fa, fb], dim=1).flatten(0, 1) for fa, fb in zip(a, b)]

        def renoised(x: torch.Tensor, t: int) -> torch.Tensor:  # chunk t's estimate, back at sigma_cond
            return schedule.renoise(x, sigma_cond, chunk_noise(seed, t, 1, shape).to(self.device)[:, 0])[0]

        for t in range(start, total):
            f_t = chunk_feats(t)
            x_t = chunk_noise(seed, t, 0, shape).to(self.device) * (schedule.SIGMA_MAX * noise_scale)
            with self._autocast():
                if prev is None:
                    prev = self.model.denoise(x_t, sig_single, f_t)[:, 0]
                    prev_feats = f_t
                    continue
                out = self.model.denoise(torch.stack([renoised(prev, t - 1), x_t[:, 0]], dim=1), sig_pair,
                                         pair_features(prev_feats, f_t))
            yield t - 1, out[:, 0].float(), out[:, 1].float()
            prev, prev_feats = out[:, 1], f_t
            last_emitted = out[:, 0]
        if sigma_cond <= 0:  # the second step at SIGMA_MIN is exactly the identity: no extra pass needed
            yield total - 1, prev.float(), None
            return
        # the last chunk's second step: one extra pass, with the refined chunk before it as context
        with self._autocast():
            if total - start >= 2:
                ctx = renoised(last_emitted, total - 2)
                out = self.model.denoise(torch.stack([ctx, renoised(prev, total - 1)], dim=1), sig_last,
                                         pair_features(chunk_feats(total - 2), prev_feats))[:, 1]
            else:
                out = self.model.denoise(renoised(prev, total - 1)[:, None], sig_last[:, :1], prev_feats)[:, 0]
        yield total - 1, out.float(), None

    @torch.inference_mode()
    def decode_stream(self, latents: np.ndarray, num_samples: int | None = None, sample_rate: int | None = None,
                      seed: int = 0, sigma_cond: float | None = None, start: float = 0.0,
                      duration: float | None = None, block_chunks: int = 1,
                      lost: Sequence[tuple[int, int]] = (), deblock: float | None = None,
                      noise_scale: float | None = None) -> Iterator[np.ndarray]:
        """Latents (C, T, K, D) -> audio blocks (C, n) float32 at `sample_rate`, in order, with bounded
        memory. `num_samples` is the original length at `sample_rate` (default: all T chunks);
        `start`/`duration` (seconds) decode a time range, warming up on the chunk before it.

        `lost` lists [start, stop) chunk ranges whose latents are missing (a damaged file; their values are
        never decoded but must be finite: a salvaging reader gives zeros). Their time (`salvage_plan`) is
        silence, and decoding restarts after each gap exactly as a ranged decode whose warm-up chunk is the
        first intact one; before a gap the output equals the undamaged decode (at the model's rate; other
        rates differ within the resampler's filter length next to the gap; with deblocking on, the chunk
        before a gap has no seam to smooth, so its last `ramp_frames` frames differ from the undamaged decode).

        `deblock` overrides the model's deblocking strength (0 = off), `noise_scale` its starting noise scale
        (1 = the paper's)."""
        sample_rate = sample_rate or self.sample_rate
        channels, total = latents.shape[:2]
        if num_samples is None:
            num_samples = (total * spectral.CHUNK_SAMPLES - spectral.PAD_LEFT) * sample_rate // self.sample_rate
        sigma_cond = self.sigma_cond if sigma_cond is None else sigma_cond
        deblock_cfg = DeblockConfig(strength=self.deblock if deblock is None else deblock)
        noise_scale = self.noise_scale if noise_scale is None else noise_scale
        if not noise_scale >= 0:
            raise ValueError(f"noise_scale must be >= 0, not {noise_scale}")
        out_first = min(int(round(start * sample_rate)), num_samples)
        out_last = num_samples if duration is None else min(num_samples, out_first + int(round(duration * sample_rate)))
        if not lost:
            yield from self._decode_span(latents, num_samples, sample_rate, seed, sigma_cond, out_first, out_last,
                                         block_chunks, deblock_cfg, noise_scale)
            return
        for piece in salvage_plan(lost, total, num_samples, sample_rate):
            lo, hi = max(piece.first_sample, out_first), min(piece.stop_sample, out_last)
            if hi <= lo:
                continue
            if piece.lost:
                for at in range(lo, hi, spectral.CHUNK_SAMPLES):  # silence in bounded blocks
                    yield np.zeros((channels, min(spectral.CHUNK_SAMPLES, hi - at)), np.float32)
            else:
                yield from self._decode_span(latents, num_samples, sample_rate, seed, sigma_cond, lo, hi,
                                             block_chunks, deblock_cfg, noise_scale, floor_chunk=piece.start_chunk,
                                             stop_chunk=piece.stop_chunk)

    def _decode_span(self, latents, num_samples: int, sample_rate: int, seed: int, sigma_cond: float,
                     out_first: int, out_last: int, block_chunks: int, deblock: DeblockConfig, noise_scale: float,
                     floor_chunk: int = 0, stop_chunk: int | None = None) -> Iterator[np.ndarray]:
        """Output samples [out_first, out_last) at `sample_rate`, using only chunks [floor_chunk,
        stop_chunk): the warm-up chunk is the one before out_first's chunk but never before floor_chunk
        (decoded alone from noise), and no sample at or after stop_chunk's time is fed to the resampler.
        With a floor, out_first must not precede `restart_sample(floor_chunk)`."""
        channels, total = latents.shape[:2]
        stop_chunk = total if stop_chunk is None else stop_chunk
        n_model = model_length(num_samples, sample_rate)
        # output range at the model rate with a resampler margin
        ranged = out_first > 0 or out_last < num_samples
        margin = 2048 if ranged and sample_rate != self.sample_rate else 0
        m_first = max(0, math.floor(out_first * self.sample_rate / sample_rate) - margin)
        # start where both sample grids meet, so the resampled range lies on the full decode's output grid
        m_first -= m_first % (self.sample_rate // math.gcd(self.sample_rate, sample_rate))
        if floor_chunk > 0:  # nothing before the first sample the floor chunk alone covers fully
            m_first = max(m_first, restart_sample(floor_chunk, sample_rate)[0])
        m_last = min(n_model, math.ceil(out_last * self.sample_rate / sample_rate) + margin)
        if stop_chunk < total:  # the samples after this overlap the next (lost) chunk
            m_last = min(m_last, stop_chunk * spectral.CHUNK_SAMPLES - spectral.PAD_LEFT)
        first_chunk = (m_first + spectral.PAD_LEFT) // spectral.CHUNK_SAMPLES
        begin_chunk = max(first_chunk - 1, floor_chunk)  # warm-up chunk: its overlap tail and context
        istft = spectral.StreamingISTFT(channels, self.device)
        deblocker = StreamingDeblocker(deblock)
        resampler = StreamResampler(self.sample_rate, sample_rate, channels)
        # model-rate samples [m_first, m_last) are padded-stream samples offset by PAD_LEFT
        pos = begin_chunk * spectral.CHUNK_SAMPLES - spectral.PAD_LEFT  # model-rate sample index of next block
        produced = 0
        skip_out = 0
        if ranged:  # samples of the resampled block that lie before out_first
            skip_out = out_first - int(round(m_first * sample_rate / self.sample_rate))
        wanted = out_last - out_first
        pending: list[np.ndarray] = []

        def emit(block: np.ndarray, last: bool) -> Iterator[np.ndarray]:
            nonlocal produced, skip_out
            y = resampler.process(block, last=last)
            if skip_out:
                cut = min(skip_out, y.shape[1])
                y, skip_out = y[:, cut:], skip_out - cut
            y = y[:, : wanted - produced]
            produced += y.shape[1]
            if y.shape[1]:
                yield y

        for t, spec, next_spec in self._chunk_steps(latents, seed, sigma_cond, begin_chunk, noise_scale):
            spec = deblocker.push(spec, next_spec if t + 1 < stop_chunk else None)  # no seam before a lost chunk
            wave = istft.push(spec).cpu().numpy()
            lo, hi = max(m_first - pos, 0), min(m_last - pos, wave.shape[1])
            pos += wave.shape[1]
            if hi > lo:
                pending.append(wave[:, lo:hi])
            if sum(p.shape[1] for p in pending) >= block_chunks * spectral.CHUNK_SAMPLES:
                yield from emit(np.concatenate(pending, axis=1), last=False)
                pending = []
            if pos >= m_last:
                break
        if pos < m_last:  # the final partial window tail (only reached when the stream ran out)
            wave = istft.flush().cpu().numpy()
            pending.append(wave[:, : max(0, m_last - pos)])
        block = np.concatenate(pending, axis=1) if pending else np.zeros((channels, 0), np.float32)
        yield from emit(block, last=True)
        if produced < wanted:  # resampler rounding: pad the last sample(s) with silence
            yield np.zeros((channels, wanted - produced), np.float32)

    def decode(self, latents: np.ndarray, num_samples: int | None = None, sample_rate: int | None = None,
               seed: int = 0, sigma_cond: float | None = None, **kwargs) -> np.ndarray:
        """Latents (C, T, K, D) -> audio (C, num_samples) float32 (whole file in memory)."""
        return np.concatenate(list(self.decode_stream(latents, num_samples, sample_rate, seed, sigma_cond, **kwargs)),
                              axis=1)

    # -- bytes and files ---------------------------------------------------------------------
    def make_header(self, latents: np.ndarray, num_samples: int, sample_rate: int, quant: str, seed: int,
                    sigma_cond: float | None) -> Header:
        channels, chunks, k, d = latents.shape
        return Header(sample_rate=int(sample_rate), model_sample_rate=self.sample_rate, channels=channels,
                      num_samples=int(num_samples), num_chunks=chunks, num_latents=k, latent_dim=d,
                      samples_per_chunk=spectral.CHUNK_SAMPLES, frame_chunks=DEFAULT_FRAME_CHUNKS, quant=quant,
                      quant_params=default_quant_params(quant), model_name=self.info.name,
                      model_hash=self.info.hash,
                      sigma_cond=float(self.sigma_cond if sigma_cond is None else sigma_cond),
                      seed=int(seed), encoder=f"m2lcodec {__version__}")

    def check_header(self, header: Header) -> None:
        if header.model_hash != self.info.hash:
            raise ModelMismatchError(
                f"this file was made with model '{header.model_name}' ({header.model_hash}) but the loaded model "
                f"is '{self.info.name}' ({self.info.hash}); pass --model with the matching weights")

    def compress(self, audio: np.ndarray, sample_rate: int, quant: str = "int8", seed: int = 0,
                 sigma_cond: float | None = None) -> bytes:
        audio = np.asarray(audio, dtype=np.float32)
        audio = audio[None] if audio.ndim == 1 else audio
        latents = self.encode(audio, sample_rate)
        return pack(self.make_header(latents, audio.shape[1], sample_rate, quant, seed, sigma_cond), latents)

    def decompress(self, data: bytes, seed: int | None = None, sigma_cond: float | None = None,
                   deblock: float | None = None, noise_scale: float | None = None) -> tuple[np.ndarray, int]:
        with Reader.from_bytes(data) as reader:
            header = reader.header
            self.check_header(header)
            latents = reader.read_all()
        audio = self.decode(latents, header.num_samples, header.sample_rate,
                            header.seed if seed is None else seed,
                            header.sigma_cond if sigma_cond is None else sigma_cond, deblock=deblock,
                            noise_scale=noise_scale)
        return audio, header.sample_rate

    def compress_file(self, src: str | Path | BinaryIO, dst: str | Path | BinaryIO, quant: str = "int8",
                      seed: int = 0, sigma_cond: float | None = None, force: bool = False) -> CodecStats:
        """Audio file (or a binary stream such as stdin: WAV, AIFF, FLAC) -> .m2l file (or a binary stream
        such as stdout). Reads block by block: memory holds the latents, never the whole audio."""
        t0 = time.perf_counter()
        with AudioReader(src) as reader:
            latents, num_samples = self.encode_blocks(reader.blocks(), reader.sample_rate)
        header = self.make_header(latents, num_samples, reader.sample_rate, quant, seed, sigma_cond)
        if isinstance(dst, (str, Path)):
            write_file(dst, header, latents, force=force, protect=Path(src) if isinstance(src, (str, Path)) else None)
            written = Path(dst).stat().st_size
        else:
            data = pack(header, latents)
            dst.write(data)
            dst.flush()
            written = len(data)
        return CodecStats(duration=num_samples / reader.sample_rate, sample_rate=reader.sample_rate,
                          channels=reader.channels, input_bytes=reader.bytes_read, output_bytes=written,
                          pcm16_bytes=num_samples * reader.channels * 2, seconds=time.perf_counter() - t0)

    def decompress_file(self, src: str | Path | BinaryIO, dst: str | Path | BinaryIO, force: bool = False,
                        seed: int | None = None, sigma_cond: float | None = None, start: float = 0.0,
                        duration: float | None = None, subtype: str = "PCM_16",
                        progress: Callable[[float], None] | None = None, salvage: bool = False,
                        deblock: float | None = None, noise_scale: float | None = None) -> CodecStats:
        """Streams: reads the latents frame by frame as needed and writes audio block by block, to a
        .wav/.flac file or, as WAV, to a binary stream such as stdout (its header carries the length, known
        from the .m2l header, so nothing waits for the end). A stream source (stdin) is read whole: it is
        the small .m2l, not audio. `progress(fraction)` is called after every written block.

        `salvage` decodes a damaged file instead of refusing it: lost frames become silence (the output
        keeps the original length) and the returned stats list them (`damaged`, `notes`)."""
        t0 = time.perf_counter()
        from_stream = not isinstance(src, (str, Path))
        with (Reader.from_bytes(src.read(), "standard input", salvage=salvage) if from_stream
              else Reader.open(src, salvage=salvage)) as reader:
            header = reader.header
            self.check_header(header)
            if start < 0 or (start > 0 and start >= header.duration):
                raise ValueError(f"--start {start:g} s is outside the file ({header.duration:.2f} s)")
            latents = LazyLatents(reader)
            lost = reader.lost_chunks
            damaged = [
                DamagedRange(piece.first_sample, piece.stop_sample, header.sample_rate, d.frames_label, d.reason)
                for piece, d in zip((p for p in salvage_plan(lost, header.num_chunks, header.num_samples,
                                                             header.sample_rate) if p.lost), reader.damage)
            ]
            first = min(int(round(start * header.sample_rate)), header.num_samples)
            last = header.num_samples if duration is None else \
                min(header.num_samples, first + int(round(duration * header.sample_rate)))
            expected = last - first
            blocks = self.decode_stream(latents, header.num_samples, header.sample_rate,
                                        header.seed if seed is None else seed,
                                        header.sigma_cond if sigma_cond is None else sigma_cond,
                                        start=start, duration=duration, lost=lost, deblock=deblock,
                                        noise_scale=noise_scale)
            if isinstance(dst, (str, Path)):
                writer_cm = AudioWriter(dst, header.sample_rate, header.channels, subtype=subtype, force=force,
                                        protect=None if from_stream else Path(src))
            else:
                writer_cm = contextlib.nullcontext(
                    WavStreamWriter(dst, header.sample_rate, header.channels, expected, subtype))
            with writer_cm as writer:
                for block in blocks:
                    writer.write(block)
                    if progress is not None:
                        progress(writer.frames_written / max(expected, 1))
            written = writer.frames_written
            input_bytes = reader.source_bytes
        output_bytes = Path(dst).stat().st_size if isinstance(dst, (str, Path)) else writer.bytes_written
        return CodecStats(duration=written / header.sample_rate, sample_rate=header.sample_rate,
                          channels=header.channels, input_bytes=input_bytes, output_bytes=output_bytes,
                          pcm16_bytes=written * header.channels * 2, seconds=time.perf_counter() - t0,
                          damaged=damaged, notes=list(reader.notes))


class LazyLatents:
    """Array-like view of a container's latents that reads frames only when sliced (bounded memory)."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        h = reader.header
        self.shape = (h.channels, h.num_chunks, h.num_latents, h.latent_dim)

    def __getitem__(self, index: tuple[slice, slice]) -> np.ndarray:
        chunks = index[1]
        start, stop, _ = chunks.indices(self.shape[1])
        return self.reader.read_chunks(start, stop)


def load_codec(model: str | Path | None = None, device: str = "auto", **kwargs) -> Codec:
    """The codec with the bundled default model, or with the weights file `model`."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    net, info = load_model(model, device)
    return Codec(net, info, device, **kwargs)
