"""ECT-style vs the paper's consistency-step schedule on the same budget (docs/training.md).

Trains the same model from the same seed on the same data stream twice, once per schedule, then reports
the validation metrics of train.validate on fixed held-out crops. Example (as run for docs/training.md):
    python bench/schedule_study.py --data ~/m2l-corpus/train.txt --val-data ~/m2l-corpus/val.txt \
        --preset tiny --steps 400 --out /tmp/schedule-study
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from m2lcodec import schedule
from m2lcodec.data import fixed_crops, list_audio
from m2lcodec.train import TrainConfig, Trainer, validate

SCHEDULES = {
    "paper": schedule.StepSchedule(kind="paper"),
    "ect": schedule.StepSchedule(kind="ect", start=1.0, anneal_fraction=0.5),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--val-data", required=True)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--cache-dir", default=str(Path.home() / "m2l-cache"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    results = {}
    for name, sched in SCHEDULES.items():
        cfg = TrainConfig(preset=args.preset, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                          warmup_steps=max(args.steps // 20, 1), step_schedule=sched, val_every=0,
                          log_every=10, num_workers=1, cache_dir=args.cache_dir, seed=0)
        trainer = Trainer(cfg, args.data, out / name, device="cpu")
        trainer.fit()
        crops = fixed_crops(list_audio(args.val_data), Path(args.cache_dir), 16)
        results[name] = validate(trainer.ema, crops, trainer.dtype)
        print(name, json.dumps(results[name]), flush=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
