"""Can the encoder and decoder learn a chunk's time structure at all? An envelope-only fine-tune.

bench/studies/latent_content.py found the shipped model's latents and its decoder's envelope channel
static inside a chunk: the envelope's per-band level is predicted (R^2 0.84) but its motion (what is left
after the level: onsets, notes, swells) not at all (variance 0.1% of the truth's). This trains only the
encoder and decoder of a weights file on the envelope term (`losses.envelope_error`, the training loss's
anti-collapse term) alone, on random training chunks, and prints the val chunks' envelope level and
motion R^2 every `--every` steps. `--motion-weight W` adds W x the same L2 distance on the motion part
only (each band's mean over the chunk removed from both), so the level no longer dominates the error.

    python bench/studies/envelope_motion.py --model m2lcodec/weights/default.safetensors \\
        --train ~/m2l-corpus/train.txt --val ~/m2l-corpus/val.txt --steps 300 [--motion-weight 4]

Session 10 (docs/architecture.md, "Grid paths"): `--preset tiny` starts from a fresh model, `--grid-code N`
adds grid paths (to a fresh model, or to the weights, keeping their function), `--grid-lr-scale` trains
them faster, `--loss mse` is the plain mean-squared objective those measurements used, e.g.

    python bench/studies/envelope_motion.py --preset tiny --grid-code 4 --loss mse --lr 1e-3 \
        --steps 480 --every 80 --motion-weight 4 --train ... --val ...
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from m2lcodec.data import CropDataset, fixed_crops, list_audio
from m2lcodec.losses import envelope_error
from m2lcodec.model import Music2Latent2, get_config, is_grid_path
from m2lcodec.spectral import envelope, split_chunks
from m2lcodec.weights import load_model


COARSE = (32, 8)  # (freq, time) cells of the coarse motion score: a linear 64-number code of the val chunks'
#                  coarse envelopes holds 94% of its motion variance (PCA fitted on train chunks)


def chunks_of(crops: torch.Tensor) -> torch.Tensor:
    """(B, 2, 1024, 128) two-chunk crops -> (2B, 2, 1024, 64) chunks."""
    return split_chunks(crops).flatten(0, 1)


def level_motion(env: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, freq, time) envelopes -> each band's mean over the chunk (N, freq, 1) and the rest (N, freq, time)."""
    level = env.mean(-1, keepdim=True)
    return level, env - level


def r2(target: torch.Tensor, estimate: torch.Tensor) -> float:
    """Coefficient of determination over all entries, the baseline being the mean over the chunks (dim 0)."""
    return float(1 - (target - estimate).pow(2).sum() / (target - target.mean(0)).pow(2).sum())


def motion_error(feats: list[torch.Tensor], chunks: torch.Tensor) -> torch.Tensor:
    """Per chunk: L2 distance of the envelope channel to the true envelope, each band's time mean removed."""
    pred = feats[0][:, 0].float()
    true = envelope(chunks, tuple(pred.shape[-2:]))
    return (level_motion(pred)[1] - level_motion(true)[1]).pow(2).flatten(1).sum(-1).sqrt()


@torch.no_grad()
def scores(model, chunks: torch.Tensor) -> dict[str, float]:
    pred = model.decoder_features(model.encode(chunks))[0][:, 0].float()
    (lp, mp), (lt, mt) = level_motion(pred), level_motion(envelope(chunks, tuple(pred.shape[-2:])))

    coarse_p = torch.nn.functional.adaptive_avg_pool2d(pred[:, None], COARSE)[:, 0]
    coarse_t = envelope(chunks, COARSE)
    return {"level_r2": r2(lt, lp), "motion_r2": r2(mt, mp), "motion_var_ratio": float(mp.var() / mt.var()),
            "coarse_motion_r2": r2(level_motion(coarse_t)[1], level_motion(coarse_p)[1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="weights file (default: the bundled model)")
    ap.add_argument("--preset", default=None, help="start from a fresh model of this preset instead")
    ap.add_argument("--train", required=True)
    ap.add_argument("--val", required=True)
    ap.add_argument("--cache-dir", default=str(Path.home() / "m2l-cache"))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--batch", type=int, default=8, help="two-chunk crops per step")
    ap.add_argument("--lr", type=float, default=1.5e-4)
    ap.add_argument("--motion-weight", type=float, default=0.0)
    ap.add_argument("--loss", choices=("norm", "mse"), default="norm",
                    help="norm: the training's envelope term (per-chunk L2 norm) + W x the same on the motion, "
                         "RAdam; mse: mean squared level error + W x mean squared motion error, Adam (session 10)")
    ap.add_argument("--pos-gain", type=float, default=0.0,
                    help="run the weights with this ModelConfig.pos_gain (same function, faster position learning)")
    ap.add_argument("--grid-code", type=int, default=0,
                    help="add grid paths of this many channels per token (ModelConfig.grid_code) to the weights")
    ap.add_argument("--grid-lr-scale", type=float, default=1.0, help="the grid paths' lr is this times --lr")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the score rows here as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cache = Path(args.cache_dir)
    source = None if args.preset else load_model(args.model)[0]
    base = get_config(args.preset) if args.preset else source.config
    model = Music2Latent2(replace(base, grid_code=args.grid_code or base.grid_code,
                                  pos_gain=args.pos_gain or base.pos_gain))
    if source is not None:  # the weights, with grid paths added / positions regained if asked
        model.load_adapted(source.state_dict(), source.config)
    model.float().train()
    val = chunks_of(fixed_crops(list_audio(args.val), cache, 32))
    data = iter(torch.utils.data.DataLoader(CropDataset(list_audio(args.train), cache, seed=0), batch_size=args.batch))
    named = [(name, p) for name, p in model.named_parameters() if not name.startswith("cm.")]
    groups = [{"params": [p for name, p in named if not is_grid_path(name)]},
              {"params": [p for name, p in named if is_grid_path(name)], "lr": args.lr * args.grid_lr_scale}]
    opt = (torch.optim.Adam if args.loss == "mse" else torch.optim.RAdam)(groups, args.lr)
    rows, t0 = [], time.time()
    for step in itertools.count():
        if step % args.every == 0 or step == args.steps:
            model.eval()
            row = {"step": step, "seconds": round(time.time() - t0), **scores(model, val)}
            model.train()
            rows.append(row)
            print(json.dumps(row), flush=True)
        if step == args.steps:
            break
        x = chunks_of(next(data))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats = model.decoder_features(model.encode(x))
        if args.loss == "mse":
            pred = feats[0][:, 0].float()
            (lp, mp), (lt, mt) = level_motion(pred), level_motion(envelope(x, tuple(pred.shape[-2:])))
            loss = (lp - lt).pow(2).mean() + args.motion_weight * (mp - mt).pow(2).mean()
        else:
            loss = envelope_error(feats, x).mean()
            if args.motion_weight > 0:
                loss = loss + args.motion_weight * motion_error(feats, x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
