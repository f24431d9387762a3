"""Tests for m2lcodec.audio: reading, resampling and atomic writing of audio files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from m2lcodec.atomic import OutputError, OutputExistsError
from m2lcodec.audio import (
    AudioError,
    AudioReader,
    AudioWriter,
    PipeReader,
    StreamResampler,
    WavStreamWriter,
    audio_info,
    read_audio,
    resample,
    wav_header,
    write_audio,
)

SR = 44100


def _sine(sr: int = SR, seconds: float = 0.25, freq: float = 440.0, channels: int = 2) -> np.ndarray:
    """Deterministic (channels, samples) test signal, a different phase per channel."""
    t = np.arange(int(sr * seconds)) / sr
    return np.stack([0.5 * np.sin(2 * np.pi * freq * t + c) for c in range(channels)]).astype(np.float32)


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- reading -------------------------------------------------------------------


@pytest.mark.parametrize(
    "suffix, fmt, subtype, tol",
    [
        (".wav", "WAV", "FLOAT", 1e-7),
        (".wav", "WAV", "PCM_16", 1e-4),
        (".flac", "FLAC", "PCM_24", 1e-6),
        (".ogg", "OGG", "VORBIS", None),
        (".mp3", "MP3", "MPEG_LAYER_III", None),
    ],
)
def test_read_formats(tmp_path: Path, suffix: str, fmt: str, subtype: str, tol: float | None) -> None:
    if fmt not in sf.available_formats():
        pytest.skip(f"libsndfile lacks {fmt}")
    x = _sine()
    path = tmp_path / f"in{suffix}"
    sf.write(path, x.T, SR, format=fmt, subtype=subtype)
    y, sr = read_audio(path)
    assert sr == SR and y.dtype == np.float32 and y.flags.c_contiguous
    assert y.shape[0] == 2
    if tol is not None:
        assert y.shape == x.shape
        np.testing.assert_allclose(y, x, atol=tol)
    else:  # lossy: length may carry codec padding; just check it is the same sound
        n = min(y.shape[1], x.shape[1])
        assert abs(y.shape[1] - x.shape[1]) < 4096
        assert np.corrcoef(x[0, 2048 : n - 2048], y[0, 2048 : n - 2048])[0, 1] > 0.9
    assert audio_info(path)[:2] == (SR, 2)


def test_read_mono_is_2d(tmp_path: Path) -> None:
    path = tmp_path / "mono.wav"
    sf.write(path, _sine(channels=1)[0], SR)
    y, _ = read_audio(path)
    assert y.shape == (1, int(SR * 0.25))


def test_audio_info(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, _sine(sr=22050, channels=3).T, 22050)
    assert audio_info(path) == (22050, 3, int(22050 * 0.25))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.wav"
    for fn in (read_audio, audio_info):
        with pytest.raises(AudioError, match="no such file") as info:
            fn(path)
        assert str(path) in str(info.value)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="directory"):
        read_audio(tmp_path)
    with pytest.raises(AudioError, match="directory"):
        audio_info(tmp_path)


@pytest.mark.parametrize("content", [b"", b"not audio at all " * 20, b"RIFF\x00\x00\x00\x00WAVEfmt "])
def test_not_audio(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.wav"
    path.write_bytes(content)
    for fn in (read_audio, audio_info):
        with pytest.raises(AudioError, match="not a readable audio file") as info:
            fn(path)
        msg = str(info.value)
        assert "\n" not in msg and msg.startswith(str(path))
        assert isinstance(info.value, ValueError)


def test_zero_samples(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0, 2), np.float32), SR)
    with pytest.raises(AudioError, match="no audio samples"):
        read_audio(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path: Path, bad: float) -> None:
    x = _sine()
    x[1, 100] = bad
    path = tmp_path / "bad.wav"
    sf.write(path, x.T, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite"):
        read_audio(path)


# -- resampling ----------------------------------------------------------------


def test_resample_identity() -> None:
    x = _sine()
    y = resample(x, SR, SR)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x)
    assert resample(x.astype(np.float64), SR, SR).dtype == np.float32


def test_resample_round_trip_keeps_length_and_shape() -> None:
    x = _sine(sr=48000, seconds=0.5, freq=1000.0)
    y = resample(x, 48000, 44100)
    assert y.dtype == np.float32 and y.shape == (2, round(x.shape[1] * 44100 / 48000))
    z = resample(y, 44100, 48000)
    assert z.shape[0] == 2 and abs(z.shape[1] - x.shape[1]) <= 1
    n = min(z.shape[1], x.shape[1])
    for c in range(2):
        assert np.corrcoef(x[c, 500 : n - 500], z[c, 500 : n - 500])[0, 1] > 0.999


def test_resample_1d_and_bad_args() -> None:
    x = _sine(channels=1)[0]
    assert resample(x, SR, 16000).ndim == 1
    with pytest.raises(ValueError):
        resample(x, 0, SR)
    with pytest.raises(ValueError):
        resample(np.zeros((1, 2, 3)), SR, 16000)


def test_stream_resampler_matches_one_shot() -> None:
    x = _sine(sr=48000, seconds=0.5)
    whole = resample(x, 48000, 44100)
    rs = StreamResampler(48000, 44100, 2)
    blocks = [rs.process(x[:, i : i + 3000]) for i in range(0, x.shape[1], 3000)]
    blocks.append(rs.process(np.zeros((2, 0), np.float32), last=True))
    streamed = np.concatenate(blocks, axis=1)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-6)


# -- writing -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, subtype, expect_subtype, tol",
    [
        ("o.wav", "PCM_16", "PCM_16", 1e-4),
        ("o.wav", "PCM_24", "PCM_24", 1e-6),
        ("o.wav", "FLOAT", "FLOAT", 0.0),
        ("o.flac", "PCM_16", "PCM_16", 1e-4),
        ("o.flac", "FLOAT", "PCM_24", 1e-6),  # FLAC has no float: mapped to PCM_24
    ],
)
def test_write_audio_round_trip(tmp_path: Path, name: str, subtype: str, expect_subtype: str, tol: float) -> None:
    x = _sine()
    path = tmp_path / name
    write_audio(path, x, SR, subtype=subtype)
    assert sf.info(str(path)).subtype == expect_subtype
    y, sr = read_audio(path)
    assert sr == SR
    np.testing.assert_allclose(y, x, atol=tol)
    assert _entries(tmp_path) == [name]


def test_write_audio_clips_integer_subtypes(tmp_path: Path) -> None:
    x = np.array([[0.0, 1.5, -3.0, 0.5]], np.float32)
    write_audio(tmp_path / "c.wav", x, SR)
    y, _ = read_audio(tmp_path / "c.wav")
    np.testing.assert_allclose(y, [[0.0, 1.0, -1.0, 0.5]], atol=1e-4)
    write_audio(tmp_path / "f.wav", x, SR, subtype="FLOAT")
    np.testing.assert_array_equal(read_audio(tmp_path / "f.wav")[0], x)


def test_write_audio_refuses_existing_and_protect(tmp_path: Path) -> None:
    path = tmp_path / "o.wav"
    write_audio(path, _sine(), SR)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError):
        write_audio(path, _sine(freq=220.0), SR)
    assert path.read_bytes() == before
    write_audio(path, _sine(freq=220.0), SR, force=True)
    assert path.read_bytes() != before
    with pytest.raises(OutputError, match="input"):
        write_audio(path, _sine(), SR, force=True, protect=path)
    assert _entries(tmp_path) == ["o.wav"]


def test_write_audio_bad_suffix_subtype_and_values(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="unsupported output format"):
        write_audio(tmp_path / "o.mp3", _sine(), SR)
    with pytest.raises(AudioError, match="subtype"):
        write_audio(tmp_path / "o.flac", _sine(), SR, subtype="PCM_32")
    bad = _sine()
    bad[0, 3] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        write_audio(tmp_path / "o.wav", bad, SR)
    assert _entries(tmp_path) == []


def test_audio_writer_streams_blocks(tmp_path: Path) -> None:
    x = _sine(seconds=0.5)
    path = tmp_path / "s.flac"
    with AudioWriter(path, SR, 2, subtype="PCM_24") as w:
        for i in range(0, x.shape[1], 1000):
            w.write(x[:, i : i + 1000])
        assert not path.exists()  # only the hidden temp file exists until commit
    assert w.frames_written == x.shape[1]
    y, sr = read_audio(path)
    assert sr == SR
    np.testing.assert_allclose(y, x, atol=1e-6)
    assert _entries(tmp_path) == ["s.flac"]


def test_audio_writer_mono_1d_blocks(tmp_path: Path) -> None:
    x = _sine(channels=1)
    with AudioWriter(tmp_path / "m.wav", SR, 1, subtype="FLOAT") as w:
        w.write(x[0, :100])
        w.write(x[:, 100:])
    np.testing.assert_array_equal(read_audio(tmp_path / "m.wav")[0], x)


def test_audio_writer_leaves_nothing_on_exception(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    with pytest.raises(RuntimeError, match="decoder died"):
        with AudioWriter(path, SR, 2) as w:
            w.write(_sine())
            raise RuntimeError("decoder died")
    assert _entries(tmp_path) == []


def test_audio_writer_wrong_block_shape_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "existing.wav"
    write_audio(path, _sine(), SR)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="channels"):
        with AudioWriter(path, SR, 2, force=True) as w:
            w.write(_sine(channels=3))
    assert path.read_bytes() == before
    assert _entries(tmp_path) == ["existing.wav"]


def test_audio_writer_refusals(tmp_path: Path) -> None:
    path = tmp_path / "o.wav"
    write_audio(path, _sine(), SR)
    with pytest.raises(OutputExistsError):
        with AudioWriter(path, SR, 2):
            pytest.fail("body must not run")
    with pytest.raises(OutputError):
        with AudioWriter(path, SR, 2, force=True, protect=path):
            pytest.fail("body must not run")
    with pytest.raises(OutputError, match="does not exist"):
        with AudioWriter(tmp_path / "missing" / "o.wav", SR, 2):
            pytest.fail("body must not run")
    with pytest.raises(ValueError):
        AudioWriter(tmp_path / "x.wav", SR, 0)
    with pytest.raises(RuntimeError):
        AudioWriter(tmp_path / "x.wav", SR, 2).write(_sine())
    assert _entries(tmp_path) == ["o.wav"]


# -- streams -------------------------------------------------------------------------------------------------
class _Pipe:
    """A non-seekable byte stream that hands out at most `chunk` bytes per read, like a pipe."""

    def __init__(self, data: bytes, chunk: int = 4096) -> None:
        self.data, self.pos, self.chunk = data, 0, chunk

    def read(self, n: int = -1) -> bytes:
        n = self.chunk if n < 0 else min(n, self.chunk)
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


def _encoded(x: np.ndarray, sr: int, fmt: str, subtype: str, streamed: bool) -> bytes:
    """x (channels, n) as a file's bytes; `streamed`: a WAV whose sizes say 'unknown' (0xFFFFFFFF), as
    ffmpeg writes to a pipe."""
    import io

    buf = io.BytesIO()
    sf.write(buf, x.T, sr, format=fmt, subtype=subtype)
    data = bytearray(buf.getvalue())
    if streamed:
        assert fmt == "WAV" and data[:4] == b"RIFF"
        data[4:8] = b"\xff\xff\xff\xff"
        i = data.index(b"data")
        data[i + 4 : i + 8] = b"\xff\xff\xff\xff"
    return bytes(data)


@pytest.mark.parametrize("fmt,subtype,streamed", [("WAV", "PCM_16", False), ("WAV", "PCM_16", True),
                                                  ("WAV", "FLOAT", True), ("WAV", "PCM_24", False),
                                                  ("FLAC", "PCM_16", False), ("AIFF", "PCM_16", False)])
def test_audio_reader_from_a_pipe_equals_the_file(tmp_path, fmt, subtype, streamed):
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal((2, 300_000))).clip(-1, 1).astype(np.float32)  # > 1 MiB: past the kept head
    data = _encoded(x, 44100, fmt, subtype, streamed)
    path = tmp_path / "x.bin"
    path.write_bytes(data)
    with AudioReader(_Pipe(data)) as r:
        got = np.concatenate(list(r.blocks()), axis=1)
    ref, sr = sf.read(path, dtype="float32", always_2d=True) if not streamed else (None, 44100)
    if ref is None:  # libsndfile reads the streamed form from a file too; compare against the clean one
        clean = tmp_path / "clean.wav"
        clean.write_bytes(_encoded(x, 44100, fmt, subtype, False))
        ref, sr = sf.read(clean, dtype="float32", always_2d=True)
    assert r.sample_rate == sr == 44100 and r.channels == 2 and r.bytes_read == len(data)
    np.testing.assert_array_equal(got, ref.T)


def test_pipe_reader_memory_is_bounded():
    r = PipeReader(_Pipe(b"\x01" * (10 << 20), chunk=1 << 16), keep=1 << 16)
    while r.read(1 << 15):
        assert len(r.head) + len(r.tail) <= 3 << 16
    assert r.total == 10 << 20
    r.seek(5)
    assert r.read(3) == b"\x01\x01\x01"  # the head stays readable
    r.seek(5 << 20)
    with pytest.raises(OSError, match="cannot seek back"):
        r.read(1)


def test_audio_reader_errors():
    with pytest.raises(AudioError, match="standard input: not a readable audio stream.*WAV, AIFF or FLAC"):
        AudioReader(_Pipe(b"this is not audio" * 100))
    empty = _encoded(np.zeros((1, 0), np.float32), 44100, "WAV", "PCM_16", False)
    with pytest.raises(AudioError, match="no audio samples"):
        with AudioReader(_Pipe(empty)) as r:
            list(r.blocks())
    nan = _encoded(np.full((1, 10), np.nan, np.float32), 44100, "WAV", "FLOAT", False)
    with pytest.raises(AudioError, match="NaN"):
        with AudioReader(_Pipe(nan)) as r:
            list(r.blocks())


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_wav_stream_writer_equals_audio_writer(tmp_path, subtype):
    import io

    rng = np.random.default_rng(1)
    x = (0.5 * rng.standard_normal((3, 5000))).astype(np.float32)  # some samples clip
    with AudioWriter(tmp_path / "f.wav", 48000, 3, subtype=subtype) as w:
        w.write(x[:, :1234])
        w.write(x[:, 1234:])
    buf = io.BytesIO()
    w2 = WavStreamWriter(buf, 48000, 3, 5000, subtype)
    w2.write(x[:, :1000])
    w2.write(x[:, 1000:])
    assert w2.frames_written == 5000 and w2.bytes_written == len(buf.getvalue())
    a, sr_a = sf.read(tmp_path / "f.wav", dtype="float64")
    b, sr_b = sf.read(io.BytesIO(buf.getvalue()), dtype="float64")
    assert sr_a == sr_b == 48000
    np.testing.assert_array_equal(a, b)
    assert wav_header(48000, 3, 5000, subtype)[40:44] == (5000 * 3 * (2 if subtype == "PCM_16" else 3 if subtype == "PCM_24" else 4)).to_bytes(4, "little")
