"""How much would a few bits of level side info per chunk buy? An oracle study (session 19).

The latents carry a chunk's level but little of its motion inside the chunk (docs/training.md, session
9), and the decode's level error follows the chunk grid (the periodic error). Here the decoder is given,
per chunk, the original's level per band (1 per octave: 9 bands) and per time segment (S segments of
64 / S frames), quantised to STEP dB, and scales its decoded spectrogram to match: a smooth gain in dB,
linear between segment centres. The bits it would cost are estimated as the zero-order entropy of the
quantised levels' differences along time per band (what an entropy coder would get near), so the rows
say what each amount of side information would buy before anything is built. Int8 `.m2l` bytes, the
CLI's decode (deblocking off, then this), the issue's measures.

    python bench/studies/level_side_info.py --clips ~/calib-clips --count 10 --segments 2,4,8 --step 1.5 \\
        [--level power|log] --out r.json [--no-visqol]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_models import mean_scores, print_table, score, score_original  # noqa: E402
from deblock import decoded_spectrogram  # noqa: E402

from m2lcodec import load_codec, spectral  # noqa: E402
from m2lcodec.audio import read_audio  # noqa: E402
from m2lcodec.bench import find_clips  # noqa: E402
from m2lcodec.deblock import band_index  # noqa: E402

BPO = 1


LEVELS = ("power", "log")
LEVEL = "power"  # set from --level


def segment_levels_db(spec: torch.Tensor, segments: int) -> torch.Tensor:
    """(C, 2, F, 64 T) -> (C, bands, T * segments) band level (dB) per time segment. LEVEL "power": of the
    mean power over the band's bins and the segment's frames; "log": the mean of the log power (as a
    log spectrum sees it; a power mean follows the loudest bins)."""
    power = (spec.float().pow(2).sum(1) / spectral.AMP_SCALE ** 2) ** (1 / spectral.AMP_POWER)  # (C, F, frames)
    per_bin = power if LEVEL == "power" else 10 * torch.log10(power + 1e-10)
    idx = band_index(BPO, spec.device)
    bands = int(idx.max()) + 1
    total = torch.zeros(per_bin.shape[0], bands, per_bin.shape[-1]).index_add_(1, idx, per_bin)
    e = total / torch.bincount(idx, minlength=bands).to(per_bin.dtype)[None, :, None]
    c, b, frames = e.shape
    e = e.view(c, b, frames // (spectral.CHUNK_FRAMES // segments), -1).mean(-1)
    return 10 * torch.log10(e + 1e-10) if LEVEL == "power" else e


def entropy_bits(symbols: np.ndarray) -> float:
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum() * symbols.size)


def apply_levels(dec: torch.Tensor, target_db: torch.Tensor, segments: int) -> torch.Tensor:
    """Scale `dec` so its per-segment band levels become `target_db`: the dB gain per segment,
    interpolated linearly between segment centres over frames, applied per band (compressed domain)."""
    gain_db = (target_db - segment_levels_db(dec, segments)).clamp(-20, 20)  # (C, B, S T)
    frames = dec.shape[-1]
    per_frame = F.interpolate(gain_db, size=frames, mode="linear", align_corners=False)  # centres of segments
    g = torch.exp(per_frame[:, band_index(BPO)] * (spectral.AMP_POWER / 20 * np.log(10)))  # (C, F, frames)
    return dec * g[:, None]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", required=True)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--segments", default="2,4,8", help="time segments per chunk (comma list)")
    ap.add_argument("--step", type=float, default=1.5, help="quantiser step of the side levels (dB)")
    ap.add_argument("--level", choices=LEVELS, default="power", help="what a band level is (segment_levels_db)")
    ap.add_argument("--visqol", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    global LEVEL
    LEVEL = args.level

    codec = load_codec(None, device="cpu")
    seg_list = [int(s) for s in args.segments.split(",")]
    names = ["plain", *(f"side-{s}seg" for s in seg_list)]
    rows: dict[str, dict[str, dict]] = {name: {} for name in ["original", *names]}
    side_kbps: dict[str, list[float]] = {n: [] for n in names[1:]}
    for path in find_clips(args.clips, args.count):
        audio, sr = read_audio(path)
        audio = audio.mean(axis=0, keepdims=True)
        seconds = audio.shape[1] / sr
        data = codec.compress(audio, sr, quant="int8")
        kbps = len(data) * 8 / 1000 / seconds
        with torch.inference_mode():
            dec, n = decoded_spectrogram(codec, data)
            orig, _ = spectral.pad_to_chunks(torch.from_numpy(audio))
            orig = spectral.wave_to_spec(orig)[..., : dec.shape[-1]]
        rows["original"][path.name] = score_original(audio, sr)
        for name in names:
            if name == "plain":
                spec, extra = dec, 0.0
            else:
                s = int(name.split("-")[1][:-3])
                q = torch.round(segment_levels_db(orig, s) / args.step)
                extra = entropy_bits(torch.diff(q, dim=-1, prepend=q[..., :1]).numpy().ravel()) / 1000 / seconds
                side_kbps[name].append(extra)
                with torch.inference_mode():
                    spec = apply_levels(dec, q * args.step, s)
            with torch.inference_mode():
                wave = spectral.trim(spectral.spec_to_wave(spec), n).numpy()
            rows[name][path.name] = score(audio, wave, sr, kbps + extra, args.visqol)
        print(path.name, {k: round(v[-1], 3) for k, v in side_kbps.items()}, file=sys.stderr, flush=True)
    mean = {name: mean_scores(list(per.values())) for name, per in rows.items()}
    Path(args.out).write_text(json.dumps({"args": vars(args), "mean": mean, "side_kbps": side_kbps,
                                          "per_clip": rows}, indent=1) + "\n")
    print_table(mean, first="decode")
    print("side info kbps (entropy estimate):", {k: round(float(np.mean(v)), 3) for k, v in side_kbps.items()})


if __name__ == "__main__":
    main()
