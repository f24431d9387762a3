"""Tests for m2lcodec.audio: reading, resampling and atomic writing of audio files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from m2lcodec.atomic import OutputError, OutputExistsError
from m2lcodec.audio import (
    AudioError,
    AudioWriter,
    StreamResampler,
    audio_info,
    read_audio,
    resample,
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
