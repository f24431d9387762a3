"""Classic low-bitrate codecs (Opus, MP3) run through ffmpeg, for the benchmark.

Each :class:`Baseline` encodes a clip to a real file with the ``ffmpeg``
binary, decodes it back and returns the decoded audio aligned to, and exactly
as long as, the input, with the bitrate measured from the encoded file's size
(container included: that is what a user would store).

Resampling is done here with soxr (VHQ, linear phase, delay-compensated), not
by ffmpeg, so the only delay left is the codec's own. ffmpeg already removes
Opus pre-skip (from the Ogg ``OpusHead``) and the LAME encoder delay/padding
(from the LAME/Xing header it writes), so the residual delay is 0 in most
cases, but Opus's SILK/hybrid modes leave a few samples that depend on the
mode the encoder picks (measured +6 samples at 48 kHz for opus-6k, -3 to 0
for opus-24k depending on content). SI-SDR collapses under such shifts, so
the decoded audio is re-aligned per clip by the cross-correlation peak within
+-``align_max_ms`` (1 ms) -- see ``docs/bench.md``.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from m2lcodec.metrics import estimate_lag

__all__ = [
    "Baseline",
    "BaselineError",
    "BaselineResult",
    "DEFAULT_BASELINES",
    "available_encoders",
    "ffmpeg_available",
    "get_baseline",
    "run_baseline",
]

FFMPEG = "ffmpeg"
DEFAULT_TIMEOUT_S = 120.0


class BaselineError(RuntimeError):
    """ffmpeg is missing, failed, timed out, or lacks the needed encoder."""


@dataclass(frozen=True)
class Baseline:
    """One ffmpeg codec configuration.

    ``codec_sample_rate`` is the rate the audio is resampled to (with soxr)
    before encoding and at which it is decoded. ``align_max_ms`` bounds the
    per-clip delay search that re-aligns the decoded audio (0 disables it).
    """

    name: str
    codec: str  # ffmpeg encoder name, e.g. "libopus"
    kbps: float  # nominal bitrate
    codec_sample_rate: int
    extension: str  # output file extension, selects the container
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    align_max_ms: float = 1.0

    def encode_args(self) -> list[str]:
        """ffmpeg output options for encoding."""
        kbps = f"{self.kbps:g}k"
        return ["-c:a", self.codec, "-b:a", kbps, *self.extra_args]


@dataclass
class BaselineResult:
    """Decoded audio ``(channels, samples)`` float32 plus size and timing."""

    audio: np.ndarray
    encoded_bytes: int
    kbps: float  # from encoded_bytes and the clip duration
    encode_seconds: float
    decode_seconds: float
    lag_samples: int = 0  # delay removed by re-alignment, at the clip's rate


# Opus: constrained VBR, "audio" application (music tuning rather than VoIP).
# Unconstrained VBR (the libopus default) overshoots 24 kbps by up to ~30 % on
# music, which would make the "X kbps" label dishonest. Opus always runs at
# 48 kHz internally. Ogg container, metadata stripped and bitexact flags so the
# files carry no encoder-version tags.
_OPUS_ARGS = (
    "-application", "audio", "-vbr", "constrained", "-map_metadata", "-1", "-fflags", "+bitexact",
)
# MP3: 32 kbps CBR at 22.05 kHz (MPEG-2 Layer III, joint stereo) is LAME's
# lowest useful setting for stereo music: measured audio band ~5.5 kHz. Lower
# rates need 16 kHz (24 kbps: ~4 kHz band) or 8 kHz (8 kbps: ~2 kHz band)
# sampling and sound like a telephone.
_MP3_ARGS = ("-map_metadata", "-1", "-fflags", "+bitexact", "-write_id3v2", "0")

DEFAULT_BASELINES: tuple[Baseline, ...] = (
    Baseline("opus-6k", "libopus", 6.0, 48_000, "opus", _OPUS_ARGS),
    Baseline("opus-12k", "libopus", 12.0, 48_000, "opus", _OPUS_ARGS),
    Baseline("opus-24k", "libopus", 24.0, 48_000, "opus", _OPUS_ARGS),
    Baseline("mp3-32k", "libmp3lame", 32.0, 22_050, "mp3", _MP3_ARGS),
)


def get_baseline(name: str) -> Baseline:
    """Look up a default baseline by name (e.g. ``"opus-12k"``)."""
    for baseline in DEFAULT_BASELINES:
        if baseline.name == name:
            return baseline
    raise KeyError(f"unknown baseline {name!r}; known: {[b.name for b in DEFAULT_BASELINES]}")


def ffmpeg_available() -> bool:
    """True if an ``ffmpeg`` binary is on PATH."""
    return shutil.which(FFMPEG) is not None


@functools.lru_cache(maxsize=1)
def available_encoders() -> frozenset[str]:
    """Names of the audio encoders this ffmpeg was built with (``ffmpeg -encoders``)."""
    out = _run([FFMPEG, "-hide_banner", "-encoders"], timeout=30.0).stdout.decode(errors="replace")
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0].startswith("A"):
            names.add(parts[1])
    return frozenset(names)


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    """Run a command, turning every failure into a :class:`BaselineError`."""
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise BaselineError(f"{cmd[0]} not found on PATH; install ffmpeg") from exc
    except subprocess.TimeoutExpired as exc:
        raise BaselineError(f"{cmd[0]} timed out after {timeout:.0f} s: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-2000:]
        raise BaselineError(f"{cmd[0]} failed (exit {proc.returncode}): {' '.join(cmd)}\n{err}")
    return proc


def _fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad ``(channels, samples)`` to exactly ``length`` samples."""
    if audio.shape[1] >= length:
        return audio[:, :length]
    return np.pad(audio, ((0, 0), (0, length - audio.shape[1])))


def run_baseline(
    baseline: Baseline,
    audio: np.ndarray,
    sample_rate: int,
    workdir: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> BaselineResult:
    """Encode and decode ``audio`` (``(channels, samples)`` float) with ffmpeg.

    The input is resampled to the codec rate with soxr, written as float WAV,
    encoded to ``<workdir>/<name>.<ext>`` (a temporary directory if ``workdir``
    is None), decoded to float PCM at the codec rate, resampled back to
    ``sample_rate``, re-aligned (integer lag within +-``align_max_ms``, see
    :func:`m2lcodec.metrics.estimate_lag`) and trimmed/padded to the input
    length. Encode/decode times are the wall time of the ffmpeg processes
    (process start included).
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    channels, length = audio.shape
    if channels not in (1, 2):
        raise BaselineError(f"baselines support mono or stereo, got {channels} channels")
    if length == 0:
        raise BaselineError("empty audio")
    if not ffmpeg_available():
        raise BaselineError("ffmpeg not found on PATH; install ffmpeg")
    if baseline.codec not in available_encoders():
        raise BaselineError(f"this ffmpeg has no {baseline.codec!r} encoder")

    with tempfile.TemporaryDirectory(prefix="m2l-baseline-") as tmp:
        out_dir = Path(workdir) if workdir is not None else Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        wav_path = Path(tmp) / "input.wav"
        enc_path = out_dir / f"{baseline.name}.{baseline.extension}"

        rate = baseline.codec_sample_rate
        pcm = audio.T  # (samples, channels)
        if sample_rate != rate:
            pcm = soxr.resample(pcm, sample_rate, rate, quality="VHQ")
        sf.write(wav_path, np.ascontiguousarray(pcm, dtype=np.float32), rate, subtype="FLOAT")

        start = time.perf_counter()
        _run(
            [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(wav_path),
             *baseline.encode_args(), str(enc_path)],
            timeout,
        )
        encode_seconds = time.perf_counter() - start

        start = time.perf_counter()
        proc = _run(
            [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(enc_path),
             "-ac", str(channels), "-ar", str(rate), "-f", "f32le", "-c:a", "pcm_f32le", "-"],
            timeout,
        )
        decode_seconds = time.perf_counter() - start
        encoded_bytes = enc_path.stat().st_size

    decoded = np.frombuffer(proc.stdout, dtype="<f4").reshape(-1, channels)
    if sample_rate != rate:
        decoded = soxr.resample(decoded, rate, sample_rate, quality="VHQ")
    decoded = np.ascontiguousarray(decoded.T, dtype=np.float32)
    lag = 0
    max_lag = int(round(baseline.align_max_ms * 1e-3 * sample_rate))
    if max_lag > 0 and decoded.shape[1] > 0:
        lag = estimate_lag(audio, _fit_length(decoded, length), max_lag)
        decoded = decoded[:, lag:] if lag >= 0 else np.pad(decoded, ((0, 0), (-lag, 0)))
    decoded = _fit_length(decoded, length)
    duration = length / sample_rate
    return BaselineResult(
        audio=decoded,
        encoded_bytes=encoded_bytes,
        kbps=encoded_bytes * 8.0 / duration / 1000.0,
        encode_seconds=encode_seconds,
        decode_seconds=decode_seconds,
        lag_samples=lag,
    )
