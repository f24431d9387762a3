"""Recipe questions answered on the band toy of tests/test_train.py (docs/training.md), in minutes on a CPU.

The toy: 8 two-chunk crops that differ only in which 128-bin band holds their energy, too faint to see
through the noise at sigma_max, so a decode that beats silence must read the latents. `tiny`, the real
loss (clamped weighting, latent hinge, noise levels centred at sigma ~ 20), Adam 1e-3.

    python bench/studies/toy_study.py schedule --steps 360       # plain denoising vs ECT (with/without hold) vs paper
    python bench/studies/toy_study.py latent-noise --steps 240   # training with int8-step latent noise or without

`schedule` prints, every 60 steps, the one-step reconstruction error from sigma_max relative to silence,
the swap ratio and the mel distance. `latent-noise` prints how much worse the decode gets with int8
latents (round(127 z) / 127, as the .m2l container stores them) than with the exact ones.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from m2lcodec import schedule
from m2lcodec.model import Music2Latent2, get_config
from m2lcodec.train import ConsistencyLoss, validate

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from test_train import band_crops  # noqa: E402  (the toy lives with the test that uses it)

INT8_STEP = 2 / 254


def train_toy(steps: int, delta_at, lr: float, latent_noise: float = 0.0, report=None) -> Music2Latent2:
    torch.manual_seed(0)
    spec = band_crops()
    model = Music2Latent2(get_config("tiny"))
    loss_fn = ConsistencyLoss(model, weighting="clamped", noise_log_mean=3.0, latent_std_floor=0.3,
                              latent_std_weight=100.0, latent_noise=latent_noise)
    opt = torch.optim.Adam(model.parameters(), lr)
    for k in range(steps):
        loss, _ = loss_fn(spec, delta=delta_at(k))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if report is not None:
            report(k + 1, model, spec)
    return model


def study_schedule(steps: int, lr: float) -> None:
    variants = {"denoise": lambda k: 1.0,
                "ect": lambda k: schedule.StepSchedule(kind="ect", hold_fraction=0.0, anneal_fraction=0.5)(k, steps),
                "ect-hold": lambda k: schedule.StepSchedule(kind="ect")(k, steps),  # the default: hold 0.3, anneal 0.6
                "paper": lambda k: schedule.StepSchedule(kind="paper")(k, steps)}
    for name, delta_at in variants.items():
        t0 = time.time()

        def report(step: int, model: Music2Latent2, spec: torch.Tensor) -> None:
            if step % 60 == 0:
                m = validate(model, spec, None)
                print(f"{name:8s} step {step:4d} delta {delta_at(step - 1):.4f} rec/silence "
                      f"{m['rec_mse'] / m['zeros_mse']:.2f} swap {m['swap_ratio']:.2f} mel {m['rec_mel']:.3f} "
                      f"({time.time() - t0:.0f} s)", flush=True)

        train_toy(steps, delta_at, lr, report=report)


def study_latent_noise(steps: int, lr: float) -> None:
    for width in (0.0, INT8_STEP):
        model = train_toy(steps, lambda k: 1.0, lr, latent_noise=width).eval()
        spec = band_crops()
        x = spec[..., :64][:, None]
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * schedule.SIGMA_MAX
        sigma = torch.full((8, 1), schedule.SIGMA_MAX)
        with torch.no_grad():
            z = model.encode(x[:, 0])
            exact = model.denoise(noise, sigma, model.decoder_features(z))
            int8 = model.denoise(noise, sigma, model.decoder_features(torch.round(z * 127) / 127))
            swapped = model.denoise(noise, sigma, model.decoder_features(z.roll(1, 0)))
        err = float((exact - x).pow(2).mean())
        err8 = float((int8 - x).pow(2).mean())
        print(f"latent_noise {width:.5f}: rec/silence {err / float(x.pow(2).mean()):.3f}, int8/exact error "
              f"{err8 / err:.5f}, rms(int8 - exact decode) {float((int8 - exact).pow(2).mean().sqrt()):.2e}, "
              f"swap ratio {float((swapped - x).pow(2).mean()) / err:.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", choices=["schedule", "latent-noise"])
    ap.add_argument("--steps", type=int, default=240)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    (study_schedule if args.study == "schedule" else study_latent_noise)(args.steps, args.lr)


if __name__ == "__main__":
    main()
