"""Audio file input/output and resampling.

All audio inside the codec is float32 shaped (channels, samples). Reading goes
through libsndfile (via soundfile: WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, ...),
resampling through soxr at its best quality, and writing is atomic (see
`m2lcodec.atomic`) so a failed or interrupted write never leaves a partial file.
"""

from __future__ import annotations

import contextlib
import io
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import numpy as np
import soundfile as sf
import soxr

from m2lcodec.atomic import atomic_output

__all__ = [
    "AudioError",
    "AudioReader",
    "AudioWriter",
    "PipeReader",
    "WavStreamWriter",
    "wav_header",
    "StreamResampler",
    "audio_info",
    "output_format",
    "read_audio",
    "resample",
    "write_audio",
]

SOXR_QUALITY = "VHQ"

# Output container chosen from the file suffix.
_OUTPUT_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
# Subtypes accepted for output; FLAC cannot store floats, so FLOAT is written as PCM_24 there.
_OUTPUT_SUBTYPES = {
    "WAV": {"PCM_16", "PCM_24", "PCM_32", "FLOAT"},
    "FLAC": {"PCM_16", "PCM_24"},
}


class AudioError(ValueError):
    """An audio file cannot be used; the message is one line and names the file."""


def _one_line(text: object) -> str:
    """Collapse a (library) message to a single line."""
    return " ".join(str(text).split())


def _check_input_path(path: Path) -> None:
    """Raise AudioError for a missing path or a directory, before libsndfile sees it."""
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")


def _libsndfile_reason(path: Path, exc: Exception) -> str:
    """Turn a soundfile exception into a short reason without repeating the path."""
    msg = _one_line(exc)
    prefix = f"Error opening {str(path)!r}: "
    if msg.startswith(prefix):
        msg = msg[len(prefix):]
    return msg.rstrip(".") or type(exc).__name__


def read_audio(path: Path | str) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 (channels, samples) plus its sample rate.

    Raises AudioError for a missing file, a directory, anything libsndfile
    cannot decode, an empty file and NaN/inf samples (float WAVs can hold them).
    """
    path = Path(path)
    _check_input_path(path)
    try:
        data, sample_rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError, EOFError) as exc:
        raise AudioError(
            f"{path}: not a readable audio file ({_libsndfile_reason(path, exc)})"
        ) from exc
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(f"{path}: contains no audio samples")
    if sample_rate <= 0:
        raise AudioError(f"{path}: invalid sample rate {sample_rate}")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    return np.ascontiguousarray(data.T), int(sample_rate)


def audio_info(path: Path | str) -> tuple[int, int, int]:
    """Return (sample_rate, channels, frames) from the file header without decoding it."""
    path = Path(path)
    _check_input_path(path)
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError, EOFError) as exc:
        raise AudioError(
            f"{path}: not a readable audio file ({_libsndfile_reason(path, exc)})"
        ) from exc
    return int(info.samplerate), int(info.channels), int(info.frames)


def _as_2d(audio: np.ndarray) -> np.ndarray:
    """View 1-D audio as one channel; reject other ranks."""
    audio = np.asarray(audio)
    if audio.ndim == 1:
        return audio[None, :]
    if audio.ndim != 2:
        raise ValueError(f"audio must be shaped (channels, samples), got shape {audio.shape}")
    return audio


def _check_rate(name: str, rate: int) -> int:
    """Validate a sample rate argument."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"{name} must be a positive integer, got {rate!r}")
    return int(rate)


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample (channels, samples) audio with soxr VHQ; float32 out, identity if rates match.

    The output has round(samples * sr_out / sr_in) samples. 1-D input gives 1-D output.
    """
    sr_in = _check_rate("sr_in", sr_in)
    sr_out = _check_rate("sr_out", sr_out)
    one_d = np.ndim(audio) == 1
    x = _as_2d(audio).astype(np.float32, copy=False)
    if sr_in != sr_out:
        y = soxr.resample(np.ascontiguousarray(x.T), sr_in, sr_out, quality=SOXR_QUALITY)
        x = np.ascontiguousarray(y.T, dtype=np.float32)
    return x[0] if one_d else x


class StreamResampler:
    """Block-by-block soxr resampler whose concatenated output equals `resample` of the whole.

    Use it with AudioWriter to resample a streaming decode without holding the
    whole signal. Call `process(block)` per block and `process(empty, last=True)`
    (or pass the final block with last=True) exactly once at the end.
    """

    def __init__(self, sr_in: int, sr_out: int, channels: int) -> None:
        self.sr_in = _check_rate("sr_in", sr_in)
        self.sr_out = _check_rate("sr_out", sr_out)
        self.channels = int(channels)
        self._stream = (
            None
            if self.sr_in == self.sr_out
            else soxr.ResampleStream(
                self.sr_in, self.sr_out, self.channels, dtype="float32", quality=SOXR_QUALITY
            )
        )

    def process(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """Resample one (channels, n) block; returns (channels, m) float32 (m may be 0)."""
        x = _as_2d(block).astype(np.float32, copy=False)
        if x.shape[0] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got block shape {x.shape}")
        if self._stream is None:
            return x
        y = self._stream.resample_chunk(np.ascontiguousarray(x.T), last=last)
        return np.ascontiguousarray(np.asarray(y, dtype=np.float32).reshape(-1, self.channels).T)


def output_format(path: Path | str, subtype: str) -> tuple[str, str]:
    """Map an output suffix and requested subtype to a (format, subtype) libsndfile accepts.

    .wav -> WAV with PCM_16/PCM_24/PCM_32/FLOAT; .flac -> FLAC with PCM_16/PCM_24,
    where FLOAT is silently mapped to PCM_24 (FLAC is an integer-only format).
    """
    path = Path(path)
    fmt = _OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(
            f"{path}: unsupported output format {path.suffix or '(no suffix)'!r} (use .wav or .flac)"
        )
    subtype = subtype.upper()
    if fmt == "FLAC" and subtype == "FLOAT":
        subtype = "PCM_24"
    if subtype not in _OUTPUT_SUBTYPES[fmt]:
        allowed = ", ".join(sorted(_OUTPUT_SUBTYPES[fmt]))
        raise AudioError(f"{path}: subtype {subtype!r} not supported for {fmt} (use one of {allowed})")
    return fmt, subtype


def _prepare_block(path: Path, block: np.ndarray, channels: int, subtype: str) -> np.ndarray:
    """Validate a (channels, n) block and return it as contiguous float32 (n, channels) for libsndfile."""
    x = _as_2d(block)
    if x.shape[0] != channels:
        raise ValueError(f"{path}: expected {channels} channels, got block shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise AudioError(f"{path}: refusing to write NaN or infinite samples")
    if subtype.startswith("PCM"):
        # libsndfile wraps around instead of saturating for out-of-range floats.
        x = np.clip(x, -1.0, 1.0)
    return np.ascontiguousarray(x.T)


def write_audio(
    path: Path | str,
    audio: np.ndarray,
    sample_rate: int,
    subtype: str = "PCM_16",
    force: bool = False,
    protect: Path | str | None = None,
) -> None:
    """Atomically write (channels, samples) audio to a .wav or .flac file.

    Integer subtypes are clipped to [-1, 1]. Refuses to overwrite an existing
    file unless `force`, and never overwrites `protect` (the input file).
    """
    path = Path(path)
    sample_rate = _check_rate("sample_rate", sample_rate)
    fmt, subtype = output_format(path, subtype)
    x = _as_2d(audio)
    frames = _prepare_block(path, x, x.shape[0], subtype)
    with atomic_output(path, force=force, protect=protect) as tmp:
        sf.write(tmp, frames, sample_rate, subtype=subtype, format=fmt)


class AudioWriter:
    """Progressive, atomic audio writer: memory stays constant however long the output.

    with AudioWriter("out.wav", 44100, 2) as w:
        for block in blocks:          # each (channels, n)
            w.write(block)

    The file appears under its final name only when the block exits normally;
    on an exception nothing is left behind (an existing file stays untouched).
    """

    def __init__(
        self,
        path: Path | str,
        sample_rate: int,
        channels: int,
        subtype: str = "PCM_16",
        force: bool = False,
        protect: Path | str | None = None,
    ) -> None:
        self.path = Path(path)
        self.sample_rate = _check_rate("sample_rate", sample_rate)
        if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels <= 0:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        self.channels = int(channels)
        self.format, self.subtype = output_format(self.path, subtype)
        self.force = force
        self.protect = protect
        self.frames_written = 0
        self._stack: contextlib.ExitStack | None = None
        self._file: sf.SoundFile | None = None

    def __enter__(self) -> AudioWriter:
        stack = contextlib.ExitStack()
        try:
            tmp = stack.enter_context(atomic_output(self.path, force=self.force, protect=self.protect))
            self._file = sf.SoundFile(
                tmp,
                mode="w",
                samplerate=self.sample_rate,
                channels=self.channels,
                subtype=self.subtype,
                format=self.format,
            )
        except BaseException:
            stack.__exit__(*sys.exc_info())
            raise
        self._stack = stack
        return self

    def write(self, block: np.ndarray) -> None:
        """Append a (channels, n) block (1-D allowed for mono)."""
        if self._file is None:
            raise RuntimeError("AudioWriter.write called outside its `with` block")
        frames = _prepare_block(self.path, block, self.channels, self.subtype)
        self._file.write(frames)
        self.frames_written += frames.shape[0]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        stack, self._stack = self._stack, None
        file, self._file = self._file, None
        assert stack is not None
        try:
            if file is not None:
                file.close()
        except BaseException:
            if not stack.__exit__(*sys.exc_info()):
                raise
            return False
        return bool(stack.__exit__(exc_type, exc, tb))


# -- streams: reading from a pipe, writing WAV to a pipe ---------------------------------------------------
class PipeReader:
    """A forward-only byte stream (stdin, a pipe) as the seekable file libsndfile's virtual I/O wants.

    Keeps the first `keep` bytes (header probes seek back to the start) and the last 1-2 x `keep` bytes
    read (short look-backs); memory stays at most 3 x `keep` however long the stream. A read far ahead of
    what arrived (libsndfile skipping a chunk of unknown size, as in WAVs that ffmpeg streams) answers end
    of stream without consuming anything. Works for WAV (incl. WAVE_FORMAT_EXTENSIBLE, streamed with
    unknown size), AIFF and FLAC; Ogg and MP3 seek in ways a pipe cannot serve.
    """

    END = 1 << 62  # where seek(0, SEEK_END) lands: libsndfile asks for the length of the "file"

    def __init__(self, raw, keep: int = 1 << 20) -> None:
        self.raw = raw
        self.keep = keep
        self.head = bytearray()
        self.tail = bytearray()
        self.tail_start = 0
        self.pos = 0
        self.total = 0  # bytes taken from the stream so far

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset + (self.pos if whence == 1 else self.END if whence == 2 else 0)
        return self.pos

    def _pull(self, n: int) -> int:
        b = self.raw.read(n)
        if len(self.head) < self.keep:
            self.head += b[: self.keep - len(self.head)]
        self.tail += b
        if len(self.tail) > 2 * self.keep:
            cut = len(self.tail) - self.keep
            del self.tail[:cut]
            self.tail_start += cut
        self.total += len(b)
        return len(b)

    def read(self, n: int = -1) -> bytes:
        if self.pos >= self.END or self.pos > self.total + self.keep:
            return b""
        n = n if n >= 0 else 1 << 40
        while self.pos > self.total:  # a short forward seek: skip the bytes between
            if not self._pull(min(self.pos - self.total, 1 << 16)):
                return b""
        out = bytearray()
        while n > 0:
            if self.pos == self.total:
                if not self._pull(max(n, 1 << 16)):
                    break
                continue
            if self.pos >= self.tail_start:
                src, base = self.tail, self.tail_start
            elif self.pos < len(self.head):
                src, base = self.head, 0
            else:
                raise OSError(f"cannot seek back to byte {self.pos} of a pipe")
            piece = src[self.pos - base : self.pos - base + n]
            out += piece
            self.pos += len(piece)
            n -= len(piece)
        return bytes(out)

    def readinto(self, buf) -> int:
        b = self.read(len(buf))
        buf[: len(b)] = b
        return len(b)


class AudioReader:
    """Audio read block by block from a file or a pipe, so memory stays bounded for any length.

    with AudioReader(path_or_binary_stream) as r:
        for block in r.blocks():      # each (channels, n) float32
            ...

    A binary stream (sys.stdin.buffer) is read through `PipeReader`: WAV, AIFF and FLAC. `bytes_read`
    counts the input bytes (the file size for a path). Raises AudioError for undecodable input, NaN or
    inf samples, and an input with no samples (after the last block).
    """

    def __init__(self, src: Path | str | object, block_frames: int = 1 << 16) -> None:
        self.name = str(src) if isinstance(src, (str, Path)) else "standard input"
        self.block_frames = block_frames
        self._pipe: PipeReader | None = None
        if isinstance(src, (str, Path)):
            _check_input_path(Path(src))
            target: object = str(src)
        else:
            target = self._pipe = PipeReader(src)
        try:
            self._file = sf.SoundFile(target)
        except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError, EOFError) as exc:
            if self._pipe is None:
                raise AudioError(f"{self.name}: not a readable audio file "
                                 f"({_libsndfile_reason(Path(self.name), exc)})") from exc
            raise AudioError(f"{self.name}: not a readable audio stream ({_one_line(exc).split(': ', 1)[-1].rstrip('.')}"
                             "; a pipe carries WAV, AIFF or FLAC)") from exc
        self.sample_rate = int(self._file.samplerate)
        self.channels = int(self._file.channels)
        self.frames_read = 0
        if self.sample_rate <= 0:
            raise AudioError(f"{self.name}: invalid sample rate {self.sample_rate}")

    @property
    def bytes_read(self) -> int:
        return self._pipe.total if self._pipe is not None else Path(self.name).stat().st_size

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def _read(self, buf: np.ndarray) -> int:
        if self._pipe is None:
            return len(self._file.read(out=buf))  # a view of buf: short at the end
        # soundfile's own read seeks after every block (to update its position), which a pipe with an
        # unknown length (streamed FLAC) cannot serve; libsndfile's plain sequential read can.
        got = sf._snd.sf_readf_float(self._file._file, sf._ffi.cast("float *", buf.ctypes.data), len(buf))
        if got < 0:
            raise AudioError(f"{self.name}: read error")
        return int(got)

    def blocks(self) -> Iterator[np.ndarray]:
        buf = np.empty((self.block_frames, self.channels), np.float32)
        while True:
            try:
                got = self._read(buf)
            except (sf.SoundFileError, RuntimeError) as exc:
                raise AudioError(f"{self.name}: {_one_line(exc)}") from exc
            if got <= 0:
                break
            block = np.ascontiguousarray(buf[:got].T)
            if not np.isfinite(block).all():
                raise AudioError(f"{self.name}: contains NaN or infinite samples")
            self.frames_read += got
            yield block
        if self.frames_read == 0:
            raise AudioError(f"{self.name}: contains no audio samples")


_WAV_FORMATS = {"PCM_16": (1, 16), "PCM_24": (1, 24), "PCM_32": (1, 32), "FLOAT": (3, 32)}


def wav_header(sample_rate: int, channels: int, frames: int, subtype: str) -> bytes:
    """A 44-byte RIFF/WAVE header for `frames` frames (sizes saturate at 4 GiB, as streaming writers do)."""
    tag, bits = _WAV_FORMATS[subtype]
    align = channels * bits // 8
    data = min(frames * align, 0xFFFFFFFF - 36)
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, tag, channels, sample_rate, sample_rate * align, align, bits) +
            b"data" + struct.pack("<I", data))


class WavStreamWriter:
    """WAV to a byte stream that cannot seek (stdout): the header, with the length known up front, then
    the samples block by block, converted by libsndfile exactly as AudioWriter's files are."""

    def __init__(self, stream, sample_rate: int, channels: int, frames: int, subtype: str = "PCM_16") -> None:
        if subtype not in _WAV_FORMATS:
            raise AudioError(f"standard output: WAV subtype {subtype!r} not supported "
                             f"(use one of {', '.join(_WAV_FORMATS)})")
        self.stream = stream
        self.channels = int(channels)
        self.subtype = subtype
        self.frames_written = 0
        self.bytes_written = 0
        self._buf = io.BytesIO()
        self._raw = sf.SoundFile(self._buf, "w", samplerate=sample_rate, channels=channels, subtype=subtype,
                                 format="RAW")
        self._emit(wav_header(sample_rate, channels, frames, subtype))

    def _emit(self, data: bytes) -> None:
        self.stream.write(data)
        self.stream.flush()  # a player downstream starts on the first block
        self.bytes_written += len(data)

    def write(self, block: np.ndarray) -> None:
        frames = _prepare_block(Path("standard output"), block, self.channels, self.subtype)
        self._raw.write(frames)
        data = self._buf.getvalue()
        self._buf.seek(0)
        self._buf.truncate()
        self._emit(data)
        self.frames_written += frames.shape[0]
