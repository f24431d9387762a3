"""Level of the decode at the places where chunks join, per band (docs/training.md, "Edge padding and
the seam level term").

Decodes fixed val crops (`data.fixed_crops`, the training's validation crops) with the codec's own pair
(`losses.unrolled_pair` at sigma_cond 0, i.e. what `Codec` runs for two chunks) and prints, per weights
file, the mean level error of the decode in dB per band (`losses.band_levels`, 1024-sample windows) at:
`before` the left chunk's last final samples (just before the right chunk's frames begin), `after` the
right chunk's first samples past the seam's overlap, `end` the right chunk's last final samples (where
the next chunk's seam will join), and `mid` the middle of the right chunk; then `seam_level_loss`.

    python bench/studies/seam_levels.py --val-data ~/m2l-corpus/val.txt --cache-dir ~/m2l-cache \\
        --model shipped=m2lcodec/weights/default.safetensors --model v11=W
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from m2lcodec.data import fixed_crops, list_audio
from m2lcodec.losses import SEAM_BAND_EDGES_HZ, band_levels, seam_level_loss, unrolled_pair
from m2lcodec.spectral import CHUNK_FRAMES, CHUNK_SAMPLES, PAD_LEFT, spec_to_wave
from m2lcodec.weights import load_model

WINDOW = 1024
PLACES = {"before": CHUNK_SAMPLES - WINDOW, "after": CHUNK_SAMPLES + PAD_LEFT,
          "end": 2 * CHUNK_SAMPLES - WINDOW, "mid": CHUNK_SAMPLES + CHUNK_SAMPLES // 2}


def seam_levels(weights: str, crops: torch.Tensor, seed: int = 0) -> dict:
    model, _ = load_model(weights)
    model.eval()
    x = torch.stack([crops[..., :CHUNK_FRAMES], crops[..., CHUNK_FRAMES:]], 1)
    g = torch.Generator().manual_seed(seed)
    noises = [torch.randn(x[:, 0].shape, generator=g) for _ in range(3)]
    with torch.no_grad():
        left, right = unrolled_pair(model, model.decoder_features(model.encode(x.flatten(0, 1))), 0.0, *noises)
        est = spec_to_wave(torch.cat([left, right], -1))
        ref = spec_to_wave(torch.cat([x[:, 0], x[:, 1]], -1))
        rows = {name: (10 * (band_levels(est, at, WINDOW) - band_levels(ref, at, WINDOW))).mean(0).tolist()
                for name, at in PLACES.items()}
        return {"db": rows, "seam_level_loss": float(seam_level_loss(est, ref, WINDOW).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val-data", required=True)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--model", action="append", required=True, help="NAME=WEIGHTS.safetensors (repeatable)")
    ap.add_argument("--crops", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    crops = fixed_crops(list_audio(args.val_data), Path(args.cache_dir), args.crops)
    bands = [f"{lo / 1000:g}-{hi / 1000:g}k" for lo, hi in zip(SEAM_BAND_EDGES_HZ[:-1], SEAM_BAND_EDGES_HZ[1:])]
    print("| weights | place | " + " | ".join(bands) + " | seam loss |\n|---|---|" + "---|" * (len(bands) + 1))
    for spec in args.model:
        name, path = spec.split("=", 1)
        r = seam_levels(path, crops, args.seed)
        for k, (place, values) in enumerate(r["db"].items()):
            loss = f"{r['seam_level_loss']:.3f}" if k == 0 else ""
            print(f"| {name if k == 0 else ''} | {place} | " + " | ".join(f"{v:+.1f}" for v in values) + f" | {loss} |")


if __name__ == "__main__":
    main()
