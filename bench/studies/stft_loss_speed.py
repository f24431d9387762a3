"""losses.stft_loss (a few lines of torch.stft) vs auraloss.freq.MultiResolutionSTFTLoss: same value, speed
of forward + backward on this CPU, one thread (docs/training.md, "Reconstruction terms").

    pip install --no-deps --target /tmp/aura auraloss && AURALOSS_PATH=/tmp/aura python bench/studies/stft_loss_speed.py
"""

import os
import sys
import time

import torch

if os.environ.get("AURALOSS_PATH"):
    sys.path.insert(0, os.environ["AURALOSS_PATH"])
import auraloss  # noqa: E402

from m2lcodec.losses import stft_loss  # noqa: E402


def timed(fn, n: int = 10) -> float:
    fn().backward()
    t0 = time.perf_counter()
    for _ in range(n):
        fn().backward()
    return (time.perf_counter() - t0) / n * 1000


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ref = torch.randn(4, 34304) * 0.1  # a batch of 4 right-chunk waveforms, as in training
    est = (ref + 0.05 * torch.randn_like(ref)).requires_grad_(True)
    sizes = [2048, 1024, 512, 256]
    aura = auraloss.freq.MultiResolutionSTFTLoss(fft_sizes=sizes, hop_sizes=[n // 4 for n in sizes],
                                                 win_lengths=sizes, w_sc=1.0, w_log_mag=1.0, w_lin_mag=0.0)
    print(f"value: ours {float(stft_loss(est, ref).mean()):.5f}, auraloss {float(aura(est[:, None], ref[:, None])):.5f}")
    print(f"forward + backward: ours {timed(lambda: stft_loss(est, ref).mean()):.1f} ms, "
          f"auraloss {timed(lambda: aura(est[:, None], ref[:, None])):.1f} ms")


if __name__ == "__main__":
    main()
