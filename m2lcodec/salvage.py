"""The timeline of a salvaging decode: lost chunk ranges of a damaged .m2l -> output pieces.

A salvaging reader (docs/format.md, "Salvaging a damaged file") reports which chunks of a damaged file are
lost. `salvage_plan` turns those ranges into pieces that tile the output in order: silence where a lost
chunk's frames overlap the audio, and decoded pieces between, each restarting at its first intact chunk so
that it matches a ranged decode warming up on that chunk (docs/codec.md, "Damaged files"). Only sample
arithmetic lives here (no model, no file reading); codec.py's decode_stream and decompress_file use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from m2lcodec import spectral


@dataclass(frozen=True)
class DamagedRange:
    """A stretch of a salvaged decode's output (in the file's timeline) that is silence: lost frames."""

    first_sample: int  # [first_sample, stop_sample) at sample_rate
    stop_sample: int
    sample_rate: int
    frames: str  # "frame 3" or "frames 3-5"
    reason: str  # what was wrong, with byte offsets

    @property
    def start(self) -> float:
        return self.first_sample / self.sample_rate

    @property
    def end(self) -> float:
        return self.stop_sample / self.sample_rate

    def describe(self) -> str:
        """One line, e.g. 'damaged: 11.85-23.78 s (frame 1; CRC mismatch at byte 16547)'."""
        return f"damaged: {self.start:.2f}-{self.end:.2f} s ({self.frames}; {self.reason})"


RESTART_GRID_LIMIT = 2048  # coarser sample grids (odd output rates) are rounded instead of met exactly


def _grid(sample_rate: int) -> int:
    """Model-rate sample spacing at which model and output sample positions coincide (1 if too coarse)."""
    grid = spectral.SAMPLE_RATE // math.gcd(spectral.SAMPLE_RATE, sample_rate)
    return grid if grid <= RESTART_GRID_LIMIT else 1


def restart_sample(chunk: int, sample_rate: int) -> tuple[int, int]:
    """(model-rate sample, output sample) where a decode that restarts at `chunk` after lost chunks
    begins: the first sample that chunk's own frames cover fully (chunk * 32768 at the model rate; the
    1536 before it also need the lost chunk's frames), moved up onto the shared sample grid."""
    m = chunk * spectral.CHUNK_SAMPLES
    m += -m % _grid(sample_rate)
    return m, -(-m * sample_rate // spectral.SAMPLE_RATE)


def gap_sample(chunk: int, sample_rate: int) -> int:
    """Output sample where a lost chunk's time begins: the first sample its frames overlap (chunk * 32768
    - 1536 at the model rate), moved down onto the shared sample grid."""
    m = max(0, chunk * spectral.CHUNK_SAMPLES - spectral.PAD_LEFT)
    m -= m % _grid(sample_rate)
    return m * sample_rate // spectral.SAMPLE_RATE


@dataclass(frozen=True)
class PlanPiece:
    """One stretch of a salvaging decode's output: decoded from intact chunks, or silence for lost ones."""

    first_sample: int  # output samples [first_sample, stop_sample) at the output rate
    stop_sample: int
    start_chunk: int  # the chunks [start_chunk, stop_chunk) it stands for
    stop_chunk: int
    lost: bool


def merge_ranges(lost: Iterable[tuple[int, int]], num_chunks: int) -> list[tuple[int, int]]:
    """Sorted, merged [start, stop) chunk ranges inside [0, num_chunks); ValueError for a bad range."""
    ranges = sorted((int(a), int(b)) for a, b in lost)
    merged: list[list[int]] = []
    for a, b in ranges:
        if not 0 <= a < b <= num_chunks:
            raise ValueError(f"lost chunk range [{a}, {b}) outside [0, {num_chunks})")
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def salvage_plan(lost: Iterable[tuple[int, int]], num_chunks: int, num_samples: int,
                 sample_rate: int) -> list[PlanPiece]:
    """The output timeline of a decode with lost chunk ranges: pieces in order that tile [0, num_samples).

    A lost range [a, b) is silent from `gap_sample(a)` (where chunk a's frames begin to overlap the audio)
    to `restart_sample(b)` (the first sample chunk b alone covers fully); the intact pieces between are
    decoded, each restarting at its first chunk as a ranged decode warming up on that chunk would."""
    pieces: list[PlanPiece] = []
    cursor = chunk = 0
    for a, b in merge_ranges(lost, num_chunks):
        if chunk < a:
            stop = max(cursor, min(num_samples, gap_sample(a, sample_rate)))
            pieces.append(PlanPiece(cursor, stop, chunk, a, False))
            cursor = stop
        stop = num_samples if b == num_chunks else max(cursor, min(num_samples, restart_sample(b, sample_rate)[1]))
        pieces.append(PlanPiece(cursor, stop, a, b, True))
        cursor, chunk = stop, b
    if chunk < num_chunks:
        pieces.append(PlanPiece(cursor, num_samples, chunk, num_chunks, False))
    return pieces
