#!/usr/bin/env python3
"""Cut deterministic benchmark clips from a list of audio files or a folder.

Example::

    python bench/prepare_clips.py --list /root/m2l-corpus/val.txt --out clips/ \\
        --count 20 --seconds 10 --seed 0
    python bench/prepare_clips.py --dir musiccaps/ --out clips/ --count 100

Files are shuffled with ``--seed``; each file gives one excerpt whose start is
drawn from a SHA-256 hash of ``seed:path`` (stable across machines and Python
runs). Near-silent excerpts (RMS < ``--min-rms``) are skipped by trying the
next ``--seconds`` slot, wrapping around the file. If there are fewer usable
files than ``--count``, later passes take further non-overlapping excerpts.
Clips are written as 16-bit WAV at 44.1 kHz (stereo kept, mono kept, more than
two channels mixed to mono) with a ``clips.json`` manifest (source path, start
time, duration). Only numpy, soundfile and soxr are needed; ffmpeg, if present,
is used for formats libsndfile cannot read (mp3/m4a on old libsndfile).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aiff", ".aif"}
SHORT_TOLERANCE_S = 0.5  # files at most this much shorter than --seconds are zero-padded


@dataclass
class ClipInfo:
    """One manifest entry."""

    file: str
    source: str
    start_s: float
    duration_s: float
    source_sample_rate: int
    channels: int
    rms: float
    padded_s: float = 0.0


def list_sources(list_file: Path | None, folder: Path | None) -> list[Path]:
    """Source paths from a list file (one per line, '#' comments) or a folder (recursive)."""
    if list_file is not None:
        lines = list_file.read_text().splitlines()
        paths = [Path(s.strip()) for s in lines if s.strip() and not s.lstrip().startswith("#")]
    else:
        assert folder is not None
        paths = [
            p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
        ]
    return sorted(set(paths), key=str)


def _stable_unit(seed: int, key: str) -> float:
    """A deterministic number in [0, 1) from seed and key (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _probe(path: Path) -> tuple[int, int, int]:
    """(sample_rate, channels, frames) of a file, via soundfile or ffprobe."""
    try:
        info = sf.info(str(path))
        return int(info.samplerate), int(info.channels), int(info.frames)
    except (RuntimeError, sf.LibsndfileError):
        pass
    if shutil.which("ffprobe") is None:
        raise RuntimeError(f"cannot read {path} (libsndfile failed and ffprobe is missing)")
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
         "stream=sample_rate,channels:format=duration", "-of", "json", str(path)],
        capture_output=True, timeout=60, check=True,
    ).stdout
    meta = json.loads(out)
    rate = int(meta["streams"][0]["sample_rate"])
    return rate, int(meta["streams"][0]["channels"]), int(float(meta["format"]["duration"]) * rate)


def _read(path: Path, start: int, frames: int, rate: int, channels: int) -> np.ndarray:
    """Read ``frames`` samples from ``start`` as float32 ``(samples, channels)``."""
    try:
        data, _ = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
        return data
    except (RuntimeError, sf.LibsndfileError):
        pass
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-ss", f"{start / rate:.6f}", "-i", str(path),
         "-t", f"{frames / rate:.6f}", "-f", "f32le", "-ac", str(channels), "-ar", str(rate), "-"],
        capture_output=True, timeout=120, check=True,
    ).stdout
    return np.frombuffer(out, dtype="<f4").reshape(-1, channels)[:frames]


def _safe_stem(path: Path) -> str:
    """File-name-safe short version of a path's stem."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:48] or "clip"


def find_excerpt(
    path: Path, seconds: float, seed: int, min_rms: float, skip_slots: int = 0
) -> tuple[np.ndarray, int, int, float] | None:
    """Pick a non-silent excerpt: (audio (samples, ch), source rate, start frame, padding s).

    The first candidate start is hash-seeded; later candidates step by one
    excerpt length, wrapping around. ``skip_slots`` skips that many usable
    excerpts (for extra passes over the same file).
    """
    rate, channels, total = _probe(path)
    length = int(round(seconds * rate))
    if total < length - SHORT_TOLERANCE_S * rate or total <= 0:
        return None
    span = max(total - length, 0)
    first = int(_stable_unit(seed, str(path)) * (span + 1))
    n_slots = max(1, span // length + 1)
    found = 0
    for k in range(n_slots):
        start = (first + k * length) % (span + 1)
        audio = _read(path, start, length, rate, channels)
        if audio.shape[0] == 0:
            continue
        if float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) < min_rms:
            continue
        if found == skip_slots:
            padding = (length - audio.shape[0]) / rate
            if audio.shape[0] < length:
                audio = np.pad(audio, ((0, length - audio.shape[0]), (0, 0)))
            return audio, rate, start, padding
        found += 1
    return None


def prepare(
    sources: list[Path], out_dir: Path, count: int, seconds: float, seed: int,
    sample_rate: int = 44_100, min_rms: float = 1e-3,
) -> list[ClipInfo]:
    """Write up to ``count`` clips and ``clips.json`` into ``out_dir``; return the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    order = [sources[i] for i in np.random.default_rng(seed).permutation(len(sources))]
    clips: list[ClipInfo] = []
    exhausted: set[Path] = set()
    passes = 0
    while len(clips) < count and len(exhausted) < len(order):
        for path in order:
            if len(clips) >= count:
                break
            if path in exhausted:
                continue
            try:
                found = find_excerpt(path, seconds, seed, min_rms, skip_slots=passes)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                print(f"skip {path}: {exc}", file=sys.stderr)
                found = None
            if found is None:
                exhausted.add(path)
                continue
            audio, rate, start, padding = found
            if audio.shape[1] > 2:
                audio = audio.mean(axis=1, keepdims=True)
            if rate != sample_rate:
                audio = soxr.resample(audio, rate, sample_rate, quality="VHQ")
            target = int(round(seconds * sample_rate))
            audio = np.pad(audio, ((0, max(0, target - audio.shape[0])), (0, 0)))[:target]
            name = f"{len(clips):03d}-{_safe_stem(path)}.wav"
            sf.write(out_dir / name, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")
            clips.append(ClipInfo(
                file=name, source=str(path), start_s=round(start / rate, 6),
                duration_s=float(seconds), source_sample_rate=rate, channels=int(audio.shape[1]),
                rms=round(float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))), 6),
                padded_s=round(padding, 6),
            ))
            print(f"{name}  <- {path} @ {start / rate:.2f}s")
        passes += 1
    manifest = {
        "sample_rate": sample_rate, "seconds": seconds, "seed": seed, "min_rms": min_rms,
        "clips": [asdict(c) for c in clips],
    }
    (out_dir / "clips.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return clips


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--list", type=Path, help="text file with one audio path per line")
    src.add_argument("--dir", type=Path, help="folder searched recursively for audio files")
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder for WAVs + clips.json"
    )
    parser.add_argument("--count", type=int, default=20, help="number of clips (default 20)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="selection seed (default 0)")
    parser.add_argument(
        "--sample-rate", type=int, default=44_100, help="output rate (default 44100)"
    )
    parser.add_argument("--min-rms", type=float, default=1e-3, help="near-silence threshold")
    args = parser.parse_args(argv)

    sources = list_sources(args.list, args.dir)
    if not sources:
        parser.error("no audio files found")
    clips = prepare(
        sources, args.out, args.count, args.seconds, args.seed, args.sample_rate, args.min_rms
    )
    print(f"wrote {len(clips)} clips to {args.out} (manifest clips.json)")
    if len(clips) < args.count:
        print(f"warning: only {len(clips)} of {args.count} clips found", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
