"""The codec's weight files: fp16 safetensors carrying the model config and a content hash.

safetensors (not pickle) so loading a file from anywhere is safe. The hash is over the tensors' names,
shapes and bytes in sorted order: two files with the same weights have the same identity, which the
.m2l container records so a file is never decoded with another model. The default model ships in
m2lcodec/weights/default.safetensors.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save as tensors_to_bytes
from safetensors import safe_open

from m2lcodec.atomic import atomic_output
from m2lcodec.model import ModelConfig, Music2Latent2, get_config

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "default.safetensors"


class WeightsError(ValueError):
    """A weights file that is missing, unreadable or not an m2lcodec model (one-line message)."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    hash: str
    config: ModelConfig
    metadata: dict[str, str]


def content_hash(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode() + str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def decode_metadata(sigma_cond: float | None = None, deblock: float | None = None,
                    noise_scale: float | None = None) -> dict[str, str]:
    """The decode parameters a weights file carries (m2lcodec.codec.decode_defaults reads them), as
    safetensors metadata; None = not set (the codec's default)."""
    given = {"sigma_cond": sigma_cond, "deblock": deblock, "noise_scale": noise_scale}
    return {k: str(v) for k, v in given.items() if v is not None}


def _write(path: Path, state: dict[str, torch.Tensor], meta: dict[str, str], protect: Path | None = None) -> None:
    """safetensors file written atomically (m2lcodec.atomic), over an existing `path`, never over `protect`."""
    data = tensors_to_bytes(state, metadata=meta)  # not save_file: it recreates tmp with mode 0600
    with atomic_output(path, force=True, protect=protect) as tmp:
        tmp.write_bytes(data)


def save_weights(path: Path, cfg: ModelConfig, state: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None, name: str | None = None) -> str:
    """Write fp16 weights atomically; returns the content hash."""
    half = {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()).contiguous()
            for k, v in state.items()}
    digest = content_hash(half)
    meta = {"format": "m2lcodec-weights-1", "config": json.dumps(cfg.to_dict()), "hash": digest,
            "name": name or cfg.name, **(metadata or {})}
    _write(Path(path), half, meta)
    return digest


def retag_weights(src: Path, dst: Path, metadata: dict[str, str], name: str | None = None) -> str:
    """Copy a weights file with some metadata changed (decode parameters, name): the same tensors, so the
    same hash, and .m2l files made with `src` decode with `dst`. Written atomically, never over `src`;
    returns the hash."""
    info = read_info(src)
    state = load_file(str(src))
    if content_hash(state) != info.hash:
        raise WeightsError(f"{src}: its tensors do not match its own hash (damaged?)")
    _write(Path(dst), state, {**info.metadata, **metadata, **({"name": name} if name else {})}, protect=Path(src))
    return info.hash


def read_info(path: Path) -> ModelInfo:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (OSError, SafetensorError) as err:
        raise WeightsError(f"cannot read model weights {path}: {err}") from None
    if meta.get("format") != "m2lcodec-weights-1":
        raise WeightsError(f"{path} is not an m2lcodec weights file")
    try:
        cfg = ModelConfig.from_dict(json.loads(meta["config"]))
        digest = meta["hash"]
    except (KeyError, TypeError, ValueError) as err:  # a damaged or hand-made file: still one clean line
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise WeightsError(f"{path} has an invalid m2lcodec model description ({reason})") from None
    return ModelInfo(meta.get("name", cfg.name), digest, cfg, meta)


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[Music2Latent2, ModelInfo]:
    """Load a weights file (default: the bundled model) as a float32 model in eval mode."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise WeightsError(f"model weights not found: {path}")
    info = read_info(path)
    state = load_file(str(path))
    model = Music2Latent2(info.config)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as err:
        raise WeightsError(f"{path} does not match its own config: {str(err).splitlines()[0]}") from None
    return model.to(device).eval(), info


def model_from_preset_or_file(spec: str) -> tuple[Music2Latent2, ModelConfig, str]:
    """For model-info: a preset name gives a fresh model; otherwise a weights or checkpoint file."""
    if Path(spec).is_file():
        if spec.endswith(".pt"):
            state = torch.load(spec, map_location="cpu", weights_only=True)
            cfg = ModelConfig.from_dict(state["model_config"])
            return Music2Latent2(cfg), cfg, spec
        model, info = load_model(spec)
        return model, info.config, spec
    cfg = get_config(spec)
    return Music2Latent2(cfg), cfg, f"preset {spec}"
