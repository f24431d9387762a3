"""Does the consistency model learn to read the latents? A fixed-batch probe (docs/training.md).

Trains a fresh model with plain MSE denoising at one noise level on a fixed batch of held-out crops,
with fresh noise every step, so the only way below the batch mean is through the latents. Prints the
error, the swap ratio (error with latents rolled across the batch / error with the true ones) and the
latents' spread across the batch every 20 steps. `--hinge W` adds the latent variance hinge (floor 0.3).

    python bench/studies/latent_use.py --val-data ~/m2l-corpus/val.txt --preset small --steps 100 --sigma 10 [--hinge 1.0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from m2lcodec.data import fixed_crops, list_audio
from m2lcodec.model import Music2Latent2, get_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val-data", required=True)
    ap.add_argument("--cache-dir", default=str(Path.home() / "m2l-cache"))
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--sigma", type=float, default=10.0)
    ap.add_argument("--hinge", type=float, default=0.0)
    args = ap.parse_args()
    torch.manual_seed(0)
    x = fixed_crops(list_audio(args.val_data), Path(args.cache_dir), 8)[..., :64][:, None]
    model = Music2Latent2(get_config(args.preset))
    opt = torch.optim.Adam(model.parameters(), args.lr)
    sigma = torch.full((8, 1), args.sigma)

    @torch.no_grad()
    def probe() -> tuple[float, float, float]:
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
        z = model.encode(x[:, 0])
        err = (model.denoise(x + args.sigma * noise, sigma, model.decoder_features(z)) - x).pow(2).mean()
        swapped = model.denoise(x + args.sigma * noise, sigma, model.decoder_features(z.roll(1, 0)))
        return float(err), float((swapped - x).pow(2).mean() / err), float(z.std(0).mean())

    print(f"silence {float(x.pow(2).mean()):.4f}  init mse/swap/spread {probe()}", flush=True)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z = model.encode(x[:, 0])
            y = model.denoise(x + args.sigma * torch.randn_like(x), sigma, model.decoder_features(z))
        loss = (y.float() - x).pow(2).mean()
        if args.hinge:
            loss = loss + args.hinge * torch.relu(0.3 - z.float().flatten(1).std(0)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0:
            mse, swap, spread = probe()
            print(f"step {step}: mse {mse:.4f} swap ratio {swap:.4f} spread {spread:.4f} ({time.time() - t0:.0f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
