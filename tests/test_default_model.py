"""End-to-end with the shipped default model and the bundled example clip."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from m2lcodec.codec import load_codec
from m2lcodec.weights import DEFAULT_WEIGHTS, read_info

CLIP = Path(__file__).parent.parent / "m2lcodec" / "examples" / "arctic_breeze_excerpt.flac"


@pytest.fixture(scope="module")
def codec():
    return load_codec(device="cpu")


def test_default_weights_are_small_fp16_with_identity():
    info = read_info(DEFAULT_WEIGHTS)
    assert DEFAULT_WEIGHTS.stat().st_size < 30e6
    assert len(info.hash) == 16 and info.config.name == "small"


def test_example_clip_round_trip(codec, tmp_path):
    src_info = sf.info(str(CLIP))
    assert src_info.channels == 2 and src_info.samplerate == 44100
    stats = codec.compress_file(CLIP, tmp_path / "x.m2l", quant="int8")
    assert stats.output_bytes * 8 / stats.duration / 1000 / 2 <= 6.0  # kbps per channel, header included
    codec.decompress_file(tmp_path / "x.m2l", tmp_path / "a.wav")
    codec.decompress_file(tmp_path / "x.m2l", tmp_path / "b.wav")
    a, sr = sf.read(str(tmp_path / "a.wav"), dtype="int16")
    b, _ = sf.read(str(tmp_path / "b.wav"), dtype="int16")
    assert sr == 44100 and a.shape == (src_info.frames, 2)
    assert np.array_equal(a, b)  # same file + same seed -> identical output
    assert np.abs(a).max() > 0  # the model produced sound, not silence


def test_shipped_deblocking_smooths_the_seams(codec):
    """The shipped weights carry deblocking (0.4 since session 28): on the example clip (mono mix, 10 s,
    13 seams) the mean level step across the seams (10 ms windows either side of the overlap, as
    bench/seams.py measures) is smaller than with --deblock 0, and the rest of the decode is unchanged."""
    from m2lcodec import spectral

    assert 0 < codec.deblock <= 1
    audio, sr = sf.read(str(CLIP), dtype="float32", always_2d=True)
    mono = audio.T.mean(axis=0, keepdims=True)
    data = codec.compress(mono, sr)
    on, _ = codec.decompress(data)
    off, _ = codec.decompress(data, deblock=0.0)
    w = int(0.010 * sr)

    def seam_steps(x: np.ndarray) -> np.ndarray:
        steps = []
        for b in range(spectral.CHUNK_SAMPLES - spectral.PAD_LEFT, x.shape[1] - 2 * spectral.PAD_LEFT,
                       spectral.CHUNK_SAMPLES):
            before = x[0, b - w:b]
            after = x[0, b + spectral.PAD_LEFT:b + spectral.PAD_LEFT + w]
            steps.append(10 * np.log10((after ** 2).mean() + 1e-12) - 10 * np.log10((before ** 2).mean() + 1e-12))
        return np.abs(np.array(steps))

    assert seam_steps(on).mean() < 0.8 * seam_steps(off).mean()
    # mid-chunk samples, beyond the 8-frame ramps on either side of every seam, are untouched
    mid = slice(spectral.CHUNK_SAMPLES + 4096 + 2048, 2 * spectral.CHUNK_SAMPLES - 4096 - 2048)
    np.testing.assert_array_equal(on[:, mid], off[:, mid])
