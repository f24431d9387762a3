"""Two models' per-clip scores from bench/compare_models.py runs, paired clip by clip: the shipping rule.

The decode is deterministic, so a model scored in an earlier run need not be decoded again: this reads
the per-clip values of a candidate and of the shipped weights (from the same or different JSON files),
keeps the clips both have, and prints per measure the candidate's mean difference, its standard error
and on how many clips the candidate is better. The rule the shipped weights are replaced by (docs/training.md,
session 28): the candidate is better on ViSQOL (paired mean > 0) and level on mel distance (paired mean
below one standard error above 0).

    python bench/paired.py --candidate /root/r.json:ema --shipped docs/runs/compare-v25-3275-20clips.json:ema

Exits 0 if the rule holds, 1 if it does not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

# Which direction is better for each measure (the rest are read against the original, not ranked).
HIGHER_IS_BETTER = {"visqol": True, "mel_distance": False, "periodic_db": False, "onset_corr": True}


@dataclass(frozen=True)
class PairedDiff:
    """candidate - shipped over the clips both were scored on."""
    measure: str
    mean: float
    stderr: float
    better: int
    count: int


def load_scores(spec: str) -> dict[str, dict[str, float]]:
    """'run.json:NAME' -> {clip: {measure: value}} for model NAME of a compare_models.py JSON."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path:
        raise ValueError(f"expected JSON:NAME, got {spec!r}")
    per_clip = json.loads(Path(path).read_text()).get("per_clip")
    if not isinstance(per_clip, dict):
        raise ValueError(f"{path} is not a bench/compare_models.py result (no per_clip scores)")
    if name not in per_clip:
        raise ValueError(f"{path} has no model {name!r} (it has {', '.join(sorted(per_clip))})")
    return per_clip[name]


def paired_diffs(candidate: dict[str, dict[str, float]], shipped: dict[str, dict[str, float]],
                 measures: tuple[str, ...] = tuple(HIGHER_IS_BETTER)) -> list[PairedDiff]:
    """Paired mean difference, its standard error (sample sd / sqrt n) and the count of better clips."""
    clips = sorted(set(candidate) & set(shipped))
    if len(clips) < 2:
        raise ValueError(f"the two runs share {len(clips)} clip(s); pairing needs at least 2")
    out = []
    for m in measures:
        d = [candidate[c][m] - shipped[c][m] for c in clips]
        mean = sum(d) / len(d)
        sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))
        better = sum((x > 0) if HIGHER_IS_BETTER[m] else (x < 0) for x in d)
        out.append(PairedDiff(m, mean, sd / math.sqrt(len(d)), better, len(d)))
    return out


def ships(diffs: list[PairedDiff]) -> bool:
    """The shipping rule: better on ViSQOL and level on mel (no worse than one standard error)."""
    by = {d.measure: d for d in diffs}
    return by["visqol"].mean > 0 and by["mel_distance"].mean < by["mel_distance"].stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidate", required=True, help="JSON:NAME of the candidate")
    parser.add_argument("--shipped", required=True, help="JSON:NAME of the shipped weights")
    args = parser.parse_args(argv)
    try:
        diffs = paired_diffs(load_scores(args.candidate), load_scores(args.shipped))
    except (OSError, KeyError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("| measure | candidate - shipped | standard error | candidate better on |")
    print("|---|---|---|---|")
    for d in diffs:
        print(f"| {d.measure} | {d.mean:+.4f} | {d.stderr:.4f} | {d.better} of {d.count} |")
    verdict = ships(diffs)
    print(f"shipping rule (ViSQOL > 0, mel < +1 se): {'ships' if verdict else 'does not ship'}")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
