"""Learning curves of training runs: validation metrics vs step and vs compute, from RUN_DIR/log.jsonl.

    python bench/learning_curve.py /root/runs/small-v5 [/root/runs/small-v3 ...] --out docs/learning_curve.png \
        [--json curve.json]

Plots the `kind: "val"` records (docs/training.md, "What training writes") of one or more runs on the same
axes: one-step reconstruction error from sigma_max against the error of silence, the swap ratios (does
the output depend on the latents?), denoising error at fixed noise levels, the decoder's feature spread
and envelope error (decoder collapse), and the latents' spread. Metrics a run's log lacks are skipped.
The x axis is the step; the compute axis (wall-clock hours of training, summed over the logged intervals)
goes in the JSON and the table printed per run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PANELS = (
    ("one-step reconstruction (MSE)", ("rec_mse", "zeros_mse")),
    ("mel distance (lower is better)", ("rec_mel", "swap_mel", "pair_mel@0", "pair_mel@0.4")),
    ("swap ratio (> 1: output depends on latents)", ("swap_ratio", "denoise_swap_ratio@1", "denoise_swap_ratio@10")),
    ("denoising MSE", ("denoise_mse@0.1", "denoise_mse@1", "denoise_mse@10")),
    ("decoder (feature_spread ~0: decoder collapse)", ("feature_spread", "envelope_rel_err")),
    ("latent spread", ("latent_spread",)),
)
STYLES = ("-", "--", ":", "-.")


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
    ap.add_argument("run_dirs", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    runs = {}
    for run_dir in args.run_dirs:
        rows = read_curve(run_dir / "log.jsonl")
        if not rows:
            raise SystemExit(f"error: no validation records in {run_dir / 'log.jsonl'}")
        runs[run_dir.name] = rows
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(PANELS), 1, figsize=(7, 2.4 * len(PANELS)), sharex=True)
    for ax, (title, keys) in zip(axes, PANELS):
        for k, key in enumerate(keys):
            for r, (name, rows) in enumerate(runs.items()):
                points = [(row["step"], row[key]) for row in rows if key in row]
                if points:
                    ax.plot(*zip(*points), STYLES[r % len(STYLES)], color=f"C{k}", marker="o", ms=3,
                            label=f"{key} ({name})" if len(runs) > 1 else key)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("training step")
    fig.suptitle(f"{', '.join(runs)}: validation on fixed held-out crops", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    for name, rows in runs.items():
        print(name)
        print("step  train_h  rec_mse  zeros   swap_ratio  dswap@0.1 dswap@1  d@0.1    d@1     d@10    "
              "spread  feat_spread env_err")
        for r in rows:
            print(f"{r['step']:5d}  {r['train_hours']:6.2f}  {r['rec_mse']:.4f}  {r['zeros_mse']:.4f}  "
                  f"{r['swap_ratio']:.4f}      {r['denoise_swap_ratio@0.1']:.4f}    {r['denoise_swap_ratio@1']:.4f}   "
                  f"{r['denoise_mse@0.1']:.4f}  {r['denoise_mse@1']:.4f}  {r['denoise_mse@10']:.4f}  "
                  f"{r['latent_spread']:.3f}   {r.get('feature_spread', float('nan')):.4f}      "
                  f"{r.get('envelope_rel_err', float('nan')):.3f}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
