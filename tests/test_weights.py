"""Weight files: fp16 safetensors with config and content hash; clean errors for anything else."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from m2lcodec.atomic import OutputError
from m2lcodec.model import ModelConfig, Music2Latent2, get_config
from m2lcodec.weights import WeightsError, content_hash, load_model, read_info, retag_weights, save_weights


@pytest.fixture(scope="module")
def tiny_model() -> Music2Latent2:
    torch.manual_seed(0)
    return Music2Latent2(get_config("tiny"))


def test_save_load_round_trip(tiny_model, tmp_path):
    path = tmp_path / "w.safetensors"
    digest = save_weights(path, tiny_model.config, tiny_model.state_dict(), metadata={"sigma_cond": "0.3"},
                          name="my-tiny")
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary left
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # the usual permissions, not a temp file's 0600
    model, info = load_model(path)
    assert info.hash == digest and info.name == "my-tiny" and info.config == tiny_model.config
    assert info.metadata["sigma_cond"] == "0.3"
    assert not model.training
    ref = tiny_model.state_dict()
    got = model.state_dict()
    assert set(got) == set(ref)
    for k, v in ref.items():
        assert got[k].dtype == v.dtype  # float32 again after loading
        if v.is_floating_point():
            torch.testing.assert_close(got[k], v.half().float(), rtol=0, atol=0)  # exactly the fp16 values
        else:
            assert torch.equal(got[k], v)
    with safe_open(str(path), framework="pt") as f:
        assert all(f.get_tensor(k).dtype in (torch.float16, torch.int64, torch.bool) for k in f.keys())
        assert ModelConfig.from_dict(json.loads(f.metadata()["config"])) == tiny_model.config
    assert read_info(path).hash == digest


def test_retag_keeps_tensors_and_hash(tiny_weights, tmp_path):
    """retag_weights changes metadata only: same tensors, same hash, other keys kept; it never writes over
    its input, and a file whose tensors no longer match its hash is refused."""
    dst = tmp_path / "r.safetensors"
    digest = retag_weights(tiny_weights, dst, {"deblock": "0.4", "noise_scale": "0.5"}, name="renamed")
    before, after = read_info(tiny_weights), read_info(dst)
    assert digest == before.hash == after.hash and after.name == "renamed"
    assert after.metadata["deblock"] == "0.4" and after.metadata["noise_scale"] == "0.5"
    assert after.metadata["config"] == before.metadata["config"]
    a, b = load_model(tiny_weights)[0].state_dict(), load_model(dst)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [p.name for p in tmp_path.iterdir()] == ["r.safetensors"]  # no temporary left
    with pytest.raises(OutputError, match="refusing to overwrite input file"):
        retag_weights(dst, dst, {"deblock": "0"})
    assert read_info(dst).metadata["deblock"] == "0.4"
    state = {k: v.clone() for k, v in load_model(dst)[0].state_dict().items()}
    key = next(iter(state))
    state[key] = state[key] + 1
    save_file({k: v.half() for k, v in state.items()}, str(tmp_path / "bad.safetensors"),
              metadata=read_info(dst).metadata)
    with pytest.raises(WeightsError, match="do not match its own hash"):
        retag_weights(tmp_path / "bad.safetensors", tmp_path / "x.safetensors", {})
    assert not (tmp_path / "x.safetensors").exists()


def test_loaded_model_computes_the_same(tiny_model, tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, tiny_model.config, tiny_model.state_dict())
    model, _ = load_model(path)
    x = torch.randn(2, 2, 1024, 64, generator=torch.Generator().manual_seed(0))
    ref = Music2Latent2(tiny_model.config)
    ref.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                         for k, v in tiny_model.state_dict().items()})
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x), ref.eval().encode(x))


def test_hash_deterministic_and_sensitive(tiny_model, tmp_path):
    state = tiny_model.state_dict()
    a = save_weights(tmp_path / "a.safetensors", tiny_model.config, state)
    b = save_weights(tmp_path / "b.safetensors", tiny_model.config, state, name="other name")
    assert a == b  # identity is the weights, not the file name or the model name
    assert len(a) == 16 and int(a, 16) >= 0
    assert content_hash({k: v.half() for k, v in state.items()}) == a
    changed = {k: v.clone() for k, v in state.items()}
    key = next(k for k, v in changed.items() if v.is_floating_point() and v.numel() > 1)
    changed[key].view(-1)[0] += 0.5
    c = save_weights(tmp_path / "c.safetensors", tiny_model.config, changed)
    assert c != a
    renamed = dict(state)
    renamed["extra.buffer"] = torch.zeros(1)
    assert content_hash(renamed) != content_hash(state)


def test_other_seed_other_hash(tiny_weights, other_weights):
    assert read_info(tiny_weights).hash != read_info(other_weights).hash


def test_non_weights_files(tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, not weights at all\n")
    with pytest.raises(WeightsError, match="cannot read model weights"):
        load_model(text)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError):
        load_model(empty)
    # a valid safetensors file that is not an m2lcodec model
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(WeightsError, match="not an m2lcodec weights file"):
        load_model(foreign)
    # m2lcodec metadata but tensors that do not fit the config
    bad = tmp_path / "bad.safetensors"
    save_weights(bad, get_config("tiny"), {"w": torch.zeros(3)})
    with pytest.raises(WeightsError, match="does not match"):
        load_model(bad)


def test_missing_and_directory_paths(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(WeightsError):
        load_model(tmp_path)


def test_errors_are_one_line(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError) as info:
        load_model(p)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("meta", [
    {"format": "m2lcodec-weights-1"},  # no config, no hash
    {"format": "m2lcodec-weights-1", "config": "{not json", "hash": "ab"},
    {"format": "m2lcodec-weights-1", "config": '{"name": "x", "width": 7}', "hash": "ab"},
    {"format": "m2lcodec-weights-1", "config": '{"name": "x", "stem": [3, 3], "channels": [8], "blocks": [1], '
                                               '"down": []}', "hash": "ab"},
])
def test_damaged_model_description(tmp_path, meta):
    p = tmp_path / "d.safetensors"
    save_file({"w": torch.zeros(3)}, str(p), metadata=meta)
    with pytest.raises(WeightsError) as info:
        load_model(p)
    assert "\n" not in str(info.value)


def test_truncated_weights_file(tiny_weights, tmp_path):
    p = tmp_path / "t.safetensors"
    p.write_bytes(tiny_weights.read_bytes()[:-100])
    with pytest.raises(WeightsError, match="cannot read model weights"):
        load_model(p)
