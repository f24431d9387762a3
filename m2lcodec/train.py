"""Consistency training of Music2Latent2 (design doc sections 3-4), single process or DDP.

One loss, end to end: the student is the consistency model at the higher noise index, the teacher the
same network at the lower index on the same noise and latents, under stop-gradient. The step between
them follows `StepSchedule` (ECT-style anneal from plain denoising by default). Everything needed to
resume exactly (step, weights, optimiser, EMA) is in one atomic checkpoint; `export` turns it into the
small fp16 EMA file the codec loads.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader

from m2lcodec import schedule
from m2lcodec.adversarial import MultiResolutionDiscriminator, discriminator_loss, generator_terms
from m2lcodec.data import CropConfig, CropDataset, fixed_crops, list_audio
from m2lcodec.model import ModelConfig, Music2Latent2, get_config, is_grid_path
from m2lcodec.losses import (SEAM_STARTS, contour_loss, envelope_error, lines_loss, mel_loss, onset_loss,
                             pseudo_huber, seam_level_loss, stft_loss, unrolled_pair)
from m2lcodec.precision import autocast, autocast_dtype
from m2lcodec.spectral import CHUNK_FRAMES, CHUNK_SAMPLES, envelope, spec_to_wave

@dataclass
class TrainConfig:
    preset: str = "small"
    steps: int = 100_000  # total steps of the run: sets the LR and consistency-step schedules
    batch_size: int = 8
    accum_steps: int = 1  # batches per optimiser step (gradient accumulation): a GPU-sized batch on a CPU
    lr: float = 1e-4
    lr_min: float = 1e-6
    warmup_steps: int = 1000
    betas: tuple[float, float] = (0.9, 0.999)
    ema_decay: float = 0.9999
    step_schedule: schedule.StepSchedule = field(default_factory=schedule.StepSchedule)
    precision: str = "auto"  # auto = bf16 autocast where the hardware has bf16 kernels (precision.py), else fp32
    latent_noise: float = 0.0  # uniform noise of this width added to latents (int8 step = 2/255)
    noise_log_mean: float = -1.1  # log-normal density of the training noise levels (Music2Latent)
    noise_log_std: float = 2.0
    weighting: str = "clamped"  # loss weight per noise level: "clamped" or "paper" (schedule.consistency_weight)
    latent_std_floor: float = 0.3  # anti-collapse: hinge on each latent number's std across the batch ...
    latent_std_weight: float = 100.0  # ... weighted by this (0 = off: the paper's single loss)
    envelope_weight: float = 1.0  # anti-collapse of the decoder: its finest features' channel 0 must predict
    #                                the chunk's magnitude envelope (0 = off: the paper's single loss)
    # reconstruction terms (docs/training.md, "Reconstruction terms"; all 0 = the paper's single loss):
    recon_weight: float = 0.0  # (a) stft_loss on the first step from sigma_max, in the decoder's pair context
    recon_fraction: float = 0.5  # share of each batch that trains the decode steps instead of consistency
    recon_context: str = "sampled"  # left chunk of those pairs: "sampled" (its own consistency noise level)
    #                                 or "unrolled" (the codec's first estimate re-noised to recon_sigma_cond)
    recon_sigma_cond: float = 0.0  # (b) the decode's sigma_cond trained in "unrolled" pairs
    emit_weight: float = 0.0  # (b) stft_loss on the left's emitted second step of "unrolled" pairs
    recon_mel_weight: float = 0.0  # (c) log-mel L1 (metrics.mel_distance in torch) added inside those terms
    recon_lines_weight: float = 0.0  # (c) losses.lines_loss (a chunk's frame-mean fine spectrum: harmonic
    #                                  lines, the stem's comb) added inside those terms
    recon_onset_weight: float = 0.0  # (c) losses.onset_loss (1 - correlation of the onset envelopes) inside them
    recon_contour_weight: float = 0.0  # (c) losses.contour_loss (the high band's level across the chunk) inside them
    seam_weight: float = 0.0  # (c) losses.seam_level_loss on the right chunk of those pairs: its step from the
    #                           left chunk's end and its own end level, per band (docs/training.md, "Seam level term")
    seam_start: str = "step"  # the start part of that term: "step" (relative to the left chunk as decoded)
    #                           or "level" (against the original, like the end part); losses.SEAM_STARTS
    adv_weight: float = 0.0  # (d) adversarial hinge term on the right chunk of the unrolled pairs, against a
    #                          multi-resolution STFT discriminator (m2lcodec/adversarial.py; 0 = off, the paper)
    adv_feature_weight: float = 0.0  # (d) the discriminator's feature matching on those chunks (0 = off)
    disc_channels: int = 16  # the discriminator's width
    disc_lr: float = 2e-4  # its Adam lr (betas 0.5, 0.9, as EnCodec's); it steps once per optimiser step
    grad_clip: float = 0.0  # clip the total gradient norm to this (0 = off, the paper's setting); a spike
    #                         at lr 2e-4 collapsed small-v6 at step ~3430 (docs/training.md, "Stability")
    best_metric: str = "pair_mel@0"  # validation metric (lower is better) whose best step is kept as best.pt
    init_weights: str = ""  # fine-tune: start model and EMA from this weights file (step 0, fresh optimiser)
    widen_resampling: bool = False  # overlapping resampling convs (ModelConfig.resample_overlap) for the run's
    #                                 model; a fine-tune starts from the init's function (Music2Latent2.load_adapted)
    edge_padding: str = ""  # ModelConfig.edge_padding of the run's model ("" = the preset's or init's; the
    #                         modes share parameters, so a fine-tune switches by loading the same weights)
    grid_code: int = 0  # ModelConfig.grid_code of the run's model (0 = the preset's or init's); a fine-tune
    #                     adds the grid paths to the init model, starting from the same function
    pos_gain: float = 0.0  # ModelConfig.pos_gain of the run's model (0 = the preset's or init's)
    latent_direct_path: bool | None = None  # ModelConfig.latent_direct_path of a fresh run's model (None = the
    #                                         preset's); off leaves the grid paths as the latents' way in
    grid_lr_scale: float = 1.0  # the grid paths' lr is this times the schedule's (new layers in a trained model)
    gain_db: tuple[float, float] | None = None
    num_workers: int = 1
    seed: int = 0
    log_every: int = 10
    val_every: int = 500
    val_crops: int = 16
    checkpoint_minutes: float = 5.0
    cache_dir: str = ""  # default: RUN_DIR/cache

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        if "step_schedule" in d and isinstance(d["step_schedule"], dict):
            d["step_schedule"] = schedule.StepSchedule(**d["step_schedule"])
        for key in ("betas", "gain_db"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to lr_min at the end of the run."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = min((step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1), 1.0)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * p))


RECON_CONTEXTS = ("sampled", "unrolled")


class ConsistencyLoss(nn.Module):
    """The whole training computation in forward(), so DistributedDataParallel can wrap it.

    With `recon_weight` > 0, the first `recon_fraction` of each batch trains the codec's own decode
    steps instead of the consistency term (docs/training.md, "Reconstruction terms"): the right chunk of
    the pair starts from pure noise at sigma_max and its output, as a waveform, is compared with the crop
    by `stft_loss`. The left chunk of those pairs is either left as the consistency term has it
    (`recon_context="sampled"`, its consistency term kept) or is the codec's own first estimate
    re-noised to `recon_sigma_cond` (`"unrolled"`, via `losses.unrolled_pair`); then `emit_weight`
    adds the same loss on the left's emitted second step, `recon_mel_weight` adds the log-mel L1,
    `recon_lines_weight` the lines term, `recon_onset_weight` the onset term and `recon_contour_weight`
    the contour term inside both, and `seam_weight` adds `seam_level_loss` to the right chunk's. With a
    `discriminator`, `adv_weight` and `adv_feature_weight` add its generator terms on the right chunk
    (`adversarial_term`), and the last pair is kept in `adv_pair` for the discriminator's own step. All
    weights 0 = the paper's single loss."""

    def __init__(self, model: Music2Latent2, latent_noise: float = 0.0, noise_log_mean: float = -1.1,
                 noise_log_std: float = 2.0, latent_std_floor: float = 0.0, latent_std_weight: float = 0.0,
                 weighting: str = "paper", envelope_weight: float = 0.0, recon_weight: float = 0.0,
                 recon_fraction: float = 0.5, recon_context: str = "sampled", recon_sigma_cond: float = 0.0,
                 emit_weight: float = 0.0, recon_mel_weight: float = 0.0, seam_weight: float = 0.0,
                 seam_start: str = "step", recon_lines_weight: float = 0.0,
                 recon_onset_weight: float = 0.0, recon_contour_weight: float = 0.0,
                 discriminator: nn.Module | None = None, adv_weight: float = 0.0,
                 adv_feature_weight: float = 0.0) -> None:
        super().__init__()
        if weighting not in schedule.WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; expected one of {schedule.WEIGHTINGS}")
        if recon_context not in RECON_CONTEXTS:
            raise ValueError(f"unknown recon_context {recon_context!r}; expected one of {RECON_CONTEXTS}")
        if emit_weight > 0 and recon_context != "unrolled":
            raise ValueError("emit_weight needs recon_context='unrolled' (the emitted step of the codec's pair)")
        self.model = model
        self.weighting = weighting
        self.latent_std_floor, self.latent_std_weight = latent_std_floor, latent_std_weight
        self.sampler = schedule.IndexSampler(log_mean=noise_log_mean, log_std=noise_log_std)
        self.latent_noise = latent_noise
        self.envelope_weight = envelope_weight
        self.recon_weight, self.recon_fraction = recon_weight, recon_fraction
        self.recon_context, self.recon_sigma_cond = recon_context, recon_sigma_cond
        self.emit_weight = emit_weight
        self.recon_mel_weight = recon_mel_weight
        self.recon_lines_weight = recon_lines_weight
        self.recon_onset_weight = recon_onset_weight
        self.recon_contour_weight = recon_contour_weight
        if seam_start not in SEAM_STARTS:
            raise ValueError(f"unknown seam_start {seam_start!r}; expected one of {SEAM_STARTS}")
        self.seam_weight, self.seam_start = seam_weight, seam_start
        if (adv_weight > 0 or adv_feature_weight > 0) and (discriminator is None or recon_context != "unrolled"):
            raise ValueError("adv_weight / adv_feature_weight need a discriminator and recon_context='unrolled'")
        self.discriminator = discriminator
        self.adv_weight, self.adv_feature_weight = adv_weight, adv_feature_weight
        self.adv_pair: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_config(cls, model: Music2Latent2, cfg: "TrainConfig",
                    discriminator: nn.Module | None = None) -> "ConsistencyLoss":
        return cls(model, cfg.latent_noise, cfg.noise_log_mean, cfg.noise_log_std, cfg.latent_std_floor,
                   cfg.latent_std_weight, cfg.weighting, cfg.envelope_weight, cfg.recon_weight, cfg.recon_fraction,
                   cfg.recon_context, cfg.recon_sigma_cond, cfg.emit_weight, cfg.recon_mel_weight,
                   cfg.seam_weight, cfg.seam_start, cfg.recon_lines_weight, cfg.recon_onset_weight,
                   cfg.recon_contour_weight, discriminator, cfg.adv_weight, cfg.adv_feature_weight)

    def recon_rows(self, b: int) -> int:
        """How many pairs of a batch of b train the decode steps (the first ones)."""
        if self.recon_weight <= 0 and self.emit_weight <= 0:
            return 0
        return min(b, max(1, round(b * self.recon_fraction)))

    def forward(self, spec: torch.Tensor, delta: float) -> tuple[torch.Tensor, dict[str, float]]:
        """spec (B, 2, 1024, 128) -> (loss, stats). Two chunks, independent noise levels."""
        b = spec.shape[0]
        x = torch.stack([spec[..., :CHUNK_FRAMES], spec[..., CHUNK_FRAMES:]], dim=1)  # (B, 2, 2, F, 64)
        latents = self.model.encode(x.flatten(0, 1))
        if self.latent_noise > 0:
            latents = latents + (torch.rand_like(latents) - 0.5) * self.latent_noise
        feats = self.model.decoder_features(latents)
        stats: dict[str, float] = {}

        n_rec = self.recon_rows(b)
        unrolled = n_rec > 0 and self.recon_context == "unrolled"
        first = n_rec if unrolled else 0  # rows of the consistency term's own forward pass
        loss = torch.zeros((), device=spec.device)
        if first < b:
            xc, fc = x[first:], [f.view(b, 2, *f.shape[1:])[first:].flatten(0, 1) for f in feats]
            bc = b - first
            i_student = self.sampler.sample(2 * bc).to(spec.device).view(bc, 2)
            keep = torch.ones(bc, 2, device=spec.device)
            if n_rec > 0 and not unrolled:  # "sampled": right chunks of the first rows start from sigma_max
                i_student[:n_rec, 1] = 1.0
                keep[:n_rec, 1] = 0.0
            i_teacher = schedule.teacher_index(i_student, delta)
            sigma_s = schedule.sigma_from_index(i_student)
            sigma_t = schedule.sigma_from_index(i_teacher)
            noise = torch.randn_like(xc, dtype=torch.float32)
            expand = (..., None, None, None)
            student = self.model.denoise(xc + sigma_s[expand] * noise, sigma_s, fc)
            x_t = xc + sigma_t[expand] * noise
            if bool((i_teacher == 0).all()):
                teacher = x_t  # f(x, sigma_min) = x exactly: no network evaluation needed
            else:
                with torch.no_grad():
                    teacher = self.model.denoise(x_t, sigma_t, [f.detach() for f in fc])
            weight = schedule.consistency_weight(sigma_s, sigma_t, self.weighting)
            loss = (keep * weight * pseudo_huber(student, teacher.detach())).sum() / b
            if n_rec > 0 and not unrolled:
                rec = self.recon_term(*pair_waves(x[:n_rec], student[:n_rec, 0], student[:n_rec, 1]))
                loss = loss + self.recon_weight * rec.mean() * n_rec / b
                stats["recon"] = float(rec.detach().mean())
        if unrolled:
            fr = [f.view(b, 2, *f.shape[1:])[:n_rec].flatten(0, 1) for f in feats]
            shape = x[:n_rec, 0].shape
            noises = [torch.randn(shape, device=spec.device) for _ in range(3)]
            left, right = unrolled_pair(self.model, fr, self.recon_sigma_cond, *noises)
            est, ref = pair_waves(x[:n_rec], left, right)  # once, for every term below
            rec = self.recon_term(est, ref)
            loss = loss + self.recon_weight * rec.mean() * n_rec / b
            stats["recon"] = float(rec.detach().mean())
            if self.emit_weight > 0:
                emit = self.recon_term(est, ref, part="left")
                loss = loss + self.emit_weight * emit.mean() * n_rec / b
                stats["emit"] = float(emit.detach().mean())
            if self.discriminator is not None:
                adv, fm = self.adversarial_term(est, ref)
                loss = loss + (self.adv_weight * adv + self.adv_feature_weight * fm).mean() * n_rec / b
                stats["adv"], stats["feature_match"] = float(adv.detach().mean()), float(fm.detach().mean())
        if self.latent_std_weight > 0:  # VICReg-style variance hinge: keeps the latents from collapsing
            spread = latents.float().flatten(1).std(0)
            loss = loss + self.latent_std_weight * torch.relu(self.latent_std_floor - spread).mean()
        stats.update({"latent_std": float(latents.detach().float().std(0).mean()),
                      "latent_abs_max": float(latents.detach().abs().max()),
                      "latent_saturated": float((latents.detach().abs() > 0.99).float().mean())})
        if self.envelope_weight > 0:
            # Encoder and decoder must carry the chunk's envelope (L2 norm per chunk, like the main term):
            # a reconstruction signal for the latents from step 0, before the consistency model can read
            # them. From scratch only: added to an already collapsed run it saturated the tanh
            # (docs/training.md, "Decoder collapse").
            env = envelope_error(feats, x.flatten(0, 1)).view(b, 2)
            loss = loss + self.envelope_weight * env.sum(1).mean()
            stats["envelope_err"] = float(env.detach().mean())
        return loss, stats

    def recon_term(self, est: torch.Tensor, ref: torch.Tensor, part: str = "right") -> torch.Tensor:
        """stft_loss (+ recon_mel_weight x mel_loss and the other weighted terms) of a decoded pair's
        waveform against the true pair's (`pair_waves`, (n, N) each), per pair -> (n,). The pair's outputs
        are inverted together, so the right part includes the seam's overlap-add; "right" compares samples
        from CHUNK_SAMPLES on (the right chunk), "left" those before it."""
        cut = slice(CHUNK_SAMPLES, None) if part == "right" else slice(None, CHUNK_SAMPLES)
        loss = stft_loss(est[:, cut], ref[:, cut])
        if self.recon_mel_weight > 0:
            loss = loss + self.recon_mel_weight * mel_loss(est[:, cut], ref[:, cut])
        if self.recon_lines_weight > 0:
            loss = loss + self.recon_lines_weight * lines_loss(est[:, cut], ref[:, cut])
        if self.recon_onset_weight > 0:
            loss = loss + self.recon_onset_weight * onset_loss(est[:, cut], ref[:, cut])
        if self.recon_contour_weight > 0:
            loss = loss + self.recon_contour_weight * contour_loss(est[:, cut], ref[:, cut])
        if self.seam_weight > 0 and part == "right":
            loss = loss + self.seam_weight * seam_level_loss(est, ref, start=self.seam_start)
        return loss

    def adversarial_term(self, est: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The discriminator's generator terms (hinge, feature matching; (n,) each) on the right chunk of
        a decoded pair's waveform (`pair_waves`), seam included as in `recon_term`; keeps (decode,
        original) for its own step."""
        est, ref = est[:, CHUNK_SAMPLES:], ref[:, CHUNK_SAMPLES:]
        self.adv_pair = (est.detach(), ref)
        return generator_terms(self.discriminator, est, ref)


def pair_waves(x: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Waveforms (n, N) of a decoded pair (left, right: (n, 2, F, 64)) and of the true pair x
    (n, 2, 2, F, 64), each pair inverted as one spectrogram (the seam's overlap-add included)."""
    with torch.autocast(x.device.type, enabled=False):
        est = spec_to_wave(torch.cat([left, right], dim=-1).float())
        ref = spec_to_wave(torch.cat([x[:, 0], x[:, 1]], dim=-1).float())
    return est, ref


@torch.no_grad()
def validate(model: Music2Latent2, crops: torch.Tensor, dtype: torch.dtype | None,
             sigmas: tuple[float, ...] = (0.1, 1.0, 10.0),
             sigma_conds: tuple[float, ...] = (0.0, 0.4)) -> dict[str, float]:
    """Progress the raw loss does not show (design doc section 7):
    one-step reconstruction from sigma_max with the true latents and with latents swapped between
    crops (does the output depend on the latents?), denoising error at fixed noise levels, and the
    codec's own decode of each two-chunk crop (`losses.unrolled_pair`) at each of `sigma_conds`:
    `pair_mel@s` scores the whole decoded pair (left = the emitted second step, right = the first step
    in pair context, seam included), `emit_mel@s` the emitted left chunk alone."""
    from m2lcodec.metrics import mel_distance, si_sdr

    model.eval()
    device = next(model.parameters()).device
    x = crops[..., :CHUNK_FRAMES].to(device)[:, None]  # left chunks (B, 1, 2, F, 64)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g).to(device)
    out: dict[str, float] = {}
    with autocast(device, dtype):
        latents = model.encode(x[:, 0])
        sigma_max = torch.full(x.shape[:2], schedule.SIGMA_MAX, device=device)
        rec = model.denoise(noise * schedule.SIGMA_MAX, sigma_max, model.decoder_features(latents))
        swapped = model.denoise(noise * schedule.SIGMA_MAX, sigma_max,
                                model.decoder_features(latents.roll(1, dims=0)))
        feats = model.decoder_features(latents)
        feats_swapped = model.decoder_features(latents.roll(1, dims=0))
        # decoder collapse shows here first: its features stop varying with the latents
        out["feature_spread"] = float(feats[0].float().std(0).mean() / feats[0].float().pow(2).mean().sqrt())
        out["envelope_rel_err"] = float(envelope_error(feats, x[:, 0]).pow(2).sum()
                                        / envelope(x[:, 0], tuple(feats[0].shape[-2:])).pow(2).sum())
        for s in sigmas:
            sig = torch.full(x.shape[:2], s, device=device)
            den = model.denoise(x + s * noise, sig, feats)
            out[f"denoise_mse@{s:g}"] = float((den - x).pow(2).mean())
            den_swapped = model.denoise(x + s * noise, sig, feats_swapped)
            out[f"denoise_swap_ratio@{s:g}"] = float((den_swapped - x).pow(2).mean()) / max(out[f"denoise_mse@{s:g}"], 1e-12)
    out["rec_mse"] = float((rec - x).pow(2).mean())
    out["swap_mse"] = float((swapped - x).pow(2).mean())
    out["zeros_mse"] = float(x.pow(2).mean())
    out["swap_ratio"] = out["swap_mse"] / max(out["rec_mse"], 1e-12)
    ref = spec_to_wave(x[:, 0].float()).cpu().numpy()
    est = spec_to_wave(rec[:, 0].float()).cpu().numpy()
    swp = spec_to_wave(swapped[:, 0].float()).cpu().numpy()
    out["rec_si_sdr"] = float(sum(si_sdr(r, e) for r, e in zip(ref, est)) / len(ref))
    out["rec_mel"] = float(sum(mel_distance(r, e, 44100) for r, e in zip(ref, est)) / len(ref))
    out["swap_mel"] = float(sum(mel_distance(r, e, 44100) for r, e in zip(ref, swp)) / len(ref))
    out["swap_mel_ratio"] = out["swap_mel"] / max(out["rec_mel"], 1e-12)
    out["latent_spread"] = float(latents.float().std(0).mean())
    pairs = torch.stack([crops[..., :CHUNK_FRAMES], crops[..., CHUNK_FRAMES:]], dim=1).to(device)
    g = torch.Generator().manual_seed(1)
    pair_noise = [torch.randn(pairs[:, 0].shape, generator=g).to(device) for _ in range(3)]
    ref_pair = spec_to_wave(torch.cat([pairs[:, 0], pairs[:, 1]], dim=-1).float()).cpu().numpy()
    with autocast(device, dtype):
        pair_feats = model.decoder_features(model.encode(pairs.flatten(0, 1)))
        for s in sigma_conds:
            left, right = unrolled_pair(model, pair_feats, s, *pair_noise)
            est = spec_to_wave(torch.cat([left, right], dim=-1).float()).cpu().numpy()
            out[f"pair_mel@{s:g}"] = float(np.mean([mel_distance(r, e, 44100) for r, e in zip(ref_pair, est)]))
            out[f"emit_mel@{s:g}"] = float(np.mean([mel_distance(r[:CHUNK_SAMPLES], e[:CHUNK_SAMPLES], 44100)
                                                    for r, e in zip(ref_pair, est)]))
    model.train()
    return out


def latents_ignored(metrics: dict[str, float], threshold: float = 1.05) -> bool:
    """Whether a validation says the one-step decode does not read the latents: swapping them between
    crops changes neither its spectrogram error nor its log-mel distance by `threshold`. Both, because a
    model trained by spectral terms has no phase relation to the crop, so its spectrogram error is flat
    under a swap (1.000 in small-v10) while its log-mel distance still rises 36%."""
    return metrics["swap_ratio"] < threshold and metrics["swap_mel_ratio"] < threshold


def ema_update(ema: nn.Module, model: nn.Module, step: int, decay: float) -> None:
    """EMA with warm-up: the effective decay grows as (1 + step) / (10 + step) up to `decay`."""
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - d)


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic: write a temp file beside it, then rename (a killed job never leaves half a checkpoint)."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def export_weights(checkpoint: Path, out: Path, use_ema: bool = True, sigma_cond: float | None = None,
                   name: str | None = None, deblock: float | None = None, noise_scale: float | None = None) -> str:
    """Checkpoint -> fp16 safetensors with the model config and a content hash; returns the hash."""
    from m2lcodec.weights import decode_metadata, save_weights

    state = load_checkpoint(checkpoint)
    cfg = ModelConfig.from_dict(state["model_config"])
    weights = state["ema"] if use_ema else state["model"]
    meta = {"step": str(state["step"]), "train_config": json.dumps(state["train_config"])}
    meta |= decode_metadata(sigma_cond, deblock, noise_scale)
    return save_weights(out, cfg, weights, meta, name=name)


class stop_signals_interrupt:
    """Within the block, SIGTERM and SIGINT raise KeyboardInterrupt in the main thread, so a killed job
    (`kill`, a session ending, or `nohup ... &` from a shell that made SIGINT ignored) still saves."""

    def __enter__(self) -> None:
        self.saved = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.saved[sig] = signal.signal(sig, self._raise)

    @staticmethod
    def _raise(signum, frame) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def __exit__(self, *exc) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM/SIGINT to the main process, which saves and then shuts them down.
    (`pkill -f` or a session ending signals every process of the job; a worker that died first used to
    make the main process fail with a DataLoader error instead of saving.)"""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def run_model_config(base: ModelConfig, cfg: TrainConfig) -> ModelConfig:
    """The run's model: `base` (the preset's or the init weights') with the architecture fields the
    TrainConfig sets (widen_resampling, edge_padding, grid_code, pos_gain; unset = keep base's)."""
    return replace(base, resample_overlap=base.resample_overlap or cfg.widen_resampling,
                   edge_padding=cfg.edge_padding or base.edge_padding, grid_code=cfg.grid_code or base.grid_code,
                   pos_gain=cfg.pos_gain or base.pos_gain)


class Trainer:
    """Owns the model, EMA, optimiser, data and run directory of one training run."""

    def __init__(self, cfg: TrainConfig, data: str | Path, run_dir: str | Path, device: str = "auto",
                 val_data: str | Path | None = None, model_config: ModelConfig | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.world > 1 and not dist.is_initialized():
            if self.device.type == "cuda":
                local = int(os.environ.get("LOCAL_RANK", 0))
                torch.cuda.set_device(local)
                self.device = torch.device("cuda", local)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        torch.manual_seed(cfg.seed)
        if cfg.init_weights and cfg.latent_direct_path is not None:
            raise ValueError("latent_direct_path sets a fresh run's model; a fine-tune keeps the init's")
        if cfg.init_weights:  # fine-tuning: the weights file's own architecture, whatever the preset
            from m2lcodec.weights import load_model

            init, info = load_model(cfg.init_weights)
            init_config = run_model_config(info.config, cfg)
            if init_config != info.config:  # the same function in the new architecture (Music2Latent2.load_adapted)
                target = Music2Latent2(init_config)
                target.load_adapted(init.state_dict(), info.config)
                init = target
            if model_config is not None and model_config != init_config:
                raise ValueError(f"{cfg.init_weights} has another model config than the one asked for")
            self.model_config = init_config
            self.model = init.train().to(self.device)
        else:
            self.model_config = run_model_config(model_config or get_config(cfg.preset), cfg)
            if cfg.latent_direct_path is not None:
                self.model_config = replace(self.model_config, latent_direct_path=cfg.latent_direct_path)
            self.model = Music2Latent2(self.model_config).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.disc: MultiResolutionDiscriminator | None = None
        self.disc_opt: torch.optim.Optimizer | None = None
        if cfg.adv_weight > 0 or cfg.adv_feature_weight > 0:
            if self.world > 1:  # its own backward, outside the DDP-wrapped forward, is not synchronised
                raise ValueError("the adversarial term trains in one process (WORLD_SIZE 1) for now")
            self.disc = MultiResolutionDiscriminator(channels=cfg.disc_channels).to(self.device)
            self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.9))
        self.loss_fn = ConsistencyLoss.from_config(self.model, cfg, self.disc)
        self.wrapped: nn.Module = self.loss_fn
        if self.world > 1:
            self.wrapped = nn.parallel.DistributedDataParallel(
                self.loss_fn, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        grid = [p for name, p in self.model.named_parameters() if is_grid_path(name)]
        rest = [p for name, p in self.model.named_parameters() if not is_grid_path(name)]
        groups = [{"params": rest, "lr_scale": 1.0}] + ([{"params": grid, "lr_scale": cfg.grid_lr_scale}] if grid else [])
        self.opt = torch.optim.RAdam(groups, lr=cfg.lr, betas=cfg.betas)
        self.dtype = autocast_dtype(cfg.precision, self.device)
        self.step = 0
        self.ckpt_path = self.run_dir / "checkpoint.pt"
        self.best_path = self.run_dir / "best.pt"  # the state at the best validation of `best_metric`
        self.cache = Path(cfg.cache_dir) if cfg.cache_dir else self.run_dir / "cache"
        self.files = list_audio(data)
        self.val_files = list_audio(val_data) if val_data else None
        self.val_crops: torch.Tensor | None = None

    # -- state -------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"step": self.step, "model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "opt": self.opt.state_dict(), "model_config": self.model_config.to_dict(),
                "train_config": json.loads(json.dumps(asdict(self.cfg))),
                **({"disc": self.disc.state_dict(), "disc_opt": self.disc_opt.state_dict()} if self.disc else {})}

    def resume(self) -> bool:
        if not self.ckpt_path.exists():
            return False
        state = load_checkpoint(self.ckpt_path)
        if ModelConfig.from_dict(state["model_config"]) != self.model_config:
            raise ValueError(f"{self.ckpt_path} was trained with a different model config")
        self.load_state(state)
        return True

    def load_state(self, state: dict) -> None:
        """Weights, EMA, step and (unless it is None: a state that travelled without it, e.g. from a GPU
        lease) the optimiser's state, from a checkpoint dict."""
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        if state.get("opt") is not None:
            self.opt.load_state_dict(state["opt"])
        if self.disc is not None and state.get("disc") is not None:  # else a fresh discriminator
            self.disc.load_state_dict(state["disc"])
            self.disc_opt.load_state_dict(state["disc_opt"])
        self.step = int(state["step"])

    def save(self) -> None:
        if self.rank == 0:
            save_checkpoint(self.ckpt_path, self.state())

    def keep_if_best(self, metrics: dict) -> bool:
        """Save the state as best.pt when `best_metric` beats every earlier validation of this run (the
        best value so far travels inside best.pt), so a later collapse cannot lose the best model."""
        value = metrics.get(self.cfg.best_metric)
        if value is None or self.rank != 0 or not math.isfinite(value):
            return False
        if self.best_path.exists():
            best = load_checkpoint(self.best_path).get("best", {})
            if best.get("metric") == self.cfg.best_metric and best.get("value", math.inf) <= value:
                return False
        save_checkpoint(self.best_path, {**self.state(), "best": {"metric": self.cfg.best_metric,
                                                                   "value": float(value), "step": self.step}})
        return True

    def log(self, record: dict) -> None:
        if self.rank == 0:
            with open(self.run_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    # -- loop --------------------------------------------------------------------------------
    def loader(self) -> DataLoader:
        crop = CropConfig(gain_db=self.cfg.gain_db)
        # the epoch argument re-seeds the data stream at every (re)start, so a resumed run sees new crops
        ds = CropDataset(self.files, self.cache, crop, seed=self.cfg.seed, rank=self.rank,
                         epoch=self.step)
        return DataLoader(ds, batch_size=self.cfg.batch_size, num_workers=self.cfg.num_workers,
                          prefetch_factor=4 if self.cfg.num_workers else None,
                          worker_init_fn=_ignore_stop_signals if self.cfg.num_workers else None)

    def accumulate_grads(self, specs: list[torch.Tensor], delta: float) -> tuple[torch.Tensor, dict]:
        """Zero the gradients, then backpropagate the mean loss over the micro-batches, one at a time
        (memory of one batch). Returns the mean loss and the last micro-batch's stats."""
        self.opt.zero_grad(set_to_none=True)
        total = torch.zeros(())
        for spec in specs:
            with autocast(self.device, self.dtype):
                loss, stats = self.wrapped(spec.to(self.device, non_blocking=True), delta)
            (loss / len(specs)).backward()
            total = total + loss.detach().float().cpu() / len(specs)
        if self.disc is not None:
            stats["disc_loss"] = self.discriminator_step()
        return total, stats

    def discriminator_step(self) -> float:
        """One step of the discriminator on the last micro-batch's (decode, original) pair: a quarter of
        the generator's examples at accum_steps 4, for a quarter of the cost. Its gradients from the
        generator's backward passes are discarded first."""
        est, ref = self.loss_fn.adv_pair
        self.disc_opt.zero_grad(set_to_none=True)
        loss = discriminator_loss(self.disc, est, ref)
        loss.backward()
        self.disc_opt.step()
        return float(loss.detach())

    def train_step(self, spec: torch.Tensor | list[torch.Tensor]) -> dict:
        """One optimiser step on a batch, or on a list of batches whose gradients are averaged."""
        cfg = self.cfg
        lr = lr_at(self.step, cfg)
        for group in self.opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        delta = cfg.step_schedule(self.step, cfg.steps)
        loss, stats = self.accumulate_grads(spec if isinstance(spec, list) else [spec], delta)
        grads = {name: torch.sqrt(sum(p.grad.float().pow(2).sum() for p in getattr(self.model, name).parameters()
                                      if p.grad is not None)) for name in ("encoder", "decoder", "cm")}
        grad_norm = float(torch.sqrt(sum(g**2 for g in grads.values())))
        if cfg.grad_clip > 0 and grad_norm > cfg.grad_clip:
            for p in self.model.parameters():
                if p.grad is not None:
                    p.grad.mul_(cfg.grad_clip / grad_norm)
        self.opt.step()
        ema_update(self.ema, self.model, self.step, cfg.ema_decay)
        self.step += 1
        return {"step": self.step, "loss": float(loss.detach()), "lr": lr, "delta": delta, "grad_norm": grad_norm,
                **{f"grad_{k}": float(v) for k, v in grads.items()}, **stats}

    def run_validation(self) -> dict | None:
        if self.rank != 0:
            return None
        if self.val_crops is None:
            self.val_crops = fixed_crops(self.val_files or self.files, self.cache, self.cfg.val_crops)
        metrics = validate(self.ema, self.val_crops, self.dtype)
        record = {"step": self.step, "kind": "val", **metrics}
        self.log(record)
        self.keep_if_best(metrics)
        if self.step >= 200 and latents_ignored(metrics):
            warnings.warn(f"step {self.step}: decoded output barely depends on the latents (swap ratio "
                          f"{metrics['swap_ratio']:.3f}, mel {metrics['swap_mel_ratio']:.3f}): encoder collapse?")
        return record

    def fit(self, until: int | None = None, progress=None, max_seconds: float | None = None) -> None:
        """Train up to step `until` (default cfg.steps) or for `max_seconds` of wall time, whichever comes
        first, checkpointing every few minutes and at the end."""
        until = min(until or self.cfg.steps, self.cfg.steps)
        deadline = time.time() + max_seconds if max_seconds is not None else math.inf
        self.model.train()
        with stop_signals_interrupt():
            try:
                self._loop(until, progress, deadline)
            except BaseException:  # Ctrl-C, SIGINT, SIGTERM or a failure: keep what was trained, then stop
                self.save()
                raise
        self.save()

    def _loop(self, until: int, progress, deadline: float) -> None:
        batches = iter(self.loader())
        try:
            self._steps(batches, until, progress, deadline)
        finally:
            # Workers ignore SIGTERM, so stop them here: on an exception the traceback keeps the iterator
            # alive past the atexit join of multiprocessing, which would then wait for them forever.
            shutdown = getattr(batches, "_shutdown_workers", None)  # absent without worker processes
            if shutdown is not None:
                shutdown()

    def _steps(self, batches, until: int, progress, deadline: float) -> None:
        last_ckpt = time.time()
        t0, s0 = time.time(), self.step
        while self.step < until and time.time() < deadline:
            record = self.train_step([next(batches) for _ in range(self.cfg.accum_steps)])
            if self.step % self.cfg.log_every == 0 or self.step == until:
                record["steps_per_s"] = (self.step - s0) / max(time.time() - t0, 1e-9)
                record["time"] = time.time()
                self.log(record)
                t0, s0 = time.time(), self.step
            if progress is not None:
                progress(record)
            if self.cfg.val_every and self.step % self.cfg.val_every == 0:
                self.run_validation()
            if time.time() - last_ckpt > 60 * self.cfg.checkpoint_minutes:
                self.save()
                last_ckpt = time.time()
