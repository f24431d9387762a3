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
