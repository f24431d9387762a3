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
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "Header",
    "MAGIC",
    "Reader",
    "default_quant_params",
    "pack",
    "read_file",
    "unpack",
    "write_file",
]

MAGIC = b"M2L\x00"
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


class Reader:
    """Random-access .m2l reader that decodes only the frames a request touches.

    Opening parses and checks the preamble and header, then builds the frame
    index by walking the frame length fields (8 bytes read per frame, nothing
    decompressed), which also detects truncation and trailing garbage. Each
    frame's CRC, zstd stream and values are checked when it is read.

        with Reader.open("song.m2l") as r:
            z = r.read_chunks(10, 20)   # (channels, 10, K, D) float32
    """

    def __init__(self, source: _BytesSource | _FileSource, name: str = "") -> None:
        self._src = source
        self._prefix = f"{name}: " if name else ""
        self._dctx = zstandard.ZstdDecompressor()
        try:
            self.version, self.header, data_start = self._parse_header()
            self.frame_offsets = self._build_index(data_start)
        except BaseException:
            source.close()
            raise

    @classmethod
    def open(cls, path: Path | str) -> Reader:
        """Open a .m2l file; OSErrors (missing file, permissions) propagate unchanged."""
        f = open(path, "rb")  # noqa: SIM115 - owned by the Reader, closed by close()
        try:
            source = _FileSource(f)
        except BaseException:
            f.close()
            raise
        return cls(source, str(path))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, name: str = "") -> Reader:
        """Read .m2l data held in memory (`name` prefixes error messages, e.g. "standard input")."""
        return cls(_BytesSource(data), name)

    @property
    def source_bytes(self) -> int:
        """Size of the whole .m2l file or buffer."""
        return self._src.size

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

    # -- frames --------------------------------------------------------------

    @property
    def num_frames(self) -> int:
        """Number of frames in the file."""
        return len(self.frame_offsets)

    def read_frame(self, index: int) -> np.ndarray:
        """Decode frame `index` to float32 (channels, n, K, D), checking CRC, zstd and values."""
        header = self.header
        start, stop = header.frame_chunk_range(index)
        pos = self.frame_offsets[index]
        length, crc = _FRAME_PREFIX.unpack(self._read_exact(pos, _FRAME_PREFIX.size, f"frame {index} prefix", index))
        payload = self._read_exact(pos + _FRAME_PREFIX.size, length, f"frame {index}", index)
        if zlib.crc32(payload) != crc:
            raise self._error(f"corrupt frame {index} (CRC mismatch at byte {pos})", pos, index)
        expected = _frame_nbytes(header, stop - start)
        try:
            declared = zstandard.frame_content_size(payload)
            if declared != expected:
                raise self._error(
                    f"corrupt frame {index} (zstd content size {declared}, expected {expected}, at byte {pos})",
                    pos,
                    index,
                )
            raw = self._dctx.decompress(payload, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            reason = " ".join(str(exc).split())[:120]
            raise self._error(f"corrupt frame {index} (zstd error at byte {pos}: {reason})", pos, index) from None
        if len(raw) != expected:
            raise self._error(
                f"corrupt frame {index} (decompressed to {len(raw)} bytes, expected {expected}, at byte {pos})",
                pos,
                index,
            )
        shape = (header.channels, stop - start, header.num_latents, header.latent_dim)
        x = _dequantise(header, raw, shape)
        if x is None:
            raise self._error(f"corrupt frame {index} (invalid {header.quant} values at byte {pos})", pos, index)
        return x

    def iter_frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first_chunk, latents (channels, n, K, D)) for each frame in order."""
        for i in range(self.num_frames):
            yield self.header.frame_chunk_range(i)[0], self.read_frame(i)

    def read_chunks(self, start_chunk: int, stop_chunk: int) -> np.ndarray:
        """Latents for chunks [start_chunk, stop_chunk) as float32 (channels, n, K, D)."""
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
