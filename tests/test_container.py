"""Tests for m2lcodec.container: the .m2l format (round trips, seeking, corruption, bitrate)."""

from __future__ import annotations

import dataclasses
import struct
import zlib
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m2lcodec.atomic import OutputError, OutputExistsError
from m2lcodec.container import (
    DEFAULT_FRAME_CHUNKS,
    FORMAT_MAJOR,
    MAGIC,
    ContainerError,
    Header,
    Reader,
    default_quant_params,
    pack,
    read_file,
    salvage,
    salvage_file,
    unpack,
    write_file,
)

K, D, SPC = 8, 64, 32768


def make_header(**overrides: Any) -> Header:
    """A valid header for `channels` x `num_chunks` latents; keyword overrides win."""
    quant = overrides.get("quant", "int8")
    chunks = overrides.get("num_chunks", 5)
    fields: dict[str, Any] = dict(
        sample_rate=44100,
        model_sample_rate=44100,
        channels=1,
        num_samples=max(chunks * SPC - 1000, 0),
        num_chunks=chunks,
        num_latents=K,
        latent_dim=D,
        samples_per_chunk=SPC,
        frame_chunks=4,
        quant=quant,
        quant_params=default_quant_params(quant),
        model_name="music2latent2",
        model_hash="0123456789abcdef",
        sigma_cond=0.2,
        seed=1234,
        encoder="m2lcodec 0.1.0",
    )
    fields.update(overrides)
    return Header(**fields)


def make_latents(header: Header, seed: int = 0, std: float = 1.0) -> np.ndarray:
    """Random latents that look like tanh outputs."""
    rng = np.random.default_rng(seed)
    return np.tanh(rng.standard_normal(header.latent_shape) * std).astype(np.float32)


def assemble(
    meta: bytes,
    payloads: list[bytes],
    major: int = FORMAT_MAJOR,
    minor: int = 0,
    magic: bytes = MAGIC,
) -> bytes:
    """Build a file from raw parts with correct lengths and CRCs (for crafting bad files)."""
    out = [magic, bytes([major, minor]), struct.pack("<I", len(meta)), meta, struct.pack("<I", zlib.crc32(meta))]
    for p in payloads:
        out += [struct.pack("<II", len(p), zlib.crc32(p)), p]
    return b"".join(out)


def split(data: bytes) -> tuple[bytes, list[bytes], list[int]]:
    """Split a valid file into (msgpack header, frame payloads, frame offsets)."""
    (n,) = struct.unpack_from("<I", data, 6)
    meta = data[10 : 10 + n]
    pos = 10 + n + 4
    payloads, offsets = [], []
    while pos < len(data):
        length, _ = struct.unpack_from("<II", data, pos)
        offsets.append(pos)
        payloads.append(data[pos + 8 : pos + 8 + length])
        pos += 8 + length
    return meta, payloads, offsets


def sample_file() -> tuple[Header, np.ndarray, bytes]:
    header = make_header(channels=2, num_chunks=7, frame_chunks=3)
    latents = make_latents(header)
    return header, latents, pack(header, latents)


# -- round trips -----------------------------------------------------------------


@pytest.mark.parametrize("quant", ["fp16", "int8"])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("chunks", [1, 37])
def test_round_trip(quant: str, channels: int, chunks: int) -> None:
    header = make_header(quant=quant, channels=channels, num_chunks=chunks)
    x = make_latents(header, seed=chunks)
    h2, y = unpack(pack(header, x))
    assert h2 == header
    assert y.dtype == np.float32 and y.shape == (channels, chunks, K, D)
    tol = 2.0**-11 if quant == "fp16" else 0.5 / 127 + 1e-6
    assert np.abs(y - x).max() <= tol
    # Decoding is exact: re-packing the decoded latents reproduces the same bytes.
    assert pack(header, y) == pack(header, x)


def test_int8_saturates_and_hits_grid() -> None:
    header = make_header(num_chunks=1)
    x = np.zeros(header.latent_shape, np.float32)
    x.flat[:5] = [1.5, -2.0, 1.0, -1.0, 0.5]
    _, y = unpack(pack(header, x))
    np.testing.assert_allclose(y.flat[:5], [1.0, -1.0, 1.0, -1.0, 64 / 127], atol=1e-7)


def test_zero_chunks() -> None:
    header = make_header(num_chunks=0, num_samples=0)
    data = pack(header, np.zeros(header.latent_shape, np.float32))
    h2, y = unpack(data)
    assert h2 == header and y.shape == (1, 0, K, D)


def test_pack_is_deterministic() -> None:
    header, x, data = sample_file()
    assert pack(header, x) == data


def test_pack_rejects_bad_latents() -> None:
    header = make_header()
    with pytest.raises(ValueError, match="shape"):
        pack(header, np.zeros((1, 4, K, D), np.float32))
    bad = make_latents(header)
    bad[0, 1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        pack(header, bad)


def test_header_dict_round_trip_and_unknown_keys() -> None:
    header = make_header()
    d = header.to_dict()
    assert Header.from_dict(d) == header
    d["added_in_minor_version_7"] = {"anything": [1, 2]}
    assert Header.from_dict(d) == header


@pytest.mark.parametrize(
    "field, value",
    [
        ("channels", True),
        ("channels", "2"),
        ("channels", 0),
        ("num_chunks", -1),
        ("sigma_cond", float("nan")),
        ("sigma_cond", "0.2"),
        ("quant", "int4"),
        ("quant_params", {"scale": 300}),
        ("quant_params", [1]),
        ("model_hash", "not hex"),
        ("model_name", 5),
        ("num_samples", 10**12),
    ],
)
def test_header_validation(field: str, value: Any) -> None:
    d = make_header().to_dict()
    d[field] = value
    with pytest.raises(ContainerError, match="invalid header"):
        Header.from_dict(d)
    with pytest.raises(ValueError):
        make_header(**{field: value})


def test_header_missing_field() -> None:
    d = make_header().to_dict()
    del d["seed"]
    with pytest.raises(ContainerError, match="missing field 'seed'"):
        Header.from_dict(d)
    w = make_header().to_wire()
    del w["mh"]
    with pytest.raises(ContainerError, match="missing field 'model_hash' \\(key 'mh'\\)"):
        Header.from_wire(w)
    assert Header.from_wire(make_header().to_wire()) == make_header()


def test_newer_minor_version_with_extra_keys_is_read() -> None:
    header, x, data = sample_file()
    meta, payloads, _ = split(data)
    d = msgpack.unpackb(meta)
    d["future_field"] = "ignored"
    h2, y = unpack(assemble(msgpack.packb(d), payloads, minor=9))
    assert h2 == header
    np.testing.assert_array_equal(y, unpack(data)[1])
    with Reader.from_bytes(assemble(msgpack.packb(d), payloads, minor=9)) as r:
        assert r.version == (FORMAT_MAJOR, 9)


# -- reader / seeking ----------------------------------------------------------


def test_seeking_matches_full_read_and_decodes_only_needed_frames() -> None:
    header, _, data = sample_file()
    _, full = unpack(data)
    with Reader.from_bytes(data) as r:
        assert r.header == header and r.num_frames == 3
        decoded: list[int] = []
        real = r.read_frame

        def spy(index: int) -> np.ndarray:
            decoded.append(index)
            return real(index)

        r.read_frame = spy  # type: ignore[method-assign]
        for a in range(header.num_chunks + 1):
            for b in range(a, header.num_chunks + 1):
                decoded.clear()
                np.testing.assert_array_equal(r.read_chunks(a, b), full[:, a:b])
                expected = list(range(a // 3, (b - 1) // 3 + 1)) if b > a else []
                assert decoded == expected
        with pytest.raises(IndexError):
            r.read_chunks(0, header.num_chunks + 1)
        with pytest.raises(IndexError):
            r.read_chunks(3, 2)


def test_iter_frames() -> None:
    header, _, data = sample_file()
    _, full = unpack(data)
    with Reader.from_bytes(data) as r:
        frames = list(r.iter_frames())
    assert [start for start, _ in frames] == [0, 3, 6]
    assert [f.shape[1] for _, f in frames] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([f for _, f in frames], axis=1), full)


def test_files_atomic_force_protect(tmp_path: Path) -> None:
    header, x, data = sample_file()
    path = tmp_path / "a.m2l"
    write_file(path, header, x)
    assert path.read_bytes() == data
    h2, y = read_file(path)
    assert h2 == header
    np.testing.assert_array_equal(y, unpack(data)[1])
    with Reader.open(path) as r:
        np.testing.assert_array_equal(r.read_chunks(2, 5), y[:, 2:5])
    with pytest.raises(OutputExistsError):
        write_file(path, header, x)
    write_file(path, header, x, force=True)
    src = tmp_path / "in.wav"
    src.write_bytes(b"input")
    with pytest.raises(OutputError):
        write_file(src, header, x, force=True, protect=src)
    assert src.read_bytes() == b"input"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.m2l", "in.wav"]


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.m2l"
    path.write_bytes(b"RIFF0000WAVE")
    with pytest.raises(ContainerError, match=r"bad\.m2l: not an \.m2l file"):
        read_file(path)
    with pytest.raises(FileNotFoundError):
        read_file(tmp_path / "missing.m2l")


# -- corruption: each kind is a ContainerError that says where ---------------------


def _error(data: bytes) -> ContainerError:
    with pytest.raises(ContainerError) as info:
        unpack(data)
    msg = str(info.value)
    assert "\n" not in msg
    return info.value


def test_structural_corruptions() -> None:
    header, x, data = sample_file()
    meta, payloads, offsets = split(data)
    meta_at = 10
    assert "empty" in str(_error(b""))
    assert "truncated preamble" in str(_error(b"M2L"))
    e = _error(b"RIFF\x01\x00" + data[6:])
    assert "bad magic" in str(e) and e.offset == 0
    e = _error(data[:4] + bytes([2, 0]) + data[6:])
    assert "unsupported .m2l format version 2.0" in str(e) and "major version 1" in str(e)
    assert "version 0.3" in str(_error(data[:4] + bytes([0, 3]) + data[6:]))
    assert "truncated header length" in str(_error(data[:8]))
    e = _error(data[: meta_at + 5])
    assert "truncated header" in str(e) and f"at byte {meta_at}" in str(e)
    e = _error(data[:6] + struct.pack("<I", 0xFFFFFFF0) + data[10:])
    assert "exceeds" in str(e) and e.offset == 6
    e = _error(data[: meta_at + 3] + bytes([data[meta_at + 3] ^ 1]) + data[meta_at + 4 :])
    assert f"corrupt header (CRC mismatch at byte {meta_at})" in str(e)


def test_header_content_corruptions() -> None:
    _, _, data = sample_file()
    meta, payloads, _ = split(data)
    assert "invalid msgpack" in str(_error(assemble(b"\xc1\xc1garbage", payloads)))
    assert "invalid msgpack" in str(_error(assemble(meta + b"\x00", payloads)))  # extra data
    assert "expected a map" in str(_error(assemble(msgpack.packb([1, 2]), payloads)))
    assert "invalid msgpack" in str(_error(assemble(msgpack.packb({1: 2}), payloads)))  # int keys
    d = msgpack.unpackb(meta)
    assert d["ch"] == 2 and "channels" not in d  # stored under the short wire keys
    d["ch"] = "two"
    e = _error(assemble(msgpack.packb(d), payloads))
    assert "invalid header" in str(e) and "'channels'" in str(e)
    d = msgpack.unpackb(meta)
    d["t"] = 1000  # far more frames than present
    assert "truncated frame 3 prefix" in str(_error(assemble(msgpack.packb(d), payloads)))
    d["t"] = 10**6  # beyond the sanity limit: rejected before allocating anything
    assert "too many latents" in str(_error(assemble(msgpack.packb(d), payloads)))


def test_frame_corruptions() -> None:
    header, x, data = sample_file()
    meta, payloads, offsets = split(data)

    # CRC mismatch in frame 1, reported with the frame's byte offset.
    at = offsets[1] + 8 + 5
    e = _error(data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1 :])
    assert str(e) == f"corrupt frame 1 (CRC mismatch at byte {offsets[1]})"
    assert (e.frame, e.offset) == (1, offsets[1])

    # Truncations: inside the last payload, inside a prefix, and frames missing.
    e = _error(data[:-1])
    assert "truncated frame 2" in str(e) and e.frame == 2
    e = _error(data[: offsets[2] + 3])
    assert "truncated frame 2 prefix" in str(e) and f"at byte {offsets[2]}" in str(e)
    assert "truncated frame 1 prefix" in str(_error(data[: offsets[1]]))

    # Trailing garbage and an extra frame.
    e = _error(data + b"\x00\x01")
    assert "trailing garbage (2 unexpected bytes" in str(e) and e.offset == len(data)
    assert "trailing garbage" in str(_error(assemble(meta, payloads + [payloads[0]])))

    # Declared length larger than any zstd frame of this size could be.
    big = data[: offsets[0]] + struct.pack("<I", 10**7) + data[offsets[0] + 4 :]
    assert "corrupt frame 0 (declared payload length" in str(_error(big))

    # Valid CRC but not zstd, wrong decoded size, and extra data after the zstd frame.
    cctx = zstandard.ZstdCompressor()
    bad = [payloads[0], b"not zstd data", payloads[2]]
    e = _error(assemble(meta, bad))
    assert "corrupt frame 1 (zstd error" in str(e) and e.frame == 1
    bad = [payloads[0], cctx.compress(b"\x00" * 10), payloads[2]]
    assert "corrupt frame 1 (zstd content size 10" in str(_error(assemble(meta, bad)))
    bad = [payloads[0], payloads[1] + b"\x00\x00\x00", payloads[2]]
    assert "corrupt frame 1 (zstd error" in str(_error(assemble(meta, bad)))

    # Valid CRC and zstd but values an encoder never writes.
    raw = np.zeros((2, 1, K, D), np.int8)
    raw[1, 0, 3, 4] = -128
    e = _error(assemble(meta, payloads[:2] + [cctx.compress(raw.tobytes())]))
    assert "corrupt frame 2 (invalid int8 values" in str(e)
    h16 = make_header(quant="fp16", num_chunks=1)
    nan = np.zeros(h16.latent_shape, "<f2")
    nan[0, 0, 0, 0] = np.nan
    meta16, _, _ = split(pack(h16, make_latents(h16)))
    assert "invalid fp16 values" in str(_error(assemble(meta16, [cctx.compress(nan.tobytes())])))


def test_reader_open_checks_structure_lazily_checks_frames() -> None:
    _, _, data = sample_file()
    _, _, offsets = split(data)
    at = offsets[2] + 20
    corrupt = data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
    with Reader.from_bytes(corrupt) as r:  # structure is fine: opening works
        r.read_chunks(0, 6)  # frames 0 and 1 are intact
        with pytest.raises(ContainerError, match="corrupt frame 2"):
            r.read_chunks(5, 7)
    with pytest.raises(ContainerError, match="trailing garbage"):
        Reader.from_bytes(data + b"x")


# -- salvage: reading what a damaged file still holds ------------------------------


def salvage_sample(chunks: int = 9, frame_chunks: int = 2, seed: int = 0) -> tuple[bytes, np.ndarray, list[int]]:
    """A stereo int8 file of `chunks` chunks in frames of `frame_chunks` (tanh(N(0, 0.7^2)) latents, so all
    full frames are about the same size), its quantised latents, and its frame offsets plus the file size."""
    header = make_header(channels=2, num_chunks=chunks, frame_chunks=frame_chunks,
                         num_samples=chunks * SPC - 5000)
    data = pack(header, make_latents(header, seed=seed, std=0.7))
    _, latents = unpack(data)
    return data, latents, split(data)[2] + [len(data)]


def overwrite(data: bytes, start: int, stop: int, seed: int = 0) -> bytes:
    """`data` with bytes [start, stop) replaced by random bytes."""
    b = bytearray(data)
    b[start:stop] = np.random.default_rng(seed).bytes(stop - start)
    return bytes(b)


def check_salvaged(data: bytes, latents: np.ndarray, lost_frames: list[tuple[int, int]], fc: int = 2) -> Any:
    """salvage(data) loses exactly `lost_frames` ([first, stop) frame ranges), reads zeros there and the
    original latents everywhere else; returns the result."""
    s = salvage(data)
    assert [(d.first_frame, d.stop_frame) for d in s.damage] == lost_frames, s.damage
    T = latents.shape[1]
    assert s.lost_chunks == [(a * fc, min(b * fc, T)) for a, b in lost_frames]
    lost = np.zeros(T, bool)
    for a, b in s.lost_chunks:
        lost[a:b] = True
    np.testing.assert_array_equal(s.latents[:, ~lost], latents[:, ~lost])
    assert not s.latents[:, lost].any()
    for d in s.damage:
        assert "\n" not in d.reason and d.reason
    return s


def test_salvage_clean_file_reads_like_strict() -> None:
    data, latents, offsets = salvage_sample()
    s = check_salvaged(data, latents, [])
    assert s.notes == [] and s.header == unpack(data)[0]
    with Reader.from_bytes(data, salvage=True) as r, Reader.from_bytes(data) as strict:
        assert r.frame_offsets == strict.frame_offsets == offsets[:-1] and not r.damaged


def test_salvage_payload_overwritten_in_place() -> None:
    """Random bytes over a payload (length field intact): the CRC fails, the length still leads to the next
    frame, so only that frame is lost and no index is in doubt."""
    data, latents, off = salvage_sample()
    bad = overwrite(data, off[1] + 8, off[2])
    with pytest.raises(ContainerError, match="corrupt frame 1"):
        unpack(bad)
    s = check_salvaged(bad, latents, [(1, 2)])
    assert s.damage[0].reason == f"CRC mismatch at byte {off[1]}" and s.notes == []
    bad = overwrite(data, off[1] + 8, off[1] + 40)  # and two frames, each in place
    bad = overwrite(bad, off[2] + 8, off[2] + 40, seed=1)
    check_salvaged(bad, latents, [(1, 3)])
    check_salvaged(overwrite(data, off[4] + 8, off[5]), latents, [(4, 5)])  # the (short) last frame


@pytest.mark.parametrize("frames", [[1], [1, 2], [0], [3]])
def test_salvage_length_field_overwritten(frames: list[int]) -> None:
    """Random bytes over whole frames, length fields included: the walk breaks, the next intact frame is
    found again by its zstd magic and CRC, and its index comes from the end of the file."""
    data, latents, off = salvage_sample()
    bad = overwrite(data, off[frames[0]], off[frames[-1] + 1])
    with pytest.raises(ContainerError):
        unpack(bad)
    s = check_salvaged(bad, latents, [(frames[0], frames[-1] + 1)])
    assert f"unreadable length field at byte {off[frames[0]]}" in s.damage[0].reason
    assert f"next intact frame found at byte {off[frames[-1] + 1]}" in s.damage[0].reason
    assert s.notes == []


def test_salvage_truncated_keeps_everything_before_the_cut() -> None:
    data, latents, off = salvage_sample()
    s = check_salvaged(data[: off[3] + 100], latents, [(3, 5)])
    assert "truncated" in s.damage[0].reason and f"byte {off[3]}" in s.damage[0].reason
    check_salvaged(data[: off[3]], latents, [(3, 5)])  # cut exactly between two frames
    check_salvaged(data[: off[0] + 3], latents, [(0, 5)])  # inside the first prefix: nothing left
    check_salvaged(data[:-1], latents, [(4, 5)])


def test_salvage_inserted_and_deleted_bytes() -> None:
    """Bytes deleted inside a frame shift the rest of the file; bytes inserted between two frames lose
    nothing. Both are re-found by scanning, and the tail of the file fixes the indices."""
    data, latents, off = salvage_sample()
    check_salvaged(data[: off[2] + 30] + data[off[2] + 50 :], latents, [(2, 3)])
    s = check_salvaged(data[: off[2]] + b"junk" + data[off[2] :], latents, [])
    assert s.notes == [f"4 unreadable bytes at byte {off[2]} between two frames (ignored; no frame lost)"]
    s = check_salvaged(data + b"\x00\x01", latents, [])
    assert s.notes == [f"2 unexpected bytes after the last frame, at byte {len(data)} (ignored)"]


def test_salvage_two_gaps_places_the_middle_frames_by_position() -> None:
    """With two damaged stretches, the frames between them have no anchor (the file stores no frame index):
    they are placed by the unreadable bytes before them over the median frame size, and a note says so."""
    data, latents, off = salvage_sample(chunks=20, frame_chunks=2)
    bad = overwrite(data, off[2], off[3])
    bad = overwrite(bad, off[5], off[7], seed=1)
    s = check_salvaged(bad, latents, [(2, 3), (5, 7)])
    assert len(s.notes) == 1 and f"placed at frame 3 by their byte position" in s.notes[0]
    # and a truncation on top: the frames after the second gap are placed by position too
    s = check_salvaged(bad[: off[8] + 30], latents, [(2, 3), (5, 7), (8, 10)])
    assert len(s.notes) == 2


def test_salvage_needs_the_header_and_names_the_file(tmp_path: Path) -> None:
    data, latents, off = salvage_sample()
    with pytest.raises(ContainerError, match="corrupt header"):
        salvage(overwrite(data, 12, 20))
    with pytest.raises(ContainerError, match="bad magic"):
        salvage(b"RIFF" + data[4:])
    path = tmp_path / "bad.m2l"
    path.write_bytes(overwrite(data, off[1], off[2]))
    s = salvage_file(path)
    assert [(d.first_frame, d.stop_frame) for d in s.damage] == [(1, 2)]
    np.testing.assert_array_equal(s.latents, salvage(path.read_bytes()).latents)
    with Reader.open(path, salvage=True) as r:
        assert r.lost_chunks == [(2, 4)] and r.frame_offsets[1] is None and r.damaged
        np.testing.assert_array_equal(r.read_chunks(3, 6)[:, 1:], latents[:, 4:6])
        assert not r.read_chunks(3, 6)[:, 0].any()
        with pytest.raises(ContainerError, match=f"bad.m2l: frame 1 is lost"):
            r.read_frame(1)
        assert [c for c, _ in r.iter_frames()] == [0, 4, 6, 8]
    path.write_bytes(data[:12])
    with pytest.raises(ContainerError, match="bad.m2l: truncated header"):
        salvage_file(path)


# -- fuzzing: nothing but ContainerError ever escapes -----------------------------

_HEADER, _LATENTS, _VALID = sample_file()
_META, _PAYLOADS, _ = split(_VALID)
_FUZZ = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def _parse_everything(data: bytes) -> None:
    """Run the strict and the salvaging APIs; any outcome but success or ContainerError fails the test.
    A salvage that gets past the header loses whole frames only and reads zeros for them."""
    try:
        s = salvage(data)
        assert s.latents.shape == s.header.latent_shape
        for a, b in s.lost_chunks:
            assert not s.latents[:, a:b].any()
    except ContainerError:
        pass
    try:
        header, latents = unpack(data)
        assert latents.shape == header.latent_shape
    except ContainerError:
        pass
    try:
        with Reader.from_bytes(data) as r:
            n = r.header.num_chunks
            assert r.read_chunks(n // 2, n).shape[1] == n - n // 2
            assert r.read_chunks(0, n // 2).shape[1] == n // 2
    except ContainerError:
        pass


@_FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    _parse_everything(data)
    _parse_everything(_VALID[:10] + data)  # past the magic, into the header


def mutations(lo: int, hi: int) -> st.SearchStrategy:
    """One edit of a file at a byte in [lo, hi): flip a bit, truncate, insert, delete or set bytes."""
    return st.one_of(
        st.tuples(st.just("flip"), st.integers(lo, hi - 1), st.integers(0, 7)),
        st.tuples(st.just("truncate"), st.integers(lo, hi - 1), st.just(0)),
        st.tuples(st.just("insert"), st.integers(lo, hi), st.integers(0, 255)),
        st.tuples(st.just("delete"), st.integers(lo, hi - 1), st.integers(1, 16)),
        st.tuples(st.just("set"), st.integers(lo, hi - 1), st.integers(0, 255)),
    )


mutation = mutations(0, len(_VALID))


def _mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, arg in mutations:
        pos = min(pos, len(buf))
        if kind == "flip" and pos < len(buf):
            buf[pos] ^= 1 << arg
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "insert":
            buf[pos:pos] = bytes([arg])
        elif kind == "delete":
            del buf[pos : pos + arg]
        elif kind == "set" and pos < len(buf):
            buf[pos] = arg
    return bytes(buf)


@_FUZZ
@given(st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_mutated_valid_file(mutations: list[tuple[str, int, int]]) -> None:
    _parse_everything(_mutate(_VALID, mutations))


_S_DATA, _S_LATENTS, _S_OFFSETS = salvage_sample(chunks=11, frame_chunks=2)


@_FUZZ
@given(st.lists(mutations(_S_OFFSETS[0], len(_S_DATA)), min_size=1, max_size=3))
def test_fuzz_salvage_after_the_header(mutations: list[tuple[str, int, int]]) -> None:
    """Damage behind an intact header: salvage never raises, and every chunk it keeps is the original one
    unless a note says a frame index was guessed."""
    s = salvage(_mutate(_S_DATA, mutations))
    kept = np.ones(s.header.num_chunks, bool)
    for a, b in s.lost_chunks:
        kept[a:b] = False
    if not any("a guess" in note for note in s.notes):
        np.testing.assert_array_equal(s.latents[:, kept], _S_LATENTS[:, kept])


@_FUZZ
@given(
    st.integers(-1, len(_PAYLOADS) - 1),
    st.lists(mutation, min_size=1, max_size=3),
)
def test_fuzz_mutations_behind_valid_crcs(part: int, mutations: list[tuple[str, int, int]]) -> None:
    """Mutate the msgpack header (part -1) or one payload, then fix CRCs so deeper checks run."""
    meta, payloads = _META, list(_PAYLOADS)
    if part < 0:
        meta = _mutate(meta, mutations)
    else:
        payloads[part] = _mutate(payloads[part], mutations)
    _parse_everything(assemble(meta, payloads))


@_FUZZ
@given(
    st.sampled_from([f.name for f in dataclasses.fields(Header)]),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**64), 2**64),
        st.floats(),
        st.text(max_size=20),
        st.binary(max_size=8),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    ),
)
def test_fuzz_header_field_values(field: str, value: Any) -> None:
    d = _HEADER.to_dict()
    d[field] = value
    try:
        meta = msgpack.packb(d, use_bin_type=True)
    except (OverflowError, TypeError):
        return  # msgpack cannot even encode it
    _parse_everything(assemble(meta, list(_PAYLOADS)))


# -- bitrate ---------------------------------------------------------------------


@pytest.mark.parametrize("quant, limit_kbps", [("int8", 6.0), ("fp16", 12.0)])
def test_bitrate_10s_mono_worst_case(quant: str, limit_kbps: float) -> None:
    """10 s of 44.1 kHz mono with incompressible tanh latents stays within budget, all overhead included."""
    num_samples = 10 * 44100
    chunks = -(-num_samples // SPC)  # 14
    header = make_header(
        quant=quant,
        num_chunks=chunks,
        num_samples=num_samples,
        frame_chunks=DEFAULT_FRAME_CHUNKS,
        model_hash="9f86d081884c7d65",  # 64-bit prefix of a SHA-256, as docs/format.md recommends
    )
    data = pack(header, make_latents(header, seed=3))
    kbps = len(data) * 8 / 10.0 / 1000
    assert kbps <= limit_kbps, f"{quant}: {len(data)} bytes = {kbps:.3f} kbps"
