"""EDM / consistency-model math shared by training and inference.

Everything about noise levels lives here and only here: the Karras sigma schedule over a continuous
index i in [0, 1], the c_skip / c_out / c_in output parameterisation, the log-normal index sampling used
in training, and the consistency-step schedule (the paper's exponential one and an ECT-style anneal
that starts as plain denoising). Constants follow Music2Latent (design doc section 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
RHO = 7.0
SIGMA_DATA = 0.5


def sigma_from_index(i: torch.Tensor | float) -> torch.Tensor:
    """Karras schedule: i=0 -> SIGMA_MIN, i=1 -> SIGMA_MAX."""
    i = torch.as_tensor(i, dtype=torch.float32)
    lo, hi = SIGMA_MIN ** (1 / RHO), SIGMA_MAX ** (1 / RHO)
    return (lo + i * (hi - lo)) ** RHO


def c_skip(sigma: torch.Tensor) -> torch.Tensor:
    """Weight of the noisy input in the output; exactly 1 at SIGMA_MIN (boundary condition)."""
    return SIGMA_DATA**2 / ((sigma - SIGMA_MIN) ** 2 + SIGMA_DATA**2)


def c_out(sigma: torch.Tensor) -> torch.Tensor:
    """Weight of the network output; exactly 0 at SIGMA_MIN (boundary condition)."""
    return SIGMA_DATA * (sigma - SIGMA_MIN) / torch.sqrt(SIGMA_DATA**2 + sigma**2)


def c_in(sigma: torch.Tensor) -> torch.Tensor:
    """Input scaling so the network sees unit-variance inputs at every noise level."""
    return 1.0 / torch.sqrt(sigma**2 + SIGMA_DATA**2)


def noise_embedding_input(sigma: torch.Tensor) -> torch.Tensor:
    """The scalar that the sinusoidal noise embedding sees: log(sigma) / 4."""
    return torch.log(sigma) / 4.0


def cond_level(sigma_cond: float) -> float:
    """The noise level a re-noised estimate is evaluated at: sigma_cond, but at least SIGMA_MIN (where f is
    exactly the identity)."""
    return max(sigma_cond, SIGMA_MIN)


def renoise(x: torch.Tensor, sigma_cond: float, noise: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The decode's re-noising of a first estimate: (x + sigma_cond * noise, cond_level(sigma_cond)).
    sigma_cond 0 adds no noise and evaluates at SIGMA_MIN, where f is exactly the identity."""
    return x + sigma_cond * noise, cond_level(sigma_cond)


class IndexSampler:
    """Draws training noise indices: a grid of `points` indices weighted by a log-normal density on
    sigma (mean -1.1, std 2.0 in log sigma), then uniform jitter inside the drawn cell."""

    def __init__(self, points: int = 10_000, log_mean: float = -1.1, log_std: float = 2.0) -> None:
        grid = torch.linspace(0.0, 1.0, points + 1)
        centres = (grid[:-1] + grid[1:]) / 2
        log_sigma = torch.log(sigma_from_index(centres))
        density = torch.exp(-0.5 * ((log_sigma - log_mean) / log_std) ** 2)
        # convert a density over log sigma into probabilities of grid cells (|d log sigma / d i| * di)
        edges_log = torch.log(sigma_from_index(grid))
        self.probs = density * (edges_log[1:] - edges_log[:-1])
        self.probs = self.probs / self.probs.sum()
        self.points = points

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        cells = torch.multinomial(self.probs, n, replacement=True, generator=generator)
        jitter = torch.rand(n, generator=generator)
        return (cells.float() + jitter) / self.points


@dataclass(frozen=True)
class StepSchedule:
    """Consistency step delta_i(k) in index units, as a function of the training step k.

    kind="paper": delta = 0.1 ** (1 + 2 k / total), floored at `floor` (Music2Latent).
    kind="ect":   holds `start` for the first `hold_fraction` of the run (>= 1 means the teacher index is
                  clamped at 0, i.e. the teacher is the clean signal and training is plain denoising: ECT
                  tunes a trained diffusion model), then moves log-linearly onto the paper's curve, which
                  it joins at `anneal_fraction` of the run; after that it is the paper's.
    """

    kind: str = "ect"
    start: float = 1.0
    anneal_fraction: float = 0.6
    floor: float = 0.001
    hold_fraction: float = 0.3  # bench/studies/toy_study.py: annealing before the denoiser works loses everything

    def paper(self, step: int, total: int) -> float:
        return max(0.1 ** (1 + 2 * step / max(total, 1)), self.floor)

    def __call__(self, step: int, total: int) -> float:
        target = self.paper(step, total)
        if self.kind == "paper":
            return target
        if self.kind != "ect":
            raise ValueError(f"unknown step schedule kind {self.kind!r}")
        hold_steps = int(self.hold_fraction * total)
        anneal_steps = max(int(self.anneal_fraction * total), hold_steps + 1)
        if step >= anneal_steps:
            return target
        if step < hold_steps:
            return self.start
        p = (step - hold_steps) / (anneal_steps - hold_steps)
        return math.exp((1 - p) * math.log(self.start) + p * math.log(target))


WEIGHTINGS = ("paper", "clamped")


def consistency_weight(sigma_student: torch.Tensor, sigma_teacher: torch.Tensor,
                       kind: str = "paper") -> torch.Tensor:
    """Loss weight of one (student, teacher) pair.

    kind="paper":   1 / (sigma_student - sigma_teacher) (Music2Latent). Made for small steps, where the
                    student-teacher gap shrinks with the step. In ECT's early phase the teacher is the
                    clean signal, the gap no longer shrinks, and 1/sigma starves high noise levels: the
                    gradient on the network output F is c_out(sigma)/sigma, 0.006 at sigma_max vs ~1 at
                    low sigma.
    kind="clamped": 1 / min(sigma_student - sigma_teacher, c_out(sigma_student)). Equal to the paper's
                    whenever the step is smaller than c_out; in the plain-denoising limit it is EDM's
                    weighting (unit gradient on F at every noise level). See docs/training.md.
    """
    gap = sigma_student - sigma_teacher
    if kind == "clamped":
        gap = torch.minimum(gap, c_out(sigma_student))
    elif kind != "paper":
        raise ValueError(f"unknown weighting {kind!r}; expected one of {WEIGHTINGS}")
    return 1.0 / gap


def teacher_index(i_student: torch.Tensor, delta: float) -> torch.Tensor:
    """Teacher index = student index - delta, clamped at 0 where f(x, sigma_min) = x holds."""
    return torch.clamp(i_student - delta, min=0.0)
