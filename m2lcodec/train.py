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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader

from m2lcodec import schedule
from m2lcodec.data import CropConfig, CropDataset, fixed_crops, list_audio
from m2lcodec.model import ModelConfig, Music2Latent2, get_config
from m2lcodec.spectral import CHUNK_FRAMES, envelope, spec_to_wave

HUBER_C = 0.00054 * math.sqrt(2 * 1024 * 64)  # ~0.1955, d = elements per chunk


@dataclass
class TrainConfig:
    preset: str = "small"
    steps: int = 100_000  # total steps of the run: sets the LR and consistency-step schedules
    batch_size: int = 8
    lr: float = 1e-4
    lr_min: float = 1e-6
    warmup_steps: int = 1000
    betas: tuple[float, float] = (0.9, 0.999)
    ema_decay: float = 0.9999
    step_schedule: schedule.StepSchedule = field(default_factory=schedule.StepSchedule)
    precision: str = "auto"  # auto = bf16 autocast on CPU and CUDA-with-bf16, else fp32; or "bf16" / "fp32"
    latent_noise: float = 0.0  # uniform noise of this width added to latents (int8 step = 2/255)
    noise_log_mean: float = -1.1  # log-normal density of the training noise levels (Music2Latent)
    noise_log_std: float = 2.0
    weighting: str = "clamped"  # loss weight per noise level: "clamped" or "paper" (schedule.consistency_weight)
    latent_std_floor: float = 0.3  # anti-collapse: hinge on each latent number's std across the batch ...
    latent_std_weight: float = 100.0  # ... weighted by this (0 = off: the paper's single loss)
    envelope_weight: float = 1.0  # anti-collapse of the decoder: its finest features' channel 0 must predict
    #                                the chunk's magnitude envelope (0 = off: the paper's single loss)
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


def pseudo_huber(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per chunk: sqrt(||a - b||^2 + c^2) - c over all elements of a chunk; a, b (B, n, 2, F, T) -> (B, n)."""
    sq = (a.float() - b.float()).pow(2).flatten(2).sum(-1)
    return torch.sqrt(sq + HUBER_C**2) - HUBER_C


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to lr_min at the end of the run."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = min((step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1), 1.0)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * p))


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if precision == "bf16" or device.type == "cpu":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else None


class ConsistencyLoss(nn.Module):
    """The whole training computation in forward(), so DistributedDataParallel can wrap it."""

    def __init__(self, model: Music2Latent2, latent_noise: float = 0.0, noise_log_mean: float = -1.1,
                 noise_log_std: float = 2.0, latent_std_floor: float = 0.0, latent_std_weight: float = 0.0,
                 weighting: str = "paper", envelope_weight: float = 0.0) -> None:
        super().__init__()
        if weighting not in schedule.WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; expected one of {schedule.WEIGHTINGS}")
        self.model = model
        self.weighting = weighting
        self.latent_std_floor, self.latent_std_weight = latent_std_floor, latent_std_weight
        self.sampler = schedule.IndexSampler(log_mean=noise_log_mean, log_std=noise_log_std)
        self.latent_noise = latent_noise
        self.envelope_weight = envelope_weight

    def forward(self, spec: torch.Tensor, delta: float) -> tuple[torch.Tensor, dict[str, float]]:
        """spec (B, 2, 1024, 128) -> (loss, stats). Two chunks, independent noise levels."""
        b = spec.shape[0]
        x = torch.stack([spec[..., :CHUNK_FRAMES], spec[..., CHUNK_FRAMES:]], dim=1)  # (B, 2, 2, F, 64)
        latents = self.model.encode(x.flatten(0, 1))
        if self.latent_noise > 0:
            latents = latents + (torch.rand_like(latents) - 0.5) * self.latent_noise
        feats = self.model.decoder_features(latents)

        i_student = self.sampler.sample(2 * b).to(spec.device).view(b, 2)
        i_teacher = schedule.teacher_index(i_student, delta)
        sigma_s = schedule.sigma_from_index(i_student)
        sigma_t = schedule.sigma_from_index(i_teacher)
        noise = torch.randn_like(x, dtype=torch.float32)
        expand = (..., None, None, None)
        student = self.model.denoise(x + sigma_s[expand] * noise, sigma_s, feats)
        x_t = x + sigma_t[expand] * noise
        if bool((i_teacher == 0).all()):
            teacher = x_t  # f(x, sigma_min) = x exactly: no network evaluation needed
        else:
            with torch.no_grad():
                teacher = self.model.denoise(x_t, sigma_t, [f.detach() for f in feats])
        weight = schedule.consistency_weight(sigma_s, sigma_t, self.weighting)
        loss = (weight * pseudo_huber(student, teacher.detach())).sum(1).mean()
        if self.latent_std_weight > 0:  # VICReg-style variance hinge: keeps the latents from collapsing
            spread = latents.float().flatten(1).std(0)
            loss = loss + self.latent_std_weight * torch.relu(self.latent_std_floor - spread).mean()
        stats = {"latent_std": float(latents.detach().float().std(0).mean()),
                 "latent_abs_max": float(latents.detach().abs().max()),
                 "latent_saturated": float((latents.detach().abs() > 0.99).float().mean())}
        if self.envelope_weight > 0:
            # Encoder and decoder must carry the chunk's envelope (L2 norm per chunk, like the main term):
            # a reconstruction signal for the latents from step 0, before the consistency model can read
            # them. From scratch only: added to an already collapsed run it saturated the tanh
            # (docs/training.md, "Decoder collapse").
            env = envelope_error(feats, x.flatten(0, 1)).view(b, 2)
            loss = loss + self.envelope_weight * env.sum(1).mean()
            stats["envelope_err"] = float(env.detach().mean())
        return loss, stats


def envelope_error(feats: list[torch.Tensor], chunks: torch.Tensor) -> torch.Tensor:
    """Per chunk: L2 distance between channel 0 of the decoder's finest features and the chunk's magnitude
    envelope on that grid; feats for N chunks, chunks (N, 2, F, T) -> (N,)."""
    pred = feats[0][:, 0].float()
    return (pred - envelope(chunks, tuple(pred.shape[-2:]))).pow(2).flatten(1).sum(-1).sqrt()


@torch.no_grad()
def validate(model: Music2Latent2, crops: torch.Tensor, dtype: torch.dtype | None,
             sigmas: tuple[float, ...] = (0.1, 1.0, 10.0)) -> dict[str, float]:
    """Progress the raw loss does not show (design doc section 7):
    one-step reconstruction from sigma_max with the true latents and with latents swapped between
    crops (does the output depend on the latents?), and denoising error at fixed noise levels."""
    from m2lcodec.metrics import mel_distance, si_sdr

    model.eval()
    device = next(model.parameters()).device
    x = crops[..., :CHUNK_FRAMES].to(device)[:, None]  # left chunks (B, 1, 2, F, 64)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g).to(device)
    out: dict[str, float] = {}
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
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
    out["latent_spread"] = float(latents.float().std(0).mean())
    model.train()
    return out


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
                   name: str | None = None) -> str:
    """Checkpoint -> fp16 safetensors with the model config and a content hash; returns the hash."""
    from m2lcodec.weights import save_weights

    state = load_checkpoint(checkpoint)
    cfg = ModelConfig.from_dict(state["model_config"])
    weights = state["ema"] if use_ema else state["model"]
    meta = {"step": str(state["step"]), "train_config": json.dumps(state["train_config"])}
    if sigma_cond is not None:
        meta["sigma_cond"] = str(sigma_cond)
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
        self.model_config = model_config or get_config(cfg.preset)
        self.model = Music2Latent2(self.model_config).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.loss_fn = ConsistencyLoss(self.model, cfg.latent_noise, cfg.noise_log_mean, cfg.noise_log_std,
                                       cfg.latent_std_floor, cfg.latent_std_weight, cfg.weighting,
                                       cfg.envelope_weight)
        self.wrapped: nn.Module = self.loss_fn
        if self.world > 1:
            self.wrapped = nn.parallel.DistributedDataParallel(
                self.loss_fn, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.opt = torch.optim.RAdam(self.model.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.dtype = autocast_dtype(cfg.precision, self.device)
        self.step = 0
        self.ckpt_path = self.run_dir / "checkpoint.pt"
        self.cache = Path(cfg.cache_dir) if cfg.cache_dir else self.run_dir / "cache"
        self.files = list_audio(data)
        self.val_files = list_audio(val_data) if val_data else None
        self.val_crops: torch.Tensor | None = None

    # -- state -------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"step": self.step, "model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "opt": self.opt.state_dict(), "model_config": self.model_config.to_dict(),
                "train_config": json.loads(json.dumps(asdict(self.cfg)))}

    def resume(self) -> bool:
        if not self.ckpt_path.exists():
            return False
        state = load_checkpoint(self.ckpt_path)
        if ModelConfig.from_dict(state["model_config"]) != self.model_config:
            raise ValueError(f"{self.ckpt_path} was trained with a different model config")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])
        return True

    def save(self) -> None:
        if self.rank == 0:
            save_checkpoint(self.ckpt_path, self.state())

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

    def train_step(self, spec: torch.Tensor) -> dict:
        cfg = self.cfg
        lr = lr_at(self.step, cfg)
        for group in self.opt.param_groups:
            group["lr"] = lr
        delta = cfg.step_schedule(self.step, cfg.steps)
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            loss, stats = self.wrapped(spec.to(self.device, non_blocking=True), delta)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = {name: torch.sqrt(sum(p.grad.float().pow(2).sum() for p in getattr(self.model, name).parameters()
                                      if p.grad is not None)) for name in ("encoder", "decoder", "cm")}
        grad_norm = float(torch.sqrt(sum(g**2 for g in grads.values())))
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
        if self.step >= 200 and metrics["swap_ratio"] < 1.05:
            warnings.warn(f"step {self.step}: decoded output barely depends on the latents "
                          f"(swap ratio {metrics['swap_ratio']:.3f}): encoder collapse?")
        return record

    def fit(self, until: int | None = None, progress=None) -> None:
        """Train up to step `until` (default cfg.steps), checkpointing every few minutes and at the end."""
        until = min(until or self.cfg.steps, self.cfg.steps)
        self.model.train()
        with stop_signals_interrupt():
            try:
                self._loop(until, progress)
            except BaseException:  # Ctrl-C, SIGINT, SIGTERM or a failure: keep what was trained, then stop
                self.save()
                raise
        self.save()

    def _loop(self, until: int, progress) -> None:
        batches = iter(self.loader())
        try:
            self._steps(batches, until, progress)
        finally:
            # Workers ignore SIGTERM, so stop them here: on an exception the traceback keeps the iterator
            # alive past the atexit join of multiprocessing, which would then wait for them forever.
            shutdown = getattr(batches, "_shutdown_workers", None)  # absent without worker processes
            if shutdown is not None:
                shutdown()

    def _steps(self, batches, until: int, progress) -> None:
        last_ckpt = time.time()
        t0, s0 = time.time(), self.step
        while self.step < until:
            record = self.train_step(next(batches))
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
