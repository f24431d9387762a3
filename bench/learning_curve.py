"""Learning curve of a training run: validation metrics vs step and vs compute, from RUN_DIR/log.jsonl.

    python bench/learning_curve.py /root/runs/small-v3 --out docs/learning_curve.png [--json curve.json]

Plots the `kind: "val"` records (docs/training.md, "What training writes"): one-step reconstruction error
from sigma_max against the error of silence, the swap ratios (does the output depend on the latents?),
denoising error at fixed noise levels and the latents' spread. The x axis is the step; the compute axis
(wall-clock hours of training, summed over the logged intervals) goes in the JSON and the table printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PANELS = (
    ("one-step reconstruction (MSE)", ("rec_mse", "zeros_mse")),
    ("swap ratio (> 1: output depends on latents)", ("swap_ratio", "denoise_swap_ratio@1", "denoise_swap_ratio@10")),
    ("denoising MSE", ("denoise_mse@0.1", "denoise_mse@1", "denoise_mse@10")),
    ("latent spread", ("latent_spread",)),
)


def read_curve(log: Path) -> list[dict]:
    """Validation records, each with the training hours spent up to it: the sum over training records of
    (steps since the previous record) / (its logged steps/s)."""
    hours, prev_step, rows = 0.0, 0, []
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "val":
            rows.append({**record, "train_hours": hours})
        elif record.get("steps_per_s"):
            hours += max(record["step"] - prev_step, 0) / record["steps_per_s"] / 3600
            prev_step = record["step"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = read_curve(args.run_dir / "log.jsonl")
    if not rows:
        raise SystemExit(f"error: no validation records in {args.run_dir / 'log.jsonl'}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(PANELS), 1, figsize=(7, 2.4 * len(PANELS)), sharex=True)
    steps = [r["step"] for r in rows]
    for ax, (title, keys) in zip(axes, PANELS):
        for key in keys:
            ax.plot(steps, [r.get(key) for r in rows], marker="o", ms=3, label=key)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("training step")
    fig.suptitle(f"{args.run_dir.name}: validation on fixed held-out crops", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print("step  train_h  rec_mse  zeros   swap_ratio  dswap@1  d@0.1    d@1     d@10    spread")
    for r in rows:
        print(f"{r['step']:5d}  {r['train_hours']:6.2f}  {r['rec_mse']:.4f}  {r['zeros_mse']:.4f}  "
              f"{r['swap_ratio']:.4f}      {r['denoise_swap_ratio@1']:.4f}   {r['denoise_mse@0.1']:.4f}  "
              f"{r['denoise_mse@1']:.4f}  {r['denoise_mse@10']:.4f}  {r['latent_spread']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
