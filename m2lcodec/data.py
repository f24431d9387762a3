"""Training data: audio files -> cached 16-bit arrays -> random two-chunk crops as spectrograms.

Decoding Ogg/MP3 and resampling is slow, and a corpus is read many times, so every file is decoded once
to a memory-mapped int16 .npy at 44.1 kHz (channels, samples) in a cache folder, keyed by path, size and
mtime. Crops are drawn in worker processes (an IterableDataset), each worker with its own seeded stream.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from m2lcodec.spectral import CHUNK_SAMPLES, PAD_LEFT, SAMPLE_RATE, wave_to_spec

CROP_SAMPLES = 2 * CHUNK_SAMPLES + PAD_LEFT  # 67072: 128 frames = two chunks
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif"}


def list_audio(path: str | Path) -> list[Path]:
    """A folder (searched recursively) or a text file with one audio path per line."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if path.is_file() and path.suffix.lower() == ".txt":
        return [Path(line.strip()) for line in path.read_text().splitlines() if line.strip()]
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"no such data folder or file list: {path}")


def _cache_name(path: Path) -> str:
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}|{SAMPLE_RATE}"
    return hashlib.sha1(key.encode()).hexdigest()[:20] + ".npy"


def cached_audio(path: Path, cache_dir: Path) -> np.ndarray:
    """int16 (channels, samples) at 44.1 kHz, memory-mapped; decoded and written on first use."""
    # imported here so the model/training modules do not depend on the I/O layer at import time
    from m2lcodec.audio import read_audio, resample

    target = cache_dir / _cache_name(path)
    if not target.exists():
        audio, sr = read_audio(path)
        audio = resample(audio, sr, SAMPLE_RATE)
        pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, pcm)
        os.replace(tmp, target)
    return np.load(target, mmap_mode="r")


def build_cache(files: list[Path], cache_dir: Path) -> list[tuple[Path, int]]:
    """Decode every file into the cache; returns (file, samples) for the readable ones."""
    out = []
    for f in files:
        try:
            out.append((f, cached_audio(f, cache_dir).shape[1]))
        except Exception as err:  # a broken file in a corpus is skipped, and said so
            print(f"skipping {f}: {err}")
    return out


@dataclass
class CropConfig:
    crop_samples: int = CROP_SAMPLES
    min_rms: float = 1e-3  # near-silent crops are skipped
    gain_db: tuple[float, float] | None = None  # optional random gain augmentation range
    max_tries: int = 50


class CropDataset(IterableDataset):
    """Endless random crops (2, 1024, 128) from cached audio, one random channel each.

    Files are drawn in proportion to their length (uniform over audio time). Each distributed process
    (`rank`) and each worker draws its own random stream, seeded from (seed, rank, worker, epoch).
    """

    def __init__(self, files: list[Path], cache_dir: Path, crop: CropConfig = CropConfig(), seed: int = 0,
                 rank: int = 0, epoch: int = 0) -> None:
        super().__init__()
        self.entries = [(f, n) for f, n in build_cache(files, cache_dir) if n >= crop.crop_samples]
        if not self.entries:
            raise ValueError("no usable training audio (every file missing, broken or shorter than a crop)")
        self.cache_dir, self.crop, self.seed = cache_dir, crop, seed
        self.rank, self.epoch = rank, epoch
        lengths = np.array([n for _, n in self.entries], dtype=np.float64)
        self.weights = lengths / lengths.sum()

    def draw(self, rng: np.random.Generator) -> torch.Tensor:
        """One waveform crop (CROP_SAMPLES,) float32, not near-silent."""
        for _ in range(self.crop.max_tries):
            path, n = self.entries[rng.choice(len(self.entries), p=self.weights)]
            audio = cached_audio(path, self.cache_dir)
            start = int(rng.integers(0, n - self.crop.crop_samples + 1))
            ch = int(rng.integers(0, audio.shape[0]))
            wave = audio[ch, start : start + self.crop.crop_samples].astype(np.float32) / 32768.0
            if np.sqrt(np.mean(wave**2)) < self.crop.min_rms:
                continue
            if self.crop.gain_db is not None:
                wave = wave * 10 ** (rng.uniform(*self.crop.gain_db) / 20)
            return torch.from_numpy(wave)
        raise RuntimeError("could not find a non-silent crop: is the training audio silent?")

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info else 0
        rng = np.random.default_rng([self.seed, self.rank, worker, self.epoch])
        while True:
            yield wave_to_spec(self.draw(rng)[None])[0]


def fixed_crops(files: list[Path], cache_dir: Path, count: int, seed: int = 1234) -> torch.Tensor:
    """A deterministic validation batch (count, 2, 1024, 128): same crops every time."""
    ds = CropDataset(files, cache_dir, seed=seed)
    rng = np.random.default_rng(seed)
    return torch.stack([wave_to_spec(ds.draw(rng)[None])[0] for _ in range(count)])
