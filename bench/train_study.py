"""Compare training-recipe variants side by side on equal compute (docs/training.md).

Each variant is a set of TrainConfig overrides. All variants start from the same point (a fresh model
from the same seed, `--init-weights W.safetensors`, or `--init CHECKPOINT` of a running job), train **at
the same time**, each in its own process on one thread, for the same wall time (`--minutes`) on the same
data stream (same seed), so a variant that costs more per step gets fewer steps, as it would in a real
run. Each is then judged by `train.validate` on the same held-out crops (one-step `rec_mel` / `swap_mel`,
the codec's pair decode `pair_mel@s` / `emit_mel@s`) and, with `--clips`, through the real codec: int8
.m2l round trip and the CLI's decode at each `--sigma-cond`, ViSQOL and mel distance on the first
`--eval-clips` clips, next to Opus 6 / 12 kbps on the same clips in the same run.

    # (a) vs (a)+(b) from the shipped weights, 30 minutes each:
    python bench/train_study.py --data ~/m2l-corpus/train.txt --val-data ~/m2l-corpus/val.txt \\
        --init-weights m2lcodec/weights/default.safetensors --minutes 30 --clips /root/bench-clips \\
        --out /root/study-ab --variant 'a={"recon_weight": 1}' \\
        --variant 'ab={"recon_weight": 1, "recon_context": "unrolled"}'

Writes OUT/NAME/ (checkpoint, log.jsonl, weights.safetensors), OUT/results.json and a markdown table
on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, overrides = text.partition("=")
    if not name or not overrides:
        raise argparse.ArgumentTypeError(f"expected NAME=JSON, got {text!r}")
    return name, json.loads(overrides)


def train_variant(args: argparse.Namespace, name: str, overrides: dict) -> dict:
    """One variant, in this process (one thread): train for args.minutes, validate, export, codec-eval."""
    import torch

    torch.set_num_threads(1)
    from m2lcodec.data import fixed_crops, list_audio
    from m2lcodec.model import ModelConfig
    from m2lcodec.train import TrainConfig, Trainer, export_weights, load_checkpoint, validate

    init = load_checkpoint(Path(args.init)) if args.init else None
    model_config = None
    if init is not None:  # the job's own recipe; a job begun before the envelope term existed ran without it
        base = TrainConfig.from_dict({"envelope_weight": 0.0, **init["train_config"]})
        model_config = ModelConfig.from_dict(init["model_config"])
    else:
        base = TrainConfig(preset=args.preset, lr=args.lr, steps=args.horizon,
                           warmup_steps=args.warmup, init_weights=args.init_weights or "")
    fields = {**asdict(base), "batch_size": args.batch_size, "val_every": 0, "log_every": 10, "num_workers": 1,
              "cache_dir": args.cache_dir, "checkpoint_minutes": 1e9, **overrides}
    cfg = TrainConfig.from_dict(fields)
    run = Path(args.out) / name
    trainer = Trainer(cfg, args.data, run, device="cpu", model_config=model_config)
    if init is not None:
        trainer.load_state(init)
    start = trainer.step
    t0 = time.time()
    trainer.fit(max_seconds=60 * args.minutes)
    seconds = time.time() - t0
    crops = fixed_crops(list_audio(args.val_data), Path(args.cache_dir), args.val_crops)
    weights = trainer.ema if args.use_ema else trainer.model
    result = {"overrides": overrides, "from_step": start, "to_step": trainer.step, "train_seconds": round(seconds, 1),
              "steps_per_s": (trainer.step - start) / seconds, **validate(weights, crops, trainer.dtype)}
    export_weights(trainer.ckpt_path, run / "weights.safetensors", use_ema=args.use_ema, name=f"study-{name}")
    if args.clips:
        sys.path.insert(0, str(BENCH))
        from sigma_cond import run_sweep

        from m2lcodec import load_codec
        from m2lcodec.bench import find_clips

        codec = load_codec(run / "weights.safetensors")
        sweep = run_sweep(codec, find_clips(args.clips, args.eval_clips), args.sigma_cond, quant="int8",
                          root=Path(args.clips))
        result["codec"] = {f"{r['sigma_cond']:g}": r["mean"] for r in sweep["results"]}
        result["codec_kbps"] = sum(sweep["kbps"].values()) / len(sweep["kbps"])
    return result


def opus_rows(args: argparse.Namespace) -> dict:
    """Opus 6 / 12 kbps on the same clips (mono), scored by compare_models.score like every codec row
    there (ViSQOL, mel distance, periodic level error, level jumps, peakiness, onsets)."""
    sys.path.insert(0, str(BENCH))
    from compare_models import mean_scores, score

    from m2lcodec.audio import read_audio
    from m2lcodec.baselines import get_baseline, run_baseline
    from m2lcodec.bench import find_clips

    rows = {}
    for name in ("opus-6k", "opus-12k"):
        scores = []
        for path in find_clips(args.clips, args.eval_clips):
            audio, sr = read_audio(path)
            audio = audio.mean(axis=0, keepdims=True)
            res = run_baseline(get_baseline(name), audio, sr)
            scores.append(score(audio, res.audio, sr, res.kbps))
        rows[name] = mean_scores(scores)
    return rows


def table(results: dict, opus: dict, sigma_conds: list[float]) -> str:
    """Markdown: one row per variant (steps, one-step and pair val mel, codec ViSQOL / mel per sigma_cond)."""
    head = ["variant", "steps", "rec_mel", "swap_mel"] + [f"pair_mel@{s:g}" for s in (0, 0.4)]
    head += [f"ViSQOL / mel @{s:g}" for s in sigma_conds]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        cells = [name, f"{r['from_step']}->{r['to_step']}", f"{r['rec_mel']:.3f}", f"{r['swap_mel']:.3f}"]
        cells += [f"{r.get(f'pair_mel@{s:g}', float('nan')):.3f}" for s in (0, 0.4)]
        for s in sigma_conds:
            c = r.get("codec", {}).get(f"{s:g}")
            cells.append("-" if c is None else f"{c['visqol'] or float('nan'):.2f} / {c['mel_distance']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    for name, o in opus.items():
        lines.append(f"| {name} ({o['kbps']:.1f} kbps) | | | | | | " + " | ".join(
            f"{o['visqol']:.2f} / {o['mel_distance']:.3f}" for _ in sigma_conds) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--val-data", required=True)
    ap.add_argument("--variant", type=parse_variant, action="append", required=True, help="NAME=JSON overrides")
    start = ap.add_mutually_exclusive_group()
    start.add_argument("--init", help="start every variant from this training checkpoint (its recipe and step)")
    start.add_argument("--init-weights", help="start every variant from this weights file (step 0, fresh optimiser)")
    ap.add_argument("--preset", default="small", help="model preset of a fresh start")
    ap.add_argument("--minutes", type=float, default=30.0, help="wall time per variant (all run at once)")
    ap.add_argument("--horizon", type=int, default=30000, help="TrainConfig.steps (schedules) without --init")
    ap.add_argument("--warmup", type=int, default=100, help="warm-up steps without --init")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4, help="peak lr without --init (a variant may override)")
    ap.add_argument("--val-crops", type=int, default=16)
    ap.add_argument("--use-ema", action="store_true", help="validate and export the EMA, not the raw weights")
    ap.add_argument("--clips", help="folder of clips for the codec evaluation (bench/prepare_clips.py)")
    ap.add_argument("--eval-clips", type=int, default=5)
    ap.add_argument("--sigma-cond", type=lambda t: [float(v) for v in t.split(",")], default=[0.0, 0.4])
    ap.add_argument("--cache-dir", default=str(Path.home() / "m2l-cache"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: train this one variant in this process
    args = ap.parse_args()
    variants = dict(args.variant)
    out = Path(args.out)
    if args.worker:
        result = train_variant(args, args.worker, variants[args.worker])
        (out / args.worker / "result.json").write_text(json.dumps(result, indent=1))
        return
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = {name: subprocess.Popen([sys.executable, *sys.argv, "--worker", name], env=env) for name in variants}
    failed = [name for name, p in procs.items() if p.wait() != 0]
    if failed:
        sys.exit(f"error: variant(s) {', '.join(failed)} failed")
    results = {name: json.loads((out / name / "result.json").read_text()) for name in variants}
    opus = opus_rows(args) if args.clips else {}
    (out / "results.json").write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "variant"},
                                                  "variants": variants, "results": results, "opus": opus}, indent=1))
    print(table(results, opus, args.sigma_cond if args.clips else []))


if __name__ == "__main__":
    main()
