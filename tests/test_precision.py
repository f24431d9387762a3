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


def test_cpu_flags_need_a_native_bf16_instruction_set():
    avx512_only = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"
    assert not precision.cpu_flags_have_bf16(avx512_only)
    assert precision.cpu_flags_have_bf16(avx512_only.replace("avx512_vnni", "avx512_vnni avx512_bf16"))
    assert precision.cpu_flags_have_bf16("flags : fpu amx_tile amx_bf16\n")
    assert not precision.cpu_flags_have_bf16("model name : avx512_bf16 in a name, not a flag\n")


def test_cpu_probe_reads_the_flags_file(tmp_path):
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("oneDNN has no bf16 kernels here: the probe answers False before reading the flags")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags : fpu avx512f\n")
    assert precision.cpu_has_fast_bf16(cpuinfo) is False
    cpuinfo.write_text("flags : fpu avx512f avx512_bf16\n")
    assert precision.cpu_has_fast_bf16(cpuinfo) is True


def test_cpu_capability_probe_answers_a_bool():
    assert isinstance(precision.cpu_has_fast_bf16(), bool)


@pytest.mark.parametrize("fast", [True, False])
def test_codec_auto_precision_follows_the_probe(monkeypatch, fast):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast)
    model = Music2Latent2(get_config("tiny"))
    codec = Codec(model, ModelInfo(name="tiny", hash="0", config=model.config, metadata={}), precision="auto")
    assert codec.dtype is (torch.bfloat16 if fast else None)
