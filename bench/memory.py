#!/usr/bin/env python3
"""Peak memory of `m2lcodec decompress` for a short and a long file: decoding must stream.

Example::

    python bench/memory.py                       # 1 and 8 minutes, tiny random weights
    python bench/memory.py --model m2lcodec/weights/default.safetensors --minutes 1 8
    python bench/memory.py --minutes 0.25 2      # a quick check

For each length it synthesises music-like stereo 44.1 kHz audio (notes with harmonics, envelopes and a
little noise; deterministic, written block by block), compresses it with `m2lcodec compress --model`,
then runs `m2lcodec decompress` and reads the child's peak resident set size from os.wait4 (ru_maxrss
of exactly that process). A streaming decoder keeps the peak flat: the ratio long/short should be close
to 1, while a decoder that holds the whole signal grows with the length (8 minutes of stereo float32
audio alone are 170 MB). The peak of `compress`, which reads the whole file, and of a bare import of
the codec are printed for comparison. Without --model a tiny randomly initialised model is used: memory
is about the audio path, not the network, and the tiny model keeps the run short.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 44100
BLOCK_SECONDS = 10.0
NOTE_SECONDS = 0.25


def music_block(start: int, n: int, sample_rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """Samples [start, start + n) of an endless deterministic stereo piece, as (n, 2) float32.
    Note k starts at k * 0.25 s, lasts 0.5 s, and takes its pitch and phases from rng(seed, k), so
    any block can be made on its own and consecutive blocks join seamlessly."""
    t = (start + np.arange(n)) / sample_rate
    out = np.zeros((n, 2))
    first = max(0, int((t[0] - 2 * NOTE_SECONDS) // NOTE_SECONDS))
    last = int(t[-1] // NOTE_SECONDS)
    for k in range(first, last + 1):
        rng = np.random.default_rng([seed, k])
        onset = k * NOTE_SECONDS
        lo = max(0, int(np.ceil(onset * sample_rate)) - start)
        hi = min(n, int(np.ceil((onset + 2 * NOTE_SECONDS) * sample_rate)) - start)
        if hi <= lo:
            continue
        tt = t[lo:hi] - onset
        env = np.minimum(tt / 0.01, 1.0) * np.exp(-6.0 * tt) * np.clip((2 * NOTE_SECONDS - tt) / 0.01, 0, 1)
        f0 = 110.0 * 2 ** (rng.integers(0, 36) / 12)
        for h in range(1, 12):
            if f0 * h >= 16000:
                break
            phases = rng.uniform(0, 2 * np.pi, 2)
            for c in range(2):
                out[lo:hi, c] += (0.12 / h) * (1 - 0.2 * c) * env * np.sin(2 * np.pi * f0 * h * tt + phases[c])
    noise = np.random.default_rng([seed, 10**9, start]).standard_normal((n, 2))
    return (out + 0.003 * noise).astype(np.float32)


def write_music(path: Path, minutes: float) -> int:
    """Write `minutes` of the piece as 16-bit stereo WAV without holding it in memory; returns samples."""
    total = int(round(minutes * 60 * SAMPLE_RATE))
    block = int(BLOCK_SECONDS * SAMPLE_RATE)
    with sf.SoundFile(str(path), "w", SAMPLE_RATE, 2, subtype="PCM_16", format="WAV") as f:
        for start in range(0, total, block):
            f.write(music_block(start, min(block, total - start)))
    return total


def tiny_weights(path: Path) -> Path:
    """A tiny randomly initialised model (seed 0), as the tests use."""
    import torch

    from m2lcodec.model import Music2Latent2, get_config
    from m2lcodec.weights import save_weights

    torch.manual_seed(0)
    cfg = get_config("tiny")
    save_weights(path, cfg, Music2Latent2(cfg).state_dict())
    return path


def run_measured(args: list[str], log: Path) -> tuple[int, float, float]:
    """Run a command; returns (exit status, peak RSS in MiB of that child, wall seconds)."""
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen consistent
    peak = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20  # KiB on Linux
    return proc.returncode, peak, time.perf_counter() - t0


def m2lcodec(*args) -> list[str]:
    return [sys.executable, "-m", "m2lcodec.cli", *[str(a) for a in args]]


def check(status: int, what: str, log: Path) -> None:
    if status != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        sys.exit(f"error: {what} failed with status {status}: {' | '.join(tail)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="weights file (default: tiny random weights made here)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 8.0],
                        help="lengths to measure (default: 1 8); the ratio is last / first")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = parser.parse_args()
    if any(m <= 0 for m in args.minutes):
        parser.error("--minutes must be positive")

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="m2l-memory-")
        work = Path(tmp.name)
    else:
        work = args.workdir
        work.mkdir(parents=True, exist_ok=True)
    try:
        model = args.model if args.model is not None else tiny_weights(work / "tiny-random.safetensors")
        if not model.is_file():
            sys.exit(f"error: model weights not found: {model}")
        env_threads = os.environ.get("OMP_NUM_THREADS", "(unset)")
        print(f"model {model}, device {args.device}, OMP_NUM_THREADS={env_threads}")
        status, base_peak, _ = run_measured(
            [sys.executable, "-c", "import m2lcodec.cli, m2lcodec.codec, torch"], work / "import.log")
        check(status, "import", work / "import.log")
        print(f"bare import of the codec: peak RSS {base_peak:.0f} MiB")

        rows = []
        for minutes in args.minutes:
            tag = f"{minutes:g}min"
            wav, m2l, out = work / f"{tag}.wav", work / f"{tag}.m2l", work / f"{tag}.out.wav"
            samples = write_music(wav, minutes)
            status, c_peak, c_time = run_measured(
                m2lcodec("compress", wav, m2l, "--model", model, "--device", args.device, "--force"),
                work / f"{tag}.compress.log")
            check(status, f"compress {tag}", work / f"{tag}.compress.log")
            status, d_peak, d_time = run_measured(
                m2lcodec("decompress", m2l, out, "--model", model, "--device", args.device, "--force"),
                work / f"{tag}.decompress.log")
            check(status, f"decompress {tag}", work / f"{tag}.decompress.log")
            info = sf.info(str(out))
            if (info.frames, info.channels, info.samplerate) != (samples, 2, SAMPLE_RATE):
                sys.exit(f"error: {out} has {info.frames} x {info.channels} at {info.samplerate} Hz, "
                         f"expected {samples} x 2 at {SAMPLE_RATE} Hz")
            row = {"minutes": minutes, "samples": samples, "m2l_bytes": m2l.stat().st_size,
                   "compress_peak_mib": round(c_peak, 1), "compress_s": round(c_time, 2),
                   "decompress_peak_mib": round(d_peak, 1), "decompress_s": round(d_time, 2)}
            rows.append(row)
            print(f"{minutes:g} min: decompress peak RSS {d_peak:.0f} MiB ({d_time:.1f} s), "
                  f"compress peak RSS {c_peak:.0f} MiB ({c_time:.1f} s), .m2l {m2l.stat().st_size} bytes")
            for p in (wav, out):
                p.unlink()  # keep the disk footprint to one length at a time

        first, last = rows[0], rows[-1]
        ratio = last["decompress_peak_mib"] / first["decompress_peak_mib"]
        above = [max(r["decompress_peak_mib"] - base_peak, 1e-9) for r in (first, last)]
        print(f"decompress peak RSS {last['minutes']:g} min / {first['minutes']:g} min: {ratio:.3f} "
              f"({last['decompress_peak_mib']:.0f} / {first['decompress_peak_mib']:.0f} MiB; "
              f"above the bare import: {above[1]:.0f} / {above[0]:.0f} MiB)")
        if args.json:
            print(json.dumps({"model": str(model), "device": args.device, "import_peak_mib": round(base_peak, 1),
                              "runs": rows, "decompress_peak_ratio": round(ratio, 4)}))
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
