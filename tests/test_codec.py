"""The Python API (m2lcodec.codec) around a tiny random model: shapes, exact lengths, determinism,
streaming, bytes and files, ranged decoding, model identity, bitrate, embeddings, untouched inputs.

A random model cannot reconstruct audio, so nothing here measures quality; what is checked is the
plumbing, which is the same whatever the weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil

import numpy as np
import pytest
import soundfile as sf

from conftest import file_digest, music_like
from m2lcodec import spectral
from m2lcodec.audio import AudioError, resample
from m2lcodec.codec import ModelMismatchError, load_codec, model_length
from m2lcodec.container import ContainerError, Reader, unpack, write_file
from m2lcodec.salvage import DamagedRange, gap_sample, restart_sample
from m2lcodec.atomic import OutputExistsError


def array_digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def stereo_latents(codec, stereo_audio):
    x, sr = stereo_audio
    return codec.encode(x, sr)


@pytest.fixture(scope="module")
def mono48_latents(codec, mono48_audio):
    y, sr = mono48_audio
    return codec.encode(y, sr)


# -- encoding -------------------------------------------------------------------------------------

def test_encode_shape_and_range(codec, stereo_audio, stereo_latents, mono48_audio, mono48_latents):
    x, sr = stereo_audio
    chunks = spectral.num_chunks(x.shape[1])
    assert stereo_latents.shape == (2, chunks, 8, 64)
    assert stereo_latents.dtype == np.float32
    assert np.all(np.abs(stereo_latents) < 1)
    y, sr48 = mono48_audio
    assert mono48_latents.shape == (1, spectral.num_chunks(model_length(y.shape[1], sr48)), 8, 64)
    assert np.all(np.abs(mono48_latents) < 1)


def test_encode_1d_equals_one_channel(codec, mono48_audio, mono48_latents):
    y, sr = mono48_audio
    np.testing.assert_array_equal(codec.encode(y[0], sr), mono48_latents)


def test_encode_channels_are_independent(codec, stereo_audio, stereo_latents):
    """Each channel is coded as a mono stream: channel 1 alone gives (nearly) its latents in the stereo batch."""
    x, sr = stereo_audio
    alone = codec.encode(x[1:], sr)
    np.testing.assert_allclose(alone[0], stereo_latents[1], atol=0.02)  # bf16 autocast: batch-size noise only


@pytest.mark.parametrize("bad", [np.zeros((1, 0), np.float32), np.full((1, 100), np.nan, np.float32),
                                 np.array([[0.0, np.inf]], np.float32), np.zeros((1, 2, 3), np.float32)])
def test_encode_rejects_bad_audio(codec, bad):
    with pytest.raises(AudioError):
        codec.encode(bad, 44100)


# -- decoding -------------------------------------------------------------------------------------

def test_decode_exact_length_stereo44(codec, stereo_audio, stereo_latents):
    x, sr = stereo_audio
    y = codec.decode(stereo_latents, x.shape[1], sr)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.isfinite(y).all()


def test_decode_exact_length_mono48(codec, mono48_audio, mono48_latents):
    x, sr = mono48_audio
    y = codec.decode(mono48_latents, x.shape[1], sr)
    assert y.shape == x.shape
    assert np.isfinite(y).all()


@pytest.mark.parametrize("n", [1, 1000, 32768 - 1536, 32768 - 1535])
def test_decode_exact_length_edges(codec, n):
    x = music_like(n / 44100, 44100, 1, seed=3)
    assert x.shape == (1, n)
    z = codec.encode(x, 44100)
    assert z.shape[1] == spectral.num_chunks(n)
    assert codec.decode(z, n, 44100).shape == (1, n)


def test_decode_default_length(codec, stereo_latents):
    y = codec.decode(stereo_latents)
    assert y.shape == (2, stereo_latents.shape[1] * spectral.CHUNK_SAMPLES - spectral.PAD_LEFT)


def test_decode_same_seed_bit_identical(codec, mono48_audio, mono48_latents):
    x, sr = mono48_audio
    a = codec.decode(mono48_latents, x.shape[1], sr, seed=7)
    b = codec.decode(mono48_latents, x.shape[1], sr, seed=7)
    assert array_digest(a) == array_digest(b)


def test_decode_other_seed_differs(codec, stereo_audio, stereo_latents):
    x, sr = stereo_audio
    a = codec.decode(stereo_latents, x.shape[1], sr, seed=0)
    b = codec.decode(stereo_latents, x.shape[1], sr, seed=1)
    assert a.shape == b.shape
    assert not np.array_equal(a, b)
    assert np.abs(a - b).max() > 1e-4


def test_noise_scale_of_the_starting_noise(codec, stereo_audio, stereo_latents):
    """noise_scale scales the first step's starting noise: 1 (the default for a file that does not say) is
    today's decode; 0 takes the noise out, so at sigma_cond 0 (no re-noising) the seed no longer matters;
    a negative scale is refused."""
    x, sr = stereo_audio
    assert codec.noise_scale == 1.0
    plain = codec.decode(stereo_latents, x.shape[1], sr, seed=0, sigma_cond=0.0)
    np.testing.assert_array_equal(codec.decode(stereo_latents, x.shape[1], sr, seed=0, sigma_cond=0.0,
                                               noise_scale=1.0), plain)
    half = codec.decode(stereo_latents, x.shape[1], sr, seed=0, sigma_cond=0.0, noise_scale=0.5)
    assert np.abs(half - plain).max() > 1e-5
    quiet = [codec.decode(stereo_latents, x.shape[1], sr, seed=s, sigma_cond=0.0, noise_scale=0.0) for s in (0, 1)]
    np.testing.assert_array_equal(quiet[0], quiet[1])
    with pytest.raises(ValueError, match="noise_scale"):
        codec.decode(stereo_latents, x.shape[1], sr, noise_scale=-0.5)


def test_noise_scale_from_the_weights_file(codec, tiny_weights, stereo_audio, tmp_path):
    """A weights file's noise_scale (export --noise-scale) is the codec's default; decompress can override it.
    The retagged file has the same hash, so the .m2l made with the original decodes with it."""
    from m2lcodec.weights import retag_weights

    x, sr = stereo_audio
    path = tmp_path / "quiet.safetensors"
    assert retag_weights(tiny_weights, path, {"noise_scale": "0.25"}) == codec.info.hash
    quiet = load_codec(path, device="cpu")
    assert quiet.noise_scale == 0.25
    data = codec.compress(x, sr)
    ours, _ = quiet.decompress(data)
    np.testing.assert_array_equal(ours, codec.decompress(data, noise_scale=0.25)[0])
    np.testing.assert_array_equal(quiet.decompress(data, noise_scale=1.0)[0], codec.decompress(data)[0])


def test_decode_stream_concatenation_equals_decode(codec, stereo_audio, stereo_latents, mono48_audio,
                                                   mono48_latents):
    for (x, sr), z in ((stereo_audio, stereo_latents), (mono48_audio, mono48_latents)):
        whole = codec.decode(z, x.shape[1], sr, seed=3, block_chunks=1000)
        blocks = list(codec.decode_stream(z, x.shape[1], sr, seed=3, block_chunks=1))
        assert len(blocks) >= z.shape[1] - 1  # really streamed, about one block per chunk
        assert all(b.shape[0] == x.shape[0] for b in blocks)
        np.testing.assert_array_equal(np.concatenate(blocks, axis=1), whole)


def test_decode_at_other_rate_is_resampled_model_rate_decode(codec, mono48_audio, mono48_latents):
    """The 48 kHz output is the 44.1 kHz decode resampled (streaming resampler == one-shot, up to rounding)."""
    x, sr = mono48_audio
    at_model = codec.decode(mono48_latents, model_length(x.shape[1], sr), 44100, seed=5)
    at_48k = codec.decode(mono48_latents, x.shape[1], sr, seed=5)
    ref = resample(at_model, 44100, sr)[:, : x.shape[1]]
    m = min(ref.shape[1], at_48k.shape[1])
    np.testing.assert_allclose(at_48k[:, :m], ref[:, :m], atol=1e-4 * max(1.0, float(np.abs(ref).max())))


# -- ranged decoding ------------------------------------------------------------------------------

@pytest.mark.parametrize("start,duration", [(0.0, 0.5), (0.3, 0.8), (0.7, None), (1.0, 0.33)])
def test_ranged_decode_is_slice_when_it_starts_from_chunk_0(codec, stereo_audio, stereo_latents, mono48_audio,
                                                            mono48_latents, start, duration):
    """A range whose warm-up chunk is chunk 0 runs exactly the same chunk steps (same noise, same
    features) as the full decode, so it must equal the corresponding slice of it exactly, at the model
    rate and at 48 kHz (the resampler then starts on a sample where both rates' grids meet)."""
    for (x, sr), z in ((stereo_audio, stereo_latents), (mono48_audio, mono48_latents)):
        n = x.shape[1]
        m_start = math.floor(round(start * sr) * 44100 / sr)
        assert (m_start + spectral.PAD_LEFT) // spectral.CHUNK_SAMPLES <= 1  # warm-up chunk is chunk 0
        full = codec.decode(z, n, sr, seed=2)
        part = codec.decode(z, n, sr, seed=2, start=start, duration=duration)
        a = round(start * sr)
        b = n if duration is None else a + round(duration * sr)
        assert part.shape == (x.shape[0], b - a)
        np.testing.assert_array_equal(part, full[:, a:b])


@pytest.mark.parametrize("start,duration", [(1.6, 0.3), (1.9, None), (1.55, 10.0)])
def test_ranged_decode_mid_file(codec, stereo_audio, stereo_latents, mono48_audio, mono48_latents, start,
                                duration):
    """Later ranges warm up on the chunk before them, decoded alone from noise instead of in a pair, so
    the result is a valid decode but not bit-equal to the full one in general (it is only when the
    model ignores the other chunk of a pair, as this random model nearly does): check length, rate
    and finiteness, and that the samples stay in the range of the full decode."""
    for (x, sr), z in ((stereo_audio, stereo_latents), (mono48_audio, mono48_latents)):
        n = x.shape[1]
        part = codec.decode(z, n, sr, seed=2, start=start, duration=duration)
        a = round(start * sr)
        b = n if duration is None else min(n, a + round(duration * sr))
        assert part.shape == (x.shape[0], b - a)
        assert np.isfinite(part).all()
        full = codec.decode(z, n, sr, seed=2)
        assert np.abs(part).max() <= 4 * np.abs(full).max() + 1e-6


def test_ranged_decompress_file(codec, stereo_wav, tmp_path):
    m2l = tmp_path / "a.m2l"
    codec.compress_file(stereo_wav, m2l)
    out = tmp_path / "part.wav"
    st = codec.decompress_file(m2l, out, start=0.4, duration=1.25)
    info = sf.info(str(out))
    assert (info.frames, info.samplerate, info.channels) == (round(1.25 * 44100), 44100, 2)
    assert st.duration == pytest.approx(1.25, abs=1e-4)
    with pytest.raises(ValueError, match="outside the file"):
        codec.decompress_file(m2l, tmp_path / "late.wav", start=100.0)
    assert not (tmp_path / "late.wav").exists()


# -- decoding with lost chunks (decompress --salvage) ---------------------------------------------

def warm_start(chunk: int, sr: int) -> int:
    """First output sample of a ranged decode (--start) that warms up on `chunk`: its own start lies in
    the next chunk, and at other rates 2048 model samples (the resampler's margin) later still."""
    m = (chunk + 1) * spectral.CHUNK_SAMPLES - spectral.PAD_LEFT
    if sr != 44100:
        m += 2048 + 147
    return math.ceil(m * sr / 44100)


@pytest.fixture(scope="module")
def mono48_long(codec):
    """Mono 48 kHz, 3.5 s (5 chunks: room for a ranged decode after a lost chunk 1) and its latents."""
    y = music_like(3.5, 48000, 1, seed=5)
    return (y, 48000), codec.encode(y, 48000)


@pytest.mark.parametrize("sigma_cond", [0.4, 0.0])
@pytest.mark.parametrize("which", ["stereo44", "mono48"])
def test_decode_with_lost_chunks(codec, stereo_audio, stereo_latents, mono48_long, which, sigma_cond):
    """Chunk 1 lost: before it the decode is the undamaged one (bit for bit at 44.1 kHz; at other rates the
    resampler's filter reaches a little into the samples before the gap), its time is silence, then the
    decode restarts on chunk 2 exactly as a ranged decode warming up on chunk 2 does."""
    (x, sr), z = (stereo_audio, stereo_latents) if which == "stereo44" else mono48_long
    n = x.shape[1]
    damaged = z.copy()
    damaged[:, 1] = 0.0  # what a salvaging reader gives for lost chunks: never decoded
    clean = codec.decode(z, n, sr, seed=2, sigma_cond=sigma_cond)
    salvaged = codec.decode(damaged, n, sr, seed=2, sigma_cond=sigma_cond, lost=[(1, 2)])
    assert salvaged.shape == clean.shape == x.shape
    gap, restart = gap_sample(1, sr), restart_sample(2, sr)[1]
    reach = 0 if sr == 44100 else 200  # output samples of the resampler's filter next to the gap
    np.testing.assert_array_equal(salvaged[:, : gap - reach], clean[:, : gap - reach])
    np.testing.assert_allclose(salvaged[:, gap - reach : gap], clean[:, gap - reach : gap], atol=1e-3)
    assert not salvaged[:, gap:restart].any()
    start = warm_start(2, sr)
    assert start < n
    ranged = codec.decode(z, n, sr, seed=2, sigma_cond=sigma_cond, start=start / sr)
    np.testing.assert_array_equal(salvaged[:, start:], ranged)
    assert np.isfinite(salvaged).all() and np.abs(salvaged[:, restart:start]).max() > 0  # the warm-up chunk
    # a range of a salvaged decode is that range of the whole one
    part = codec.decode(damaged, n, sr, seed=2, sigma_cond=sigma_cond, lost=[(1, 2)], start=0.5, duration=1.0)
    a = round(0.5 * sr)
    np.testing.assert_array_equal(part[:, : gap - a - reach], salvaged[:, a : gap - reach])
    assert not part[:, gap - a : restart - a].any()


def test_decode_with_lost_first_and_last_chunks(codec, stereo_audio, stereo_latents):
    x, sr = stereo_audio
    n, z = x.shape[1], stereo_latents
    salvaged = codec.decode(z, n, sr, seed=2, lost=[(0, 1), (3, 4)])
    assert salvaged.shape == x.shape
    assert not salvaged[:, : restart_sample(1, sr)[1]].any() and not salvaged[:, gap_sample(3, sr) :].any()
    ranged = codec.decode(z, n, sr, seed=2, start=warm_start(1, sr) / sr)
    stop = gap_sample(3, sr)
    np.testing.assert_array_equal(salvaged[:, warm_start(1, sr) : stop], ranged[:, : stop - warm_start(1, sr)])
    assert not codec.decode(z, n, sr, lost=[(0, 4)]).any()


def test_decompress_file_salvage(codec, stereo_audio, tmp_path):
    """A file of 4 one-chunk frames with frame 1 overwritten: refused without salvage (no output left),
    salvaged with it: the original length, silence for frame 1, the damage in the stats."""
    x, sr = stereo_audio
    z = codec.encode(x, sr)
    header = dataclasses.replace(codec.make_header(z, x.shape[1], sr, "int8", 5, None), frame_chunks=1)
    good, bad = tmp_path / "good.m2l", tmp_path / "bad.m2l"
    write_file(good, header, z)
    with Reader.open(good) as r:
        offsets = r.frame_offsets
    data = bytearray(good.read_bytes())
    data[offsets[1] + 8 : offsets[2]] = np.random.default_rng(0).bytes(offsets[2] - offsets[1] - 8)
    bad.write_bytes(bytes(data))
    with pytest.raises(ContainerError, match="corrupt frame 1"):
        codec.decompress_file(bad, tmp_path / "refused.wav")
    assert not (tmp_path / "refused.wav").exists()
    st = codec.decompress_file(bad, tmp_path / "out.wav", salvage=True)
    assert st.damaged == [DamagedRange(gap_sample(1, sr), restart_sample(2, sr)[1], sr, "frame 1",
                                       f"CRC mismatch at byte {offsets[1]}")] and st.notes == []
    assert st.damaged[0].describe() == f"damaged: 0.71-1.49 s (frame 1; CRC mismatch at byte {offsets[1]})"
    y, out_sr = sf.read(str(tmp_path / "out.wav"), dtype="int16", always_2d=True)
    assert out_sr == sr and y.shape == x.T.shape
    assert not y[gap_sample(1, sr) : restart_sample(2, sr)[1]].any()
    clean = codec.decompress_file(good, tmp_path / "clean.wav", salvage=True)  # an intact file: no report
    assert clean.damaged == [] and clean.notes == []


# -- bytes ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("quant,tol", [("int8", 0.5 / 127 + 1e-6), ("fp16", 1e-3)])
def test_compress_decompress_bytes(codec, stereo_audio, stereo_latents, quant, tol):
    x, sr = stereo_audio
    data = codec.compress(x, sr, quant=quant, seed=11, sigma_cond=0.3)
    header, latents = unpack(data)
    assert header.sample_rate == sr and header.model_sample_rate == 44100
    assert header.channels == 2 and header.num_samples == x.shape[1]
    assert header.num_chunks == stereo_latents.shape[1]
    assert (header.num_latents, header.latent_dim) == (8, 64)
    assert header.quant == quant and header.seed == 11 and header.sigma_cond == pytest.approx(0.3)
    assert header.model_hash == codec.info.hash and header.model_name == codec.info.name
    assert header.encoder.startswith("m2lcodec ")
    np.testing.assert_allclose(latents, stereo_latents, atol=tol)
    y, out_sr = codec.decompress(data)
    assert out_sr == sr and y.shape == x.shape and np.isfinite(y).all()
    # the stored seed and sigma_cond are what decompress uses by default
    ref = codec.decode(latents, x.shape[1], sr, seed=11, sigma_cond=0.3)
    np.testing.assert_array_equal(y, ref)
    y2, _ = codec.decompress(data, seed=12)
    assert not np.array_equal(y, y2)


def test_compress_mono48_bytes(codec, mono48_audio):
    x, sr = mono48_audio
    y, out_sr = codec.decompress(codec.compress(x[0], sr))  # 1-D input: one channel
    assert out_sr == sr and y.shape == x.shape


def test_model_mismatch(codec, other_weights, stereo_audio, tmp_path):
    other = load_codec(other_weights, device="cpu")
    assert other.info.hash != codec.info.hash
    x, sr = stereo_audio
    data = other.compress(x[:, :20000], sr)
    with pytest.raises(ModelMismatchError, match="--model"):
        codec.decompress(data)
    src = tmp_path / "other.m2l"
    src.write_bytes(data)
    with pytest.raises(ModelMismatchError):
        codec.decompress_file(src, tmp_path / "out.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.m2l"]


def test_decompress_rejects_garbage(codec):
    for data in (b"", b"RIFF0000WAVE", b"M2L\x00\x01"):
        with pytest.raises(ContainerError):
            codec.decompress(data)


# -- files ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["stereo44.wav", "mono48.wav"])
def test_compress_decompress_file(codec, audio_dir, tmp_path, name):
    src = audio_dir / name
    before = file_digest(src)
    info_in = sf.info(str(src))
    m2l = tmp_path / "x.m2l"
    st = codec.compress_file(src, m2l, quant="fp16", seed=4)
    assert m2l.is_file() and st.output_bytes == m2l.stat().st_size
    assert st.duration == pytest.approx(info_in.frames / info_in.samplerate)
    with Reader.open(m2l) as r:
        h = r.header
    assert (h.sample_rate, h.channels, h.num_samples, h.quant, h.seed) == (
        info_in.samplerate, info_in.channels, info_in.frames, "fp16", 4)
    out = tmp_path / "y.wav"
    st2 = codec.decompress_file(m2l, out)
    info_out = sf.info(str(out))
    assert (info_out.frames, info_out.samplerate, info_out.channels) == (
        info_in.frames, info_in.samplerate, info_in.channels)
    assert st2.output_bytes == out.stat().st_size
    # file decode (streamed from the container, written block by block) == in-memory decode
    audio, sr = sf.read(str(out), dtype="float32", always_2d=True)
    ref, _ = codec.decompress(m2l.read_bytes())
    np.testing.assert_allclose(audio.T, np.clip(ref, -1, 1), atol=1.0 / 32768 + 1e-6)
    # no overwrite without force, inputs untouched, no temporaries left
    with pytest.raises(OutputExistsError):
        codec.compress_file(src, m2l)
    codec.compress_file(src, m2l, force=True)
    assert file_digest(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.m2l", "y.wav"]


def test_compress_file_never_overwrites_input(codec, stereo_wav, tmp_path):
    src = tmp_path / "in.wav"
    shutil.copy(stereo_wav, src)
    before = file_digest(src)
    with pytest.raises(Exception):
        codec.compress_file(src, src, force=True)
    assert file_digest(src) == before


# -- bitrate --------------------------------------------------------------------------------------

@pytest.mark.parametrize("quant,max_kbps", [("int8", 6.0), ("fp16", 12.0)])
def test_bitrate_10s_mono(codec, tmp_path, quant, max_kbps):
    x = music_like(10.0, 44100, 1, seed=4)
    src = tmp_path / "ten.wav"
    sf.write(src, x.T, 44100, subtype="PCM_16")
    dst = tmp_path / "ten.m2l"
    codec.compress_file(src, dst, quant=quant)
    kbps = dst.stat().st_size * 8 / 10.0 / 1000  # whole file: preamble, header, frame prefixes included
    assert kbps <= max_kbps, f"{quant}: {kbps:.2f} kbps"


# -- embeddings -----------------------------------------------------------------------------------

def test_embed_shape(codec, stereo_audio, mono48_audio):
    x, sr = stereo_audio
    cfg = codec.info.config
    e = codec.embed(x, sr)
    assert e.shape == (2, cfg.num_latents * cfg.width) and e.dtype == np.float32
    assert np.isfinite(e).all()
    y, sr48 = mono48_audio
    assert codec.embed(y, sr48).shape == (1, cfg.num_latents * cfg.width)


# -- inputs are never modified ---------------------------------------------------------------------

def test_inputs_not_modified(codec, stereo_audio, stereo_latents):
    x, sr = stereo_audio
    xc, zc = x.copy(), stereo_latents.copy()
    hx, hz = array_digest(x), array_digest(stereo_latents)
    data = codec.compress(x, sr)
    codec.encode(x, sr)
    codec.embed(x, sr)
    codec.decode(stereo_latents, x.shape[1], sr)
    list(codec.decode_stream(stereo_latents, x.shape[1], 48000, start=0.5, duration=0.5))
    hd = hashlib.sha256(data).hexdigest()
    codec.decompress(data)
    assert array_digest(x) == hx and array_digest(stereo_latents) == hz
    np.testing.assert_array_equal(x, xc)
    np.testing.assert_array_equal(stereo_latents, zc)
    assert hashlib.sha256(data).hexdigest() == hd


def test_load_codec_default_device_and_missing_weights(tmp_path):
    from m2lcodec.weights import WeightsError

    with pytest.raises(WeightsError):
        load_codec(tmp_path / "missing.safetensors", device="cpu")


@pytest.mark.parametrize("sr,seconds,block", [(44100, 2.5, 777), (44100, 0.01, 50), (48000, 2.0, 4096)])
def test_encode_blocks_streams_the_same_latents(codec, sr, seconds, block):
    """The streaming encode (pipes, long files) holds latents only and gives `encode`'s latents: exactly at
    the model rate and at others (StreamResampler's output equals `resample` of the whole)."""
    x = music_like(seconds, sr, 2, seed=5)
    ref = codec.encode(x, sr)
    got, n = codec.encode_blocks((x[:, i : i + block] for i in range(0, x.shape[1], block)), sr)
    assert n == x.shape[1] and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)


def test_encode_blocks_rejects_empty_and_nan(codec):
    with pytest.raises(AudioError, match="at least one sample"):
        codec.encode_blocks(iter([]), 44100)
    with pytest.raises(AudioError, match="NaN"):
        codec.encode_blocks(iter([np.full((1, 10), np.nan, np.float32)]), 44100)
