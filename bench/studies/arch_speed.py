"""Training-step and decode-step time of architecture candidates (docs/architecture.md, small's channels).

For each candidate (overrides of the `small` preset): one training step at batch 8 (bf16 autocast, RAdam,
denoising phase) and one consistency-model pair evaluation for 2 channels (bf16, channels-last, inference
mode) plus the decoder's features, and from those an estimate of the model time of a 60 s stereo decode
(82 pair steps). Random weights: speed does not depend on them. Run it with nothing else on the machine.

    python bench/studies/arch_speed.py
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from m2lcodec.model import Music2Latent2, get_config
from m2lcodec.train import ConsistencyLoss

BASE = get_config("small")
CANDIDATES = {
    "32/64/128/128 stem 4x2": replace(BASE, channels=(32, 64, 128, 128)),
    "16/32/64/128 stem 4x2": replace(BASE, channels=(16, 32, 64, 128)),
    "32/64/128/128 stem 4x4": replace(BASE, channels=(32, 64, 128, 128), stem=(4, 4), down=((2, 2), (2, 2), (2, 1))),
    "24/48/96/128 stem 4x4": replace(BASE, channels=(24, 48, 96, 128), stem=(4, 4), down=((2, 2), (2, 2), (2, 1))),
}
PAIR_STEPS_60S = 82  # chunks in 60 s at 44.1 kHz (+1 for the last chunk's second step)


def main() -> None:
    channels = 2
    for name, cfg in CANDIDATES.items():
        torch.manual_seed(0)
        model = Music2Latent2(cfg)
        params = sum(p.numel() for p in model.parameters())
        loss_fn = ConsistencyLoss(model, weighting="clamped")
        opt = torch.optim.RAdam(model.parameters(), 1e-4)
        spec = torch.randn(8, 2, 1024, 128) * 0.3
        for i in range(4):  # the first step is a warm-up
            if i == 1:
                t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss, _ = loss_fn(spec, 1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        train = (time.perf_counter() - t) / 3
        model = model.eval().to(memory_format=torch.channels_last)
        x = torch.randn(channels, 2, 2, 1024, 64)
        sigma = torch.tensor([0.4, 80.0]).expand(channels, 2)
        z = torch.rand(channels * 2, 8, 64) * 2 - 1
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            t = time.perf_counter()
            for _ in range(5):
                feats = model.decoder_features(z)
            decoder = (time.perf_counter() - t) / 5 / 2  # per chunk position (both channels)
            for _ in range(3):
                model.denoise(x, sigma, feats)
            t = time.perf_counter()
            for _ in range(10):
                model.denoise(x, sigma, feats)
            pair = (time.perf_counter() - t) / 10
        print(f"{name:24s} {params / 1e6:5.2f}M  train {train:.2f} s/step  pair {pair * 1000:5.1f} ms  "
              f"decoder {decoder * 1000:5.1f} ms  est. 60 s stereo decode {PAIR_STEPS_60S * (pair + decoder):.2f} s",
              flush=True)


if __name__ == "__main__":
    main()
