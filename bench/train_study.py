"""Compare training-recipe variants on the same budget (docs/training.md).

Each variant is a set of TrainConfig overrides. Every variant starts from the same point (a fresh model
from the same seed, or `--init CHECKPOINT`: weights, EMA, optimiser and step of a running job), sees the
same data stream for `--steps` steps, and is then validated with train.validate on the same held-out
crops. Results go to OUT/results.json and one line per variant on stdout.

    # ECT-style vs the paper's consistency-step schedule, fresh tiny models:
    python bench/train_study.py --data ~/m2l-corpus/train.txt --val-data ~/m2l-corpus/val.txt --preset tiny \\
        --steps 400 --out /tmp/study-schedule \\
        --variant 'paper={"step_schedule": {"kind": "paper"}}' --variant 'ect={}'
    # loss weighting, continuing a running job for 200 steps from its checkpoint:
    python bench/train_study.py --data ~/m2l-corpus/train.txt --val-data ~/m2l-corpus/val.txt \\
        --init /root/runs/small-v2/checkpoint.pt --steps 200 --out /tmp/study-weighting \\
        --variant 'paper={"weighting": "paper"}' --variant 'clamped={"weighting": "clamped"}'
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from m2lcodec.data import fixed_crops, list_audio
from m2lcodec.model import ModelConfig
from m2lcodec.train import TrainConfig, Trainer, load_checkpoint, validate


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, overrides = text.partition("=")
    if not name or not overrides:
        raise argparse.ArgumentTypeError(f"expected NAME=JSON, got {text!r}")
    return name, json.loads(overrides)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--val-data", required=True)
    ap.add_argument("--variant", type=parse_variant, action="append", required=True, help="NAME=JSON overrides")
    ap.add_argument("--init", help="start every variant from this training checkpoint")
    ap.add_argument("--preset", default="tiny", help="model preset of a fresh start (ignored with --init)")
    ap.add_argument("--steps", type=int, default=400, help="training steps per variant")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3, help="peak lr of a fresh start (with --init: the job's)")
    ap.add_argument("--val-crops", type=int, default=16)
    ap.add_argument("--use-ema", action="store_true", help="validate the EMA weights, not the raw ones")
    ap.add_argument("--cache-dir", default=str(Path.home() / "m2l-cache"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    init = load_checkpoint(Path(args.init)) if args.init else None
    if init is not None:
        # the job's own recipe; a job begun before the envelope term existed ran without it
        base = TrainConfig.from_dict({"envelope_weight": 0.0, **init["train_config"]})
        model_config = ModelConfig.from_dict(init["model_config"])
    else:
        base = TrainConfig(preset=args.preset, steps=args.steps, lr=args.lr, warmup_steps=max(args.steps // 20, 1))
        model_config = None
    base = TrainConfig.from_dict({**asdict(base), "batch_size": args.batch_size, "val_every": 0, "log_every": 10,
                                  "num_workers": 1, "cache_dir": args.cache_dir, "checkpoint_minutes": 1e9})
    crops = fixed_crops(list_audio(args.val_data), Path(args.cache_dir), args.val_crops)
    results = {}
    for name, overrides in args.variant:
        cfg = TrainConfig.from_dict({**asdict(base), **overrides})
        trainer = Trainer(cfg, args.data, out / name, device="cpu", model_config=model_config)
        if init is not None:
            trainer.model.load_state_dict(init["model"])
            trainer.ema.load_state_dict(init["ema"])
            trainer.opt.load_state_dict(init["opt"])
            trainer.step = int(init["step"])
        start = trainer.step
        trainer.fit(until=start + args.steps)
        results[name] = {"overrides": overrides, "from_step": start, "to_step": trainer.step,
                         **validate(trainer.ema if args.use_ema else trainer.model, crops, trainer.dtype)}
        print(name, json.dumps(results[name]), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "variant"},
                                                  "variants": dict(args.variant), "results": results}, indent=1))


if __name__ == "__main__":
    main()
