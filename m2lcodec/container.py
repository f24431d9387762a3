"""The .m2l file format: a checksummed, seekable container for quantised latents.

Layout (all integers little-endian; the normative spec is docs/format.md):

    magic b"M2L\\x00" | u8 major | u8 minor
    u32 header length | msgpack map | u32 CRC32(msgpack bytes)
    frame*: u32 payload length | u32 CRC32(payload) | payload = zstd(quantised latents)

Frame i holds chunks [i*frame_chunks, min((i+1)*frame_chunks, num_chunks)) of all
channels as a C-ordered (channels, n, K, D) array of float16 ("fp16") or int8
("int8", q = round(x * scale), scale = 127). Readers find frames by walking the
length fields (no decompression), so seeking never decodes frames it does not need.

Every malformed input raises ContainerError with a one-line message that says
where (which part, which frame, at which byte offset). Nothing is pickled and
no declared length is trusted before it is checked against the bytes present.

A salvaging reader (`Reader.open(path, salvage=True)`, `salvage`, `salvage_file`) reads a damaged
file instead of refusing it: it keeps every frame that passes all checks, re-finds frames after a
damaged length field by scanning for the zstd magic, and reports the lost chunk ranges (`Damage`);
docs/format.md, "Salvaging a damaged file", states what it assumes.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re
import struct
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import msgpack
import numpy as np
import zstandard

from m2lcodec.atomic import atomic_output

__all__ = [
    "ContainerError",
    "DEFAULT_FRAME_CHUNKS",
    "Damage",
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "Header",
    "MAGIC",
    "Reader",
    "default_quant_params",
    "pack",
    "read_file",
    "salvage",
    "salvage_file",
    "Salvaged",
    "unpack",
    "write_file",
]

MAGIC = b"M2L\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # first 4 bytes of every zstd frame (RFC 8878), so of every payload
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
QUANTS = ("fp16", "int8")
INT8_SCALE = 127
DEFAULT_FRAME_CHUNKS = 16  # ~11.9 s of audio per frame at 44.1 kHz (18 bytes overhead each)
ZSTD_LEVEL = 9  # encoder choice only; levels 3..19 compress latents equally (bench/studies/quant_study.py)

# Sanity limits: a file declaring more than this is rejected before anything is allocated.
MAX_HEADER_BYTES = 64 * 1024
MAX_CHANNELS = 64
MAX_NUM_LATENTS = 1024
MAX_LATENT_DIM = 4096
MAX_FRAME_CHUNKS = 4096
MAX_FRAME_VALUES = 16 * 1024 * 1024  # values per frame (decoded <= 64 MiB as float32)
MAX_TOTAL_VALUES = 1 << 28  # values per file (1 GiB as float32, ~54 h of stereo)
MAX_STRING = 1024

_PREAMBLE = struct.Struct("<4sBB")
_U32 = struct.Struct("<I")
_FRAME_PREFIX = struct.Struct("<II")
_HEX = re.compile(r"[0-9a-fA-F]*")
# Strict msgpack decoding: text must be UTF-8, map keys str, no ext types, bounded sizes.
_MSGPACK_OPTIONS: dict[str, Any] = dict(
    raw=False,
    strict_map_key=True,
    use_list=True,
    max_str_len=MAX_HEADER_BYTES,
    max_bin_len=MAX_HEADER_BYTES,
    max_array_len=1024,
    max_map_len=1024,
    max_ext_len=0,
)


class ContainerError(ValueError):
    """Malformed .m2l data; the one-line message names the part and byte offset at fault."""

    def __init__(self, message: str, offset: int | None = None, frame: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset
        self.frame = frame


def default_quant_params(quant: str) -> dict[str, Any]:
    """The quant_params this encoder writes for `quant`."""
    if quant == "int8":
        return {"scale": INT8_SCALE}
    if quant == "fp16":
        return {}
    raise ValueError(f"unknown quant {quant!r} (expected one of {', '.join(QUANTS)})")


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    """Require an int (not bool) in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"header field {name!r}: expected int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"header field {name!r}: {value} outside [{lo}, {hi}]")


def _check_str(name: str, value: Any) -> None:
    """Require a str of bounded length."""
    if not isinstance(value, str):
        raise ValueError(f"header field {name!r}: expected str, got {type(value).__name__}")
    if len(value) > MAX_STRING:
        raise ValueError(f"header field {name!r}: longer than {MAX_STRING} characters")


# Field name -> key stored in the file. Short keys keep the header near 100 bytes: at ~5.5 kbit/s of
# int8 latents a 10 s file has ~300 bytes of slack under 6 kbit/s (docs/format.md, "Bitrate").
WIRE_KEYS: dict[str, str] = {
    "sample_rate": "sr", "model_sample_rate": "msr", "channels": "ch", "num_samples": "n",
    "num_chunks": "t", "num_latents": "k", "latent_dim": "d", "samples_per_chunk": "spc",
    "frame_chunks": "fc", "quant": "q", "quant_params": "qp", "model_name": "mn", "model_hash": "mh",
    "sigma_cond": "sc", "seed": "seed", "encoder": "enc",
}


@dataclasses.dataclass(frozen=True)
class Header:
    """Everything needed to decode a .m2l file except the latents themselves.

    Construction validates types, ranges and consistency (raising ValueError);
    `from_dict` turns those into ContainerError for data read from files.
    """

    sample_rate: int  # of the original input audio
    model_sample_rate: int
    channels: int
    num_samples: int  # exact original length, at sample_rate
    num_chunks: int  # T
    num_latents: int  # K summary vectors per chunk
    latent_dim: int  # D numbers per vector
    samples_per_chunk: int  # at model_sample_rate (32768)
    frame_chunks: int  # chunks per container frame
    quant: str  # "fp16" | "int8"
    quant_params: dict[str, Any]
    model_name: str
    model_hash: str  # hex digest identifying the weights
    sigma_cond: float
    seed: int
    encoder: str  # software that wrote the file, e.g. "m2lcodec 0.1.0"

    def __post_init__(self) -> None:
        _check_int("sample_rate", self.sample_rate, 1, 2**32 - 1)
        _check_int("model_sample_rate", self.model_sample_rate, 1, 2**32 - 1)
        _check_int("channels", self.channels, 1, MAX_CHANNELS)
        _check_int("num_samples", self.num_samples, 0, 2**63 - 1)
        _check_int("num_chunks", self.num_chunks, 0, MAX_TOTAL_VALUES)
        _check_int("num_latents", self.num_latents, 1, MAX_NUM_LATENTS)
        _check_int("latent_dim", self.latent_dim, 1, MAX_LATENT_DIM)
        _check_int("samples_per_chunk", self.samples_per_chunk, 1, 2**32 - 1)
        _check_int("frame_chunks", self.frame_chunks, 1, MAX_FRAME_CHUNKS)
        _check_int("seed", self.seed, -(2**63), 2**64 - 1)
        for name in ("quant", "model_name", "model_hash", "encoder"):
            _check_str(name, getattr(self, name))
        if self.quant not in QUANTS:
            raise ValueError(f"header field 'quant': {self.quant!r} is not one of {', '.join(QUANTS)}")
        if not _HEX.fullmatch(self.model_hash):
            raise ValueError("header field 'model_hash': not a hex string")
        sigma = self.sigma_cond
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
            raise ValueError(f"header field 'sigma_cond': expected float, got {type(sigma).__name__}")
        if not math.isfinite(sigma) or sigma < 0:
            raise ValueError(f"header field 'sigma_cond': {sigma} is not a finite number >= 0")
        object.__setattr__(self, "sigma_cond", float(sigma))
        if not isinstance(self.quant_params, Mapping) or not all(
            isinstance(k, str) for k in self.quant_params
        ):
            raise ValueError("header field 'quant_params': expected a map with string keys")
        object.__setattr__(self, "quant_params", dict(self.quant_params))
        if self.quant == "int8":
            _check_int("quant_params.scale", self.quant_params.get("scale"), 1, 127)
        values_per_chunk = self.channels * self.num_latents * self.latent_dim
        if values_per_chunk * self.frame_chunks > MAX_FRAME_VALUES:
            raise ValueError(
                f"frame too large: channels*frame_chunks*K*D > {MAX_FRAME_VALUES} values"
            )
        if values_per_chunk * self.num_chunks > MAX_TOTAL_VALUES:
            raise ValueError(f"too many latents: channels*num_chunks*K*D > {MAX_TOTAL_VALUES}")
        # num_samples must be covered by the chunks (one chunk of slack for rounding).
        covered = (self.num_chunks + 1) * self.samples_per_chunk * self.sample_rate
        if self.num_samples * self.model_sample_rate > covered:
            raise ValueError(
                f"header field 'num_samples': {self.num_samples} samples exceed what "
                f"{self.num_chunks} chunks of {self.samples_per_chunk} cover"
            )

    @property
    def num_frames(self) -> int:
        """Number of frames in the file: ceil(num_chunks / frame_chunks)."""
        return -(-self.num_chunks // self.frame_chunks)

    @property
    def duration(self) -> float:
        """Length of the original audio in seconds."""
        return self.num_samples / self.sample_rate

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """Shape of the full latent array: (channels, num_chunks, K, D)."""
        return (self.channels, self.num_chunks, self.num_latents, self.latent_dim)

    def frame_chunk_range(self, index: int) -> tuple[int, int]:
        """[start, stop) chunk range held by frame `index`."""
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} out of range (file has {self.num_frames} frames)")
        start = index * self.frame_chunks
        return start, min(start + self.frame_chunks, self.num_chunks)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (what is stored as the msgpack header map)."""
        d = dataclasses.asdict(self)
        d["quant_params"] = dict(self.quant_params)
        return d

    def to_wire(self) -> dict[str, Any]:
        """The map stored in the file: the fields under their short WIRE_KEYS."""
        return {WIRE_KEYS[k]: v for k, v in self.to_dict().items()}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Header:
        """Header from the stored map; unknown keys are ignored; errors are ContainerError."""
        if not isinstance(data, Mapping):
            raise ContainerError(f"invalid header: expected a map, got {type(data).__name__}")
        fields = {}
        for name, key in WIRE_KEYS.items():
            if key not in data:
                raise ContainerError(f"invalid header: missing field {name!r} (key {key!r})")
            fields[name] = data[key]
        return cls.from_dict(fields)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Header:
        """Build and validate a Header; unknown keys are ignored; errors are ContainerError."""
        if not isinstance(data, Mapping):
            raise ContainerError(f"invalid header: expected a map, got {type(data).__name__}")
        kwargs = {}
        for field in dataclasses.fields(cls):
            if field.name not in data:
                raise ContainerError(f"invalid header: missing field {field.name!r}")
            kwargs[field.name] = data[field.name]
        try:
            return cls(**kwargs)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ContainerError(f"invalid header: {exc}") from None


# ---------------------------------------------------------------------------
# Quantisation


def _frame_nbytes(header: Header, n_chunks: int) -> int:
    """Size of a decompressed frame payload holding `n_chunks` chunks."""
    itemsize = 2 if header.quant == "fp16" else 1
    return header.channels * n_chunks * header.num_latents * header.latent_dim * itemsize


def _zstd_bound(size: int) -> int:
    """Upper bound of a zstd frame compressing `size` bytes (ZSTD_COMPRESSBOUND plus frame header)."""
    margin = ((128 * 1024 - size) >> 11) if size < 128 * 1024 else 0
    return size + (size >> 8) + margin + 32


def _quantise(header: Header, x: np.ndarray) -> bytes:
    """Float latents -> raw little-endian payload bytes for `header.quant`."""
    if header.quant == "fp16":
        return np.ascontiguousarray(x, dtype="<f2").tobytes()
    scale = header.quant_params["scale"]
    q = np.clip(np.rint(x * np.float32(scale)), -scale, scale).astype(np.int8)
    return q.tobytes()


def _dequantise(header: Header, raw: bytes, shape: tuple[int, ...]) -> np.ndarray | None:
    """Raw payload bytes -> float32 latents, or None if the values are invalid."""
    if header.quant == "fp16":
        x = np.frombuffer(raw, dtype="<f2").astype(np.float32).reshape(shape)
        return x if np.isfinite(x).all() else None
    scale = header.quant_params["scale"]
    q = np.frombuffer(raw, dtype=np.int8)
    if q.size and int(np.abs(q.astype(np.int16)).max()) > scale:
        return None
    return (q.astype(np.float32) / np.float32(scale)).reshape(shape)


# ---------------------------------------------------------------------------
# Writing


def pack(header: Header, latents: np.ndarray) -> bytes:
    """Serialise a header and float latents (channels, T, K, D) into .m2l bytes.

    Latents are quantised as header.quant says; int8 clips to [-1, 1].
    """
    if not isinstance(header, Header):
        raise TypeError(f"header must be a Header, got {type(header).__name__}")
    x = np.asarray(latents)
    if x.shape != header.latent_shape:
        raise ValueError(f"latents shape {x.shape} does not match header {header.latent_shape}")
    if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
        raise ValueError("latents must be finite floating point values")
    if header.quant == "fp16" and np.abs(x).max(initial=0.0) > 65504.0:
        raise ValueError("latents exceed the float16 range")
    meta = msgpack.packb(header.to_wire(), use_bin_type=True)
    if len(meta) > MAX_HEADER_BYTES:
        raise ValueError(f"header is {len(meta)} bytes, more than {MAX_HEADER_BYTES}")
    out = io.BytesIO()
    out.write(_PREAMBLE.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR))
    out.write(_U32.pack(len(meta)))
    out.write(meta)
    out.write(_U32.pack(zlib.crc32(meta)))
    cctx = zstandard.ZstdCompressor(
        level=ZSTD_LEVEL, write_content_size=True, write_checksum=False, write_dict_id=False
    )
    for i in range(header.num_frames):
        start, stop = header.frame_chunk_range(i)
        payload = cctx.compress(_quantise(header, x[:, start:stop]))
        out.write(_FRAME_PREFIX.pack(len(payload), zlib.crc32(payload)))
        out.write(payload)
    return out.getvalue()


def write_file(
    path: Path | str,
    header: Header,
    latents: np.ndarray,
    force: bool = False,
    protect: Path | str | None = None,
) -> None:
    """Atomically write a .m2l file (no overwrite unless `force`, never over `protect`)."""
    data = pack(header, latents)
    with atomic_output(path, force=force, protect=protect) as tmp:
        tmp.write_bytes(data)


# ---------------------------------------------------------------------------
# Reading


class _BytesSource:
    """Random access to an in-memory buffer."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._view = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
        self.size = len(self._view)

    def read_at(self, offset: int, n: int) -> bytes:
        return bytes(self._view[offset : offset + n])

    def close(self) -> None:
        self._view.release()


class _FileSource:
    """Random access to an open binary file."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.size = os.fstat(f.fileno()).st_size

    def read_at(self, offset: int, n: int) -> bytes:
        self._f.seek(offset)
        return self._f.read(n)

    def close(self) -> None:
        self._f.close()


@dataclasses.dataclass(frozen=True)
class Damage:
    """Consecutive frames a salvaging Reader could not read: chunks [start_chunk, stop_chunk) are lost."""

    first_frame: int
    stop_frame: int  # exclusive
    start_chunk: int
    stop_chunk: int  # exclusive
    reason: str  # one line: what was wrong and at which byte, e.g. "CRC mismatch at byte 2531"

    @property
    def frames_label(self) -> str:
        """'frame 3' or 'frames 3-5'."""
        last = self.stop_frame - 1
        return f"frame {self.first_frame}" if last == self.first_frame else f"frames {self.first_frame}-{last}"


@dataclasses.dataclass
class _Run:
    """Frames found back to back, each where the previous one's length field says the next begins
    (the salvaging reader's unit of discovery; its frame indices are relative until it is placed)."""

    start: int  # byte offset of the first frame (or of where one was expected)
    gap_from: int  # byte offset where the unreadable bytes before it began (== start: none)
    gap_problem: str  # what was wrong at gap_from
    # (offset, chunks it holds or None if damaged in place, problem)
    frames: list[tuple[int, int | None, str]] = dataclasses.field(default_factory=list)
    end: int = 0  # byte offset after its last frame
    # why it ended: "eof" (exactly at the end of the file), "last" (after the short last frame), "break",
    # "none" (an empty run: nothing intact was found after the unreadable bytes)
    stopped: str = ""


class Reader:
    """Random-access .m2l reader that decodes only the frames a request touches.

    Opening parses and checks the preamble and header, then builds the frame
    index by walking the frame length fields (8 bytes read per frame, nothing
    decompressed), which also detects truncation and trailing garbage. Each
    frame's CRC, zstd stream and values are checked when it is read.

        with Reader.open("song.m2l") as r:
            z = r.read_chunks(10, 20)   # (channels, 10, K, D) float32

    With `salvage=True` a damaged file opens instead of raising (only a damaged preamble or header
    still raises): every frame is checked at once, frames are re-found after damage, `damage` lists
    the lost frames and chunks, `notes` any other damage or guess, and lost chunks read as zeros.
    """

    def __init__(self, source: _BytesSource | _FileSource, name: str = "", salvage: bool = False) -> None:
        self._src = source
        self._prefix = f"{name}: " if name else ""
        self._dctx = zstandard.ZstdDecompressor()
        self.salvage = salvage
        self.damage: list[Damage] = []
        self.notes: list[str] = []
        try:
            self.version, self.header, data_start = self._parse_header()
            if salvage:
                self.frame_offsets: list[int | None] = self._salvage_index(data_start)
            else:
                self.frame_offsets = list(self._build_index(data_start))
        except BaseException:
            source.close()
            raise

    @classmethod
    def open(cls, path: Path | str, salvage: bool = False) -> Reader:
        """Open a .m2l file; OSErrors (missing file, permissions) propagate unchanged."""
        f = open(path, "rb")  # noqa: SIM115 - owned by the Reader, closed by close()
        try:
            source = _FileSource(f)
        except BaseException:
            f.close()
            raise
        return cls(source, str(path), salvage)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, name: str = "", salvage: bool = False) -> Reader:
        """Read .m2l data held in memory (`name` prefixes error messages, e.g. "standard input")."""
        return cls(_BytesSource(data), name, salvage)

    @property
    def source_bytes(self) -> int:
        """Size of the whole .m2l file or buffer."""
        return self._src.size

    @property
    def lost_chunks(self) -> list[tuple[int, int]]:
        """[start, stop) chunk ranges of the lost frames (empty unless salvaging a damaged file)."""
        return [(d.start_chunk, d.stop_chunk) for d in self.damage]

    @property
    def damaged(self) -> bool:
        """True when a salvaging reader found anything wrong (lost frames or other damage)."""
        return bool(self.damage or self.notes)

    def __enter__(self) -> Reader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the underlying file or buffer."""
        self._src.close()

    # -- parsing -------------------------------------------------------------

    def _error(self, message: str, offset: int | None = None, frame: int | None = None) -> ContainerError:
        return ContainerError(self._prefix + message, offset=offset, frame=frame)

    def _read_exact(self, offset: int, n: int, what: str, frame: int | None = None) -> bytes:
        """Read n bytes at offset, or raise a truncation error naming `what`."""
        left = max(self._src.size - offset, 0)
        if n > left:
            raise self._error(
                f"truncated {what} (needs {n} bytes at byte {offset}, only {left} left)", offset, frame
            )
        data = self._src.read_at(offset, n)
        if len(data) != n:  # the file shrank under us
            raise self._error(f"truncated {what} (short read at byte {offset})", offset, frame)
        return data

    def _parse_header(self) -> tuple[tuple[int, int], Header, int]:
        """Check preamble and header; return ((major, minor), header, offset of first frame)."""
        size = self._src.size
        if size == 0:
            raise self._error("empty input (0 bytes), not an .m2l file", 0)
        if size < _PREAMBLE.size:
            raise self._error(
                f"truncated preamble ({size} bytes, an .m2l file starts with {_PREAMBLE.size})", 0
            )
        magic, major, minor = _PREAMBLE.unpack(self._src.read_at(0, _PREAMBLE.size))
        if magic != MAGIC:
            raise self._error(f"not an .m2l file (bad magic {magic!r} at byte 0)", 0)
        if major != FORMAT_MAJOR:
            raise self._error(
                f"unsupported .m2l format version {major}.{minor} at byte 4 (this reader "
                f"understands major version {FORMAT_MAJOR}; a newer m2lcodec may read it)",
                4,
            )
        pos = _PREAMBLE.size
        (length,) = _U32.unpack(self._read_exact(pos, 4, "header length"))
        if length > MAX_HEADER_BYTES:
            raise self._error(
                f"corrupt header (declared length {length} at byte {pos} exceeds the {MAX_HEADER_BYTES}-byte limit)",
                pos,
            )
        meta_at = pos + 4
        meta = self._read_exact(meta_at, length, "header")
        (crc,) = _U32.unpack(self._read_exact(meta_at + length, 4, "header CRC"))
        if zlib.crc32(meta) != crc:
            raise self._error(f"corrupt header (CRC mismatch at byte {meta_at})", meta_at)
        try:
            fields = msgpack.unpackb(meta, **_MSGPACK_OPTIONS)
        except (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException) as exc:
            reason = " ".join(str(exc).split())[:120] or type(exc).__name__
            raise self._error(f"corrupt header (invalid msgpack at byte {meta_at}: {reason})", meta_at) from None
        if not isinstance(fields, dict):
            raise self._error(
                f"corrupt header (msgpack at byte {meta_at} is a {type(fields).__name__}, expected a map)",
                meta_at,
            )
        try:
            header = Header.from_wire(fields)
        except ContainerError as exc:
            raise self._error(f"{exc} (header at byte {meta_at})", meta_at) from None
        return (major, minor), header, meta_at + length + 4

    def _build_index(self, pos: int) -> list[int]:
        """Walk the frame prefixes; return each frame's byte offset; check the data ends exactly."""
        header = self.header
        offsets = []
        for i in range(header.num_frames):
            start, stop = header.frame_chunk_range(i)
            prefix = self._read_exact(pos, _FRAME_PREFIX.size, f"frame {i} prefix", i)
            length, _ = _FRAME_PREFIX.unpack(prefix)
            limit = _zstd_bound(_frame_nbytes(header, stop - start))
            if length > limit:
                raise self._error(
                    f"corrupt frame {i} (declared payload length {length} at byte {pos} exceeds the possible {limit})",
                    pos,
                    i,
                )
            left = self._src.size - pos - _FRAME_PREFIX.size
            if length > left:
                raise self._error(
                    f"truncated frame {i} (payload of {length} bytes at byte {pos + 8}, only {max(left, 0)} left)",
                    pos,
                    i,
                )
            offsets.append(pos)
            pos += _FRAME_PREFIX.size + length
        if pos != self._src.size:
            raise self._error(
                f"trailing garbage ({self._src.size - pos} unexpected bytes after the last frame, at byte {pos})",
                pos,
            )
        return offsets

    # -- salvage ---------------------------------------------------------------

    def _frame_sizes(self) -> tuple[int, int, int]:
        """(chunks in a full frame, chunks in the last frame, largest possible payload length)."""
        h = self.header
        last = h.num_chunks - (h.num_frames - 1) * h.frame_chunks if h.num_frames else 0
        return h.frame_chunks, last, _zstd_bound(_frame_nbytes(h, h.frame_chunks))

    def _probe(self, pos: int) -> tuple[int, int, int] | str:
        """Check the frame at byte `pos` completely without knowing its index: (end offset, chunks it
        holds, payload length) if it is a full frame or the file's last frame and passes every check,
        else a short description of the first problem."""
        size = self._src.size
        full, last, bound = self._frame_sizes()
        if pos + _FRAME_PREFIX.size > size:
            return f"file ends at byte {size} inside a frame prefix"
        length, crc = _FRAME_PREFIX.unpack(self._src.read_at(pos, _FRAME_PREFIX.size))
        if length > bound:
            return f"unreadable length field at byte {pos} (says {length} bytes)"
        if pos + _FRAME_PREFIX.size + length > size:
            return f"file ends at byte {size} inside the frame at byte {pos} (truncated)"
        payload = self._src.read_at(pos + _FRAME_PREFIX.size, length)
        if zlib.crc32(payload) != crc:
            return f"CRC mismatch at byte {pos}"
        try:
            declared = zstandard.frame_content_size(payload)
        except zstandard.ZstdError:
            return f"not a zstd frame at byte {pos}"
        chunks = {_frame_nbytes(self.header, n): n for n in (full, last)}.get(declared)
        if chunks is None:
            return f"zstd content size {declared} fits no frame, at byte {pos}"
        try:
            self._decode_payload(payload, -1, pos, chunks)
        except ContainerError as exc:
            return str(exc).removeprefix(self._prefix)
        return pos + _FRAME_PREFIX.size + length, chunks, length

    def _length_walk(self, pos: int, limit: int) -> tuple[list[int], int] | None:
        """Follow the length fields of damaged frames from `pos`: if, within `limit` frames, they lead
        exactly to an intact frame or to the end of the file, the damage did not change frame lengths:
        return (offsets of the damaged frames, offset reached). Else None (a length field is damaged)."""
        size = self._src.size
        _, _, bound = self._frame_sizes()
        hops: list[int] = []
        while len(hops) < limit and pos + _FRAME_PREFIX.size <= size:
            (length,) = _U32.unpack(self._src.read_at(pos, 4))
            if length > bound or pos + _FRAME_PREFIX.size + length > size:
                return None
            hops.append(pos)
            pos += _FRAME_PREFIX.size + length
            if pos == size or not isinstance(self._probe(pos), str):
                return hops, pos
        return None

    def _find_frame(self, start: int) -> int | None:
        """Offset of the first frame at or after byte `start` that passes every check: a candidate is a
        zstd magic 8 bytes after a plausible length field, confirmed by its CRC and decode."""
        size = self._src.size
        block = 1 << 20
        at = start + _FRAME_PREFIX.size
        while at + len(ZSTD_MAGIC) <= size:
            buf = self._src.read_at(at, block + len(ZSTD_MAGIC) - 1)
            i = buf.find(ZSTD_MAGIC)
            while i >= 0:
                if not isinstance(self._probe(at + i - _FRAME_PREFIX.size), str):
                    return at + i - _FRAME_PREFIX.size
                i = buf.find(ZSTD_MAGIC, i + 1)
            at += block
        return None

    def _discover(self, data_start: int) -> list[_Run]:
        """Walk the file from the first frame, re-finding frames after damage; runs of chained frames."""
        size = self._src.size
        frames_total = self.header.num_frames
        _, last, _ = self._frame_sizes()
        short_last = last != self.header.frame_chunks
        run = _Run(start=data_start, gap_from=data_start, gap_problem="")
        runs = [run]
        pos = data_start
        while True:
            if pos == size:
                run.end, run.stopped = pos, "eof"
                break
            if len(runs) == 1 and len(run.frames) == frames_total:  # the header's frame count is reached
                run.end, run.stopped = pos, "break"
                self.notes.append(f"{size - pos} unexpected bytes after the last frame, at byte {pos} (ignored)")
                break
            found = self._probe(pos)
            if not isinstance(found, str):
                end, chunks, _ = found
                run.frames.append((pos, chunks, ""))
                pos = end
                if short_last and chunks == last:  # only the last frame is short: nothing follows it
                    run.end, run.stopped = pos, "last"
                    if pos < size:
                        self.notes.append(
                            f"{size - pos} unexpected bytes after the last frame, at byte {pos} (ignored)")
                    break
                continue
            walked = self._length_walk(pos, max(frames_total - len(run.frames), 1))
            if walked is not None:  # damaged in place: the length fields still chain
                hops, pos = walked
                for k, hop in enumerate(hops):
                    problem = found if k == 0 else self._probe(hop)
                    run.frames.append((hop, None, problem if isinstance(problem, str) else ""))
                continue
            run.end, run.stopped = pos, "break"
            nxt = self._find_frame(pos + 1)
            if nxt is None:
                runs.append(_Run(start=size, gap_from=pos, gap_problem=found, end=size, stopped="none"))
                break
            run = _Run(start=nxt, gap_from=pos, gap_problem=found)
            runs.append(run)
            pos = nxt
        return runs

    def _place(self, runs: list[_Run]) -> list[int]:
        """First frame index of each run (-1: cannot be placed). The first run starts right after the
        header, so at frame 0. A later run follows unreadable bytes and the file stores no frame index:
        it is placed by the short last frame when it holds it, else so that it ends with the file's last
        frame when it ends exactly at the end of the file, else by its byte position (the unreadable
        bytes before it divided by the median size of the intact frames; noted as a guess)."""
        frames_total = self.header.num_frames
        full, _, _ = self._frame_sizes()
        sizes = sorted(
            self._probe_size(off) for r in runs for off, chunks, _ in r.frames if chunks == full
        )
        typical = sizes[len(sizes) // 2] if sizes else _FRAME_PREFIX.size + _frame_nbytes(self.header, full)
        anchors = [
            frames_total - len(r.frames) if k > 0 and r.frames and r.stopped in ("eof", "last") else None
            for k, r in enumerate(runs)
        ]
        firsts = [0]
        nxt = len(runs[0].frames)
        for k in range(1, len(runs)):
            r = runs[k]
            if not r.frames:
                firsts.append(-1)
                continue
            upper = frames_total - sum(len(x.frames) for x in runs[k:])
            need = 0
            for j in range(k, len(runs)):  # leave room for the runs up to the next anchored one
                if j > k and anchors[j] is not None:
                    upper = min(upper, anchors[j] - need)
                    break
                need += len(runs[j].frames)
            guess = nxt + round((r.start - runs[k - 1].end) / typical)
            first = anchors[k] if anchors[k] is not None and nxt <= anchors[k] <= upper else \
                min(max(guess, nxt), upper)
            if first < nxt:
                self.notes.append(f"{len(r.frames)} frames found at byte {r.start} do not fit the header's "
                                  f"{frames_total} frames (ignored)")
                firsts.append(-1)
                continue
            if anchors[k] is None or first != anchors[k]:
                self.notes.append(f"the frames found at byte {r.start} after unreadable bytes were placed at frame "
                                  f"{first} by their byte position (the file stores no frame index; a guess)")
            firsts.append(first)
            nxt = first + len(r.frames)
        return firsts

    def _probe_size(self, offset: int) -> int:
        """Bytes taken by the frame at `offset` (prefix included), from its length field."""
        return _FRAME_PREFIX.size + _U32.unpack(self._src.read_at(offset, 4))[0]

    def _salvage_index(self, data_start: int) -> list[int | None]:
        """Frame offsets (None: lost) of a possibly damaged file; fills `damage` and `notes`."""
        h = self.header
        runs = self._discover(data_start)
        firsts = self._place(runs)
        offsets: list[int | None] = [None] * h.num_frames
        problems: dict[int, str] = {}
        placed_end = 0  # frame index after the last placed run
        for k, (r, first) in enumerate(zip(runs, firsts)):
            if first < 0:
                continue
            if k > 0 and r.frames and first == placed_end:
                self.notes.append(f"{r.start - r.gap_from} unreadable bytes at byte {r.gap_from} between two frames "
                                  "(ignored; no frame lost)")
            placed_end = first + len(r.frames)
            for j, (off, chunks, problem) in enumerate(r.frames):
                i = first + j
                start, stop = h.frame_chunk_range(i)
                if chunks == stop - start:
                    offsets[i] = off
                else:
                    problems[i] = problem or \
                        f"frame at byte {off} holds {chunks} chunks, frame {i} holds {stop - start}"
        # frames in the gaps before a run (or at the end) were lost with the unreadable bytes there
        for k, r in enumerate(runs):
            if k == 0 or not r.gap_problem:
                continue
            if r.frames:
                resync = f"; next intact frame found at byte {r.start}"
            else:
                resync = "" if "file ends" in r.gap_problem else "; no intact frame after it"
            for i in range(h.num_frames):
                if offsets[i] is None and i not in problems and \
                        (firsts[k] < 0 or not r.frames or i < firsts[k]):
                    problems[i] = r.gap_problem + resync
        runs_lost = []
        for i in range(h.num_frames):
            if offsets[i] is not None:
                continue
            if runs_lost and runs_lost[-1][1] == i:
                runs_lost[-1][1] = i + 1
            else:
                runs_lost.append([i, i + 1])
        for a, b in runs_lost:
            reason = problems.get(a, f"frame missing (the file ends at byte {self._src.size})")
            self.damage.append(Damage(a, b, h.frame_chunk_range(a)[0], h.frame_chunk_range(b - 1)[1], reason))
        return offsets

    # -- frames --------------------------------------------------------------

    @property
    def num_frames(self) -> int:
        """Number of frames in the file."""
        return len(self.frame_offsets)

    def _decode_payload(self, payload: bytes, index: int, pos: int, n_chunks: int) -> np.ndarray:
        """zstd payload of frame `index` at byte `pos` -> float32 (channels, n_chunks, K, D), checking the
        declared and actual sizes and the values."""
        header = self.header
        name = f"frame {index}" if index >= 0 else "frame"
        expected = _frame_nbytes(header, n_chunks)
        try:
            declared = zstandard.frame_content_size(payload)
            if declared != expected:
                raise self._error(
                    f"corrupt {name} (zstd content size {declared}, expected {expected}, at byte {pos})",
                    pos,
                    index,
                )
            raw = self._dctx.decompress(payload, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            reason = " ".join(str(exc).split())[:120]
            raise self._error(f"corrupt {name} (zstd error at byte {pos}: {reason})", pos, index) from None
        if len(raw) != expected:
            raise self._error(
                f"corrupt {name} (decompressed to {len(raw)} bytes, expected {expected}, at byte {pos})",
                pos,
                index,
            )
        shape = (header.channels, n_chunks, header.num_latents, header.latent_dim)
        x = _dequantise(header, raw, shape)
        if x is None:
            raise self._error(f"corrupt {name} (invalid {header.quant} values at byte {pos})", pos, index)
        return x

    def read_frame(self, index: int) -> np.ndarray:
        """Decode frame `index` to float32 (channels, n, K, D), checking CRC, zstd and values."""
        header = self.header
        start, stop = header.frame_chunk_range(index)
        pos = self.frame_offsets[index]
        if pos is None:
            damage = next(d for d in self.damage if d.first_frame <= index < d.stop_frame)
            raise self._error(f"frame {index} is lost ({damage.reason})", None, index)
        length, crc = _FRAME_PREFIX.unpack(self._read_exact(pos, _FRAME_PREFIX.size, f"frame {index} prefix", index))
        payload = self._read_exact(pos + _FRAME_PREFIX.size, length, f"frame {index}", index)
        if zlib.crc32(payload) != crc:
            raise self._error(f"corrupt frame {index} (CRC mismatch at byte {pos})", pos, index)
        return self._decode_payload(payload, index, pos, stop - start)

    def iter_frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first_chunk, latents (channels, n, K, D)) for each frame in order (salvaging: each
        intact frame)."""
        for i in range(self.num_frames):
            if self.frame_offsets[i] is not None:
                yield self.header.frame_chunk_range(i)[0], self.read_frame(i)

    def read_chunks(self, start_chunk: int, stop_chunk: int) -> np.ndarray:
        """Latents for chunks [start_chunk, stop_chunk) as float32 (channels, n, K, D); a salvaging
        reader gives zeros for the chunks of lost frames (see `damage`)."""
        h = self.header
        if not 0 <= start_chunk <= stop_chunk <= h.num_chunks:
            raise IndexError(
                f"chunk range [{start_chunk}, {stop_chunk}) outside [0, {h.num_chunks}]"
            )
        out = np.empty((h.channels, stop_chunk - start_chunk, h.num_latents, h.latent_dim), np.float32)
        if stop_chunk == start_chunk:
            return out
        for i in range(start_chunk // h.frame_chunks, (stop_chunk - 1) // h.frame_chunks + 1):
            f_start, f_stop = h.frame_chunk_range(i)
            lo, hi = max(f_start, start_chunk), min(f_stop, stop_chunk)
            if self.salvage and self.frame_offsets[i] is None:
                out[:, lo - start_chunk : hi - start_chunk] = 0.0
                continue
            out[:, lo - start_chunk : hi - start_chunk] = self.read_frame(i)[:, lo - f_start : hi - f_start]
        return out

    def read_all(self) -> np.ndarray:
        """All latents, (channels, num_chunks, K, D) float32."""
        return self.read_chunks(0, self.header.num_chunks)


def unpack(data: bytes | bytearray | memoryview) -> tuple[Header, np.ndarray]:
    """Parse .m2l bytes into (header, float32 latents (channels, T, K, D)); checks every frame."""
    with Reader.from_bytes(data) as reader:
        return reader.header, reader.read_all()


def read_file(path: Path | str) -> tuple[Header, np.ndarray]:
    """Read a whole .m2l file; errors name the file."""
    with Reader.open(path) as reader:
        return reader.header, reader.read_all()


@dataclasses.dataclass(frozen=True)
class Salvaged:
    """What a damaged .m2l file still holds: the latents with lost chunks as zeros, and the damage."""

    header: Header
    latents: np.ndarray  # (channels, T, K, D) float32
    damage: list[Damage]  # lost frames and chunks, in order
    notes: list[str]  # other damage (unexpected bytes) and frame indices that were guessed

    @property
    def lost_chunks(self) -> list[tuple[int, int]]:
        """[start, stop) chunk ranges whose latents are lost (zeros in `latents`)."""
        return [(d.start_chunk, d.stop_chunk) for d in self.damage]


def salvage(data: bytes | bytearray | memoryview) -> Salvaged:
    """Read damaged .m2l bytes as far as they can be read; only a damaged preamble or header raises."""
    with Reader.from_bytes(data, salvage=True) as reader:
        return Salvaged(reader.header, reader.read_all(), list(reader.damage), list(reader.notes))


def salvage_file(path: Path | str) -> Salvaged:
    """`salvage` for a file; errors name the file."""
    with Reader.open(path, salvage=True) as reader:
        return Salvaged(reader.header, reader.read_all(), list(reader.damage), list(reader.notes))
