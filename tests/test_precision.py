"""precision.autocast_dtype: explicit choices are obeyed, "auto" follows the hardware."""

import pytest
import torch

from m2lcodec import precision
from m2lcodec.codec import Codec
from m2lcodec.model import Music2Latent2, get_config
from m2lcodec.weights import ModelInfo


def test_explicit_precisions_are_obeyed():
    assert precision.autocast_dtype("fp32", "cpu") is None
    assert precision.autocast_dtype("bf16", "cpu") is torch.bfloat16


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.autocast_dtype("fp16x", "cpu")


@pytest.mark.parametrize("fast", [True, False])
def test_auto_on_cpu_uses_bf16_only_where_it_is_fast(monkeypatch, fast):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast)
    assert precision.autocast_dtype("auto", "cpu") is (torch.bfloat16 if fast else None)


def test_cpu_capability_probe_answers_a_bool():
    assert isinstance(precision.cpu_has_fast_bf16(), bool)


@pytest.mark.parametrize("fast", [True, False])
def test_codec_auto_precision_follows_the_probe(monkeypatch, fast):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast)
    model = Music2Latent2(get_config("tiny"))
    codec = Codec(model, ModelInfo(name="tiny", hash="0", config=model.config, metadata={}), precision="auto")
    assert codec.dtype is (torch.bfloat16 if fast else None)
