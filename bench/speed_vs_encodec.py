"""Whole-process speed: `m2lcodec compress` / `decompress` next to EnCodec-48k, in the same run.

Every measurement is a fresh process (interpreter start, imports, model load, file I/O included), timed
from outside, best of `--repeats`. EnCodec runs its 48 kHz architecture with random weights (speed does not
depend on them) at 6 kbps. Install it with `pip install --no-deps encodec einops`: its declared torchaudio
dependency is not installable here, so the worker stubs that import (only EnCodec's losses and demo use it).

    python bench/speed_vs_encodec.py --audio sixty.wav [--repeats 3] [--model W.safetensors]

The audio should be 60 s of stereo music (docs/model-card.md names the clip used for the published figures).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

ENCODEC_WORKER = r"""
import sys, time, types
stub = types.ModuleType("torchaudio"); stub.transforms = types.ModuleType("torchaudio.transforms")
sys.modules["torchaudio"] = stub; sys.modules["torchaudio.transforms"] = stub.transforms
import numpy as np, soundfile as sf, soxr, torch
from encodec import EncodecModel
mode, src, dst = sys.argv[1:4]
torch.manual_seed(0)
model = EncodecModel.encodec_model_48khz(pretrained=False).eval()
model.set_target_bandwidth(6.0)
with torch.inference_mode():
    if mode == "encode":
        audio, sr = sf.read(src, dtype="float32", always_2d=True)
        wav = torch.from_numpy(soxr.resample(audio, sr, 48000, "VHQ").T.copy())[None]
        t = time.perf_counter()
        frames = model.encode(wav)
        inner = time.perf_counter() - t
        arrays = {f"codes{i}": c.numpy().astype(np.int16) for i, (c, _) in enumerate(frames)}
        arrays.update({f"scale{i}": s.numpy() for i, (_, s) in enumerate(frames) if s is not None})
        np.savez(dst, n=wav.shape[-1], frames=len(frames), **arrays)
    else:
        z = np.load(src)
        frames = [(torch.from_numpy(z[f"codes{i}"].astype(np.int64)),
                   torch.from_numpy(z[f"scale{i}"]) if f"scale{i}" in z else None) for i in range(int(z["frames"]))]
        t = time.perf_counter()
        out = model.decode(frames)[0, :, : int(z["n"])]
        inner = time.perf_counter() - t
        sf.write(dst, out.numpy().T, 48000, subtype="PCM_16")
print(f"INNER {inner:.3f}")
"""


def timed(cmd: list[str]) -> tuple[float, float | None]:
    """Wall seconds of a whole process, and the in-process model time it reports (if any)."""
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(cmd[:3])} failed:\n{done.stderr[-2000:]}")
    inner = [float(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("INNER ")]
    return wall, (inner[0] if inner else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audio", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=None, help="m2lcodec weights (default: the bundled model)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    info = sf.info(args.audio)
    seconds = info.frames / info.samplerate
    m2l = [sys.executable, "-m", "m2lcodec"]
    model = ["--model", args.model] if args.model else []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        worker = work / "encodec_worker.py"
        worker.write_text(ENCODEC_WORKER)
        runs = {
            "m2lcodec compress": m2l + ["compress", args.audio, str(work / "a.m2l"), "--force", *model],
            "m2lcodec decompress": m2l + ["decompress", str(work / "a.m2l"), str(work / "a.wav"), "--force", *model],
            "encodec-48k encode": [sys.executable, str(worker), "encode", args.audio, str(work / "e.npz")],
            "encodec-48k decode": [sys.executable, str(worker), "decode", str(work / "e.npz"), str(work / "e.wav")],
        }
        results = {}
        for name, cmd in runs.items():
            best = min((timed(cmd) for _ in range(args.repeats)), key=lambda r: r[0])
            results[name] = {"wall_s": best[0], "in_process_s": best[1], "x_real_time": seconds / best[0]}
            extra = f" (model alone {best[1]:.2f} s)" if best[1] is not None else ""
            print(f"{name:22s} {best[0]:6.2f} s whole process = {seconds / best[0]:5.1f}x real time{extra}", flush=True)
    ratio = results["encodec-48k decode"]["wall_s"] / results["m2lcodec decompress"]["wall_s"]
    print(f"{info.channels} ch x {seconds:.1f} s; m2lcodec decompress is {ratio:.2f}x EnCodec-48k's decode speed "
          f"(whole process, same run)")
    if args.json:
        Path(args.json).write_text(json.dumps({"audio": args.audio, "seconds": seconds, "channels": info.channels,
                                               "results": results}, indent=1))


if __name__ == "__main__":
    main()
