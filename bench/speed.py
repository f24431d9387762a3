"""Encode / decode speed of a model on synthetic-free real audio, in process (docs/architecture.md).

    python bench/speed.py --audio song.wav --seconds 60 [--preset small | --model W.safetensors] [--precision auto|bf16|fp32]

Random weights are fine for speed (a preset gives a freshly initialised model). Prints seconds and x real
time for encoding and for the two-step autoregressive decode of the whole clip (all channels batched).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from m2lcodec.audio import read_audio
from m2lcodec.codec import Codec
from m2lcodec.model import ModelConfig, Music2Latent2, get_config
from m2lcodec.weights import ModelInfo, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audio", required=True)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--config-json", default=None, help="a ModelConfig as JSON, instead of a preset")
    ap.add_argument("--model", default=None)
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                    help="auto = what the codec picks on this machine (m2lcodec/precision.py)")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    audio, sr = read_audio(args.audio)
    audio = audio[:, : int(args.seconds * sr)]
    seconds = audio.shape[1] / sr
    if args.model:
        model, info = load_model(args.model)
    else:
        import json

        cfg = ModelConfig.from_dict(json.loads(args.config_json)) if args.config_json else get_config(args.preset or "small")
        torch.manual_seed(0)
        model, info = Music2Latent2(cfg).eval(), ModelInfo(cfg.name, "0" * 16, cfg, {})
    codec = Codec(model, info, "cpu", precision=args.precision)
    codec.decode(codec.encode(audio[:, : sr * 2], sr), sr * 2, sr)  # warm-up
    for _ in range(args.repeats):
        t = time.perf_counter()
        latents = codec.encode(audio, sr)
        enc = time.perf_counter() - t
        t = time.perf_counter()
        out = codec.decode(latents, audio.shape[1], sr)
        dec = time.perf_counter() - t
        assert out.shape == audio.shape and np.isfinite(out).all()
        used = "bf16" if codec.dtype is not None else "fp32"
        print(f"{info.name} {args.precision} ({used}) {audio.shape[0]} ch x {seconds:.1f} s: encode {enc:.2f} s "
              f"({seconds / enc:.0f}x real time), decode {dec:.2f} s ({seconds / dec:.1f}x real time), "
              f"threads {torch.get_num_threads()}", flush=True)


if __name__ == "__main__":
    main()
