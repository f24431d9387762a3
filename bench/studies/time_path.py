"""Where does a model lose the time structure inside a chunk? Probes of the encoder-decoder time path.

docs/architecture.md ("Grid paths") explains the numbers. On val chunks of the weights file:
- `reversal_change`: how much the latents change when the encoder's patchifier tokens are reversed in time
  (relative to their norm), next to `across_chunks` (how much they differ between two chunks): a bag-of-
  tokens encoder gives ~0;
- the encoder's and decoder's token content vs position-embedding norms per token (pos_gain included);
- the decoder transformer output's variance over time, frequency and chunks;
- a ridge probe from each patchifier token to its own cells' envelope (does the encoder see the motion?);
and on the data alone, how compressible the motion is: R^2 on val chunks of the best linear k-number code
(PCA fitted on train chunks) of each chunk's envelope motion (each band's chunk mean removed).

    python bench/studies/time_path.py --model m2lcodec/weights/default.safetensors \\
        --train ~/m2l-corpus/train.txt --val ~/m2l-corpus/val.txt --out r.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from m2lcodec.data import CropDataset, fixed_crops, list_audio
from m2lcodec.model import Music2Latent2
from m2lcodec.spectral import envelope, split_chunks
from m2lcodec.weights import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from envelope_motion import level_motion, r2  # noqa: E402  (the same level / motion split and R^2)


@torch.no_grad()
def model_probes(model: Music2Latent2, x: torch.Tensor) -> dict[str, float]:
    enc, dec, cfg = model.encoder, model.decoder, model.config
    grid_tokens = enc.grid_tokens(x)
    freq, time = cfg.grid
    reversed_tokens = grid_tokens.view(len(x), freq, time, -1).flip(2).reshape(grid_tokens.shape)
    z = enc.latents_of(grid_tokens)
    out = {"reversal_change": float((z - enc.latents_of(reversed_tokens)).norm() / z.norm()),
           "across_chunks": float((z - z.roll(1, 0)).norm() / z.norm()),
           "encoder_content_norm": float(enc.proj_in(grid_tokens).norm(dim=-1).mean()),
           "encoder_pos_norm": float((enc.pos * cfg.pos_gain).norm(dim=-1).mean())}
    direct = dec.direct(z.flatten(1)) if dec.direct is not None else torch.zeros(1)
    grid = dec.grid_path(z) if dec.grid_path is not None else torch.zeros(1)
    tokens = dec.audio_tokens(z).view(len(x), freq, time, -1)
    out.update({"decoder_pos_norm": float((dec.pos * cfg.pos_gain).norm(dim=-1).mean()),
                "decoder_direct_norm": float(direct.norm(dim=-1).mean()),
                "decoder_grid_norm": float(grid.norm(dim=-1).mean()),
                "decoder_out_var_time": float(tokens.var(2).mean()),
                "decoder_out_var_freq": float(tokens.var(1).mean()),
                "decoder_out_var_chunks": float(tokens.var(0).mean())})
    return out


@torch.no_grad()
def local_probe(model: Music2Latent2, train: torch.Tensor, val: torch.Tensor) -> dict[str, float]:
    """Does the encoder's patchifier see the envelope's motion? One ridge map shared by all tokens, from a
    token's channels to the envelope of its own cells (its band x its two halves in time), scored on val
    chunks, whole and with each band's chunk mean removed (motion)."""
    enc, (freq, time) = model.encoder, model.config.grid

    def xy(chunks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = enc.grid_tokens(chunks)
        x = torch.cat([tokens.reshape(-1, tokens.shape[-1]), torch.ones(tokens.shape[0] * tokens.shape[1], 1)], 1)
        return x, envelope(chunks, (freq, 2 * time))

    xt, yt = xy(train)
    w = torch.linalg.solve(xt.T @ xt + 1e-2 * torch.eye(xt.shape[1]), xt.T @ yt.view(len(train), freq, time, 2).reshape(-1, 2))
    xv, yv = xy(val)
    pred = (xv @ w).view(yv.shape)
    return {"local_probe_envelope_r2": r2(yv, pred),
            "local_probe_motion_r2": r2(level_motion(yv)[1], level_motion(pred)[1])}


def motion(chunks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 2, F, T) chunks -> (N, cells) their envelope's motion on a grid of `size`, flattened."""
    return level_motion(envelope(chunks, size))[1].flatten(1)


def motion_compressibility(train: torch.Tensor, val: torch.Tensor) -> dict[str, float]:
    out = {}
    for size in ((32, 8), (64, 16)):
        mt, mv = motion(train, size), motion(val, size)
        mean = mt.mean(0)
        _, _, v = torch.pca_lowrank(mt - mean, q=min(300, *mt.shape), center=False)
        for k in (16, 64, 128):
            rec = (mv - mean) @ v[:, :k] @ v[:, :k].T + mean
            out[f"pca{k}_r2_{size[0]}x{size[1]}"] = r2(mv, rec)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="weights file (default: the bundled model)")
    ap.add_argument("--train", required=True)
    ap.add_argument("--val", required=True)
    ap.add_argument("--cache-dir", default=str(Path.home() / "m2l-cache"))
    ap.add_argument("--val-crops", type=int, default=32)
    ap.add_argument("--train-chunks", type=int, default=1024)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cache = Path(args.cache_dir)
    model = load_model(args.model)[0].float().eval()
    val = split_chunks(fixed_crops(list_audio(args.val), cache, args.val_crops)).flatten(0, 1)
    loader = iter(torch.utils.data.DataLoader(CropDataset(list_audio(args.train), cache, seed=1), batch_size=16))
    train = torch.cat([split_chunks(next(loader)).flatten(0, 1) for _ in range(args.train_chunks // 32)])
    result = {**model_probes(model, val), **local_probe(model, train[:256], val),
              **motion_compressibility(train, val)}
    for key, value in result.items():
        print(f"{key:28s} {value:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), **result}, indent=1))


if __name__ == "__main__":
    main()
