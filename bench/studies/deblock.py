"""Decode-side deblocking of the chunk seams: does a level match across each seam help? (session 19)

Every clip (mono, 44.1 kHz) goes through int8 `.m2l` bytes and the codec's own chunk steps (the weights
file's sigma_cond and seed 0, as `m2lcodec decompress`); the decoded spectrogram of the whole clip is
then post-processed by each variant, inverted, and scored on the measures of bench/compare_models.py.
A variant NAME=ALPHA,RAMP,WINDOW[,BANDS_PER_OCTAVE] matches per band (1 per octave unless given), at every
seam, the mean level of the WINDOW frames after the seam to the WINDOW frames before it by the fraction
ALPHA, spread as a linear gain ramp over RAMP frames on each side (`m2lcodec.deblock`). "none" is the plain decode and must equal the codec's with
`--deblock 0`.

    python bench/studies/deblock.py --clips ~/bench-clips --count 10 --variant a1=1,8,4 --variant a05=0.5,8,4 \\
        --out r.json [--no-visqol]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compare_models import mean_scores, print_table, score, score_original  # noqa: E402

from m2lcodec import load_codec, spectral  # noqa: E402
from m2lcodec.audio import read_audio  # noqa: E402
from m2lcodec.bench import find_clips  # noqa: E402
from m2lcodec.container import Reader  # noqa: E402
from m2lcodec.deblock import DeblockConfig, deblock_spectrogram  # noqa: E402


@torch.inference_mode()
def decoded_spectrogram(codec, data: bytes) -> tuple[torch.Tensor, int]:
    """int8 .m2l bytes -> (the decode's spectrogram (C, 2, 1024, 64 T), num_samples at 44.1 kHz)."""
    with Reader.from_bytes(data) as reader:
        header, latents = reader.header, reader.read_all()
    steps = codec._chunk_steps(latents, header.seed, header.sigma_cond, 0, codec.noise_scale)
    chunks = [spec for _, spec, _ in steps]
    return torch.cat(chunks, dim=-1), header.num_samples


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", required=True)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--model", default=None)
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=ALPHA,RAMP,WINDOW[,BANDS_PER_OCTAVE (default 1)] (repeatable)")
    ap.add_argument("--visqol", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    codec = load_codec(args.model, device="cpu")
    variants: dict[str, DeblockConfig | None] = {"none": None}
    for v in args.variant:
        name, spec = v.split("=", 1)
        alpha, ramp, window, *bpo = spec.split(",")
        variants[name] = DeblockConfig(strength=float(alpha), ramp_frames=int(ramp), window_frames=int(window),
                                       bands_per_octave=int(bpo[0]) if bpo else 1)
    rows: dict[str, dict[str, dict]] = {name: {} for name in ["original", *variants]}
    for path in find_clips(args.clips, args.count):
        audio, sr = read_audio(path)
        audio = audio.mean(axis=0, keepdims=True)
        assert sr == spectral.SAMPLE_RATE, f"{path}: {sr} Hz"
        t0 = time.perf_counter()
        data = codec.compress(audio, sr, quant="int8")
        kbps = len(data) * 8 / 1000 / (audio.shape[1] / sr)
        spec, n = decoded_spectrogram(codec, data)
        rows["original"][path.name] = score_original(audio, sr)
        for name, cfg in variants.items():
            s = spec if cfg is None else deblock_spectrogram(spec, cfg)
            wave = spectral.trim(spectral.spec_to_wave(s), n).numpy()
            if cfg is None:
                ref, _ = codec.decompress(data, deblock=0.0)
                assert np.allclose(ref, wave, atol=1e-4), "the study's plain decode differs from the codec's"
            rows[name][path.name] = score(audio, wave, sr, kbps, args.visqol)
        print(f"{path.name}: " + ", ".join(f"{k} {rows[k][path.name]['jump_ratio']:.2f}/"
                                           f"{rows[k][path.name]['periodic_db']:.2f}" for k in variants)
              + f" ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    mean = {name: mean_scores(list(per.values())) for name, per in rows.items()}
    Path(args.out).write_text(json.dumps({"args": vars(args), "mean": mean, "per_clip": rows}, indent=1) + "\n")
    print_table(mean, first="decode")


if __name__ == "__main__":
    main()
