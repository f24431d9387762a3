"""Training-step speed on this CPU: eager vs torch.compile (inductor), and thread counts (docs/training.md,
"Throughput"). Run it with nothing else on the machine.

    python bench/studies/train_speed.py [--preset small] [--steps 8] [--threads 1,2] [--modes eager,compile]
        [--precisions auto,bf16,fp32]

Each (mode, threads) cell: a fresh model from seed 0, the long run's loss (TrainConfig defaults plus the
first-step reconstruction term), RAdam, batch 8 of random spectrograms, bf16 autocast or fp32; warm-up steps
(compilation included, timed apart), then `--steps` timed steps. Prints s/step and steps/s per cell.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from m2lcodec.model import Music2Latent2, get_config
from m2lcodec.precision import autocast, autocast_dtype
from m2lcodec.train import ConsistencyLoss, TrainConfig


def time_cell(preset: str, mode: str, threads: int, steps: int, warmup: int, batch: int, recon: float,
              precision: str = "bf16") -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = TrainConfig(recon_weight=recon)
    model = Music2Latent2(get_config(preset))
    loss_fn = ConsistencyLoss.from_config(model, cfg)
    step_fn = torch.compile(loss_fn) if mode == "compile" else loss_fn
    opt = torch.optim.RAdam(model.parameters(), lr=1e-4)
    spec = torch.randn(batch, 2, 1024, 128) * 0.3
    dtype = autocast_dtype(precision, "cpu")

    def one() -> None:
        with autocast("cpu", dtype):
            loss, _ = step_fn(spec, 1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(warmup):
        one()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    per_step = (time.perf_counter() - t0) / steps
    return {"mode": mode, "precision": precision, "threads": threads, "warmup_s": round(warm, 1),
            "s_per_step": round(per_step, 3), "steps_per_s": round(1 / per_step, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--recon-weight", type=float, default=1.0)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--modes", default="eager,compile")
    ap.add_argument("--precisions", default="bf16", help="comma list of auto, bf16, fp32 (m2lcodec/precision.py)")
    args = ap.parse_args()
    for precision in args.precisions.split(","):
        for mode in args.modes.split(","):
            for threads in (int(t) for t in args.threads.split(",")):
                print(json.dumps(time_cell(args.preset, mode, threads, args.steps, args.warmup, args.batch_size,
                                           args.recon_weight, precision)), flush=True)


if __name__ == "__main__":
    main()
