"""Continue a CPU training run on a borrowed GPU for a fixed number of minutes, and bring it back.

A lease is short (15 minutes of device time, start-up included), what travels is at most 64 MiB and
what comes back at most 8 files of 16 MiB. So everything is prepared here and the GPU only trains:

    # 1. here (CPU): weights of the run + a corpus subset + the wheels a bare GPU image lacks -> .gpu/
    python scripts/gpu_run.py pack --checkpoint /root/runs/v19/checkpoint.pt --train-list ~/m2l-corpus/train.txt \\
        --wheels /root/gpu-wheels --out .gpu     # music fills what the tree and the state leave of 64 MiB
    # 2. on the GPU (device tool, carry [".gpu"]), one command:
    #    bash scripts/gpu_lease.sh 8 64      (wheels -> /tmp/site, train 8 minutes at batch 64, shards -> $OUT)
    # 3. here: the shards that came back -> a checkpoint the CPU run resumes from
    python scripts/gpu_run.py unpack --shards /work/.device/... --checkpoint /root/runs/v6/checkpoint.pt

The portable state is the model and the EMA (fp16 out, fp32 back) and the step, in safetensors shards below
15 MiB, plus the run's configs as JSON; on the GPU the state is published to $OUT every --save-minutes, so
a lease killed at its limit still brings the last save back. The optimiser state does not travel (it would double
the size): each side starts RAdam afresh (its rectified warm-up is built in) and the step counter, the
LR and the consistency-step schedules go on from the carried step.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

SHARD_BYTES = 15 * 2**20
TRAVEL_BYTES = 64 * 2**20  # what the device tool carries: the working tree (tracked + untracked, not ignored) + carry
TRAVEL_MARGIN = 2**20
REPO = Path(__file__).resolve().parents[1]


def tree_bytes(root: Path = REPO) -> int:
    """Bytes of the files the device tool copies from the working tree: tracked ones and untracked ones
    that git does not ignore."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                             capture_output=True, check=True).stdout
    return sum((root / name).stat().st_size for name in listing.decode().split("\0")
               if name and (root / name).is_file())


def audio_budget_mb(asked_mb: float | None, tree: int, packed: int) -> float:
    """MiB of music that fit beside the tree and what is packed so far: all of it by default; an asked
    amount that does not fit is an error (the lease would refuse to carry the pack)."""
    room = (TRAVEL_BYTES - TRAVEL_MARGIN - tree - packed) / 2**20
    if room <= 0:
        sys.exit(f"error: the tree ({tree / 2**20:.1f} MiB) and the state ({packed / 2**20:.1f} MiB) leave no room "
                 f"for music in the {TRAVEL_BYTES / 2**20:.0f} MiB that travel")
    if asked_mb is not None and asked_mb > room:
        sys.exit(f"error: --audio-mb {asked_mb:g} does not fit: the tree is {tree / 2**20:.1f} MiB and the state "
                 f"{packed / 2**20:.1f} MiB, so at most {room:.1f} MiB of music travel")
    return room if asked_mb is None else asked_mb


def save_shards(tensors: dict[str, torch.Tensor], meta: dict, out: Path, prefix: str) -> list[Path]:
    """Safetensors files of at most SHARD_BYTES each (a tensor is never split); meta in every one."""
    from safetensors.torch import save_file

    shards, current, size = [], {}, 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[name], size = t.contiguous(), size + nbytes
    shards.append(current)
    paths = []
    for i, shard in enumerate(shards):
        path = out / f"{prefix}-{i:02d}.safetensors"
        save_file(shard, str(path), metadata={"meta": json.dumps(meta)})
        paths.append(path)
    return paths


def load_shards(folder: Path, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """All shards of one save: a set mixed from two saves (a kill between renames) is refused."""
    from safetensors import safe_open

    tensors, metas = {}, []
    paths = sorted(folder.glob(f"{prefix}-*.safetensors"))
    if not paths:
        sys.exit(f"error: no {prefix}-*.safetensors shards in {folder}")
    for path in paths:
        with safe_open(str(path), framework="pt") as f:
            metas.append(json.loads(f.metadata()["meta"]))
            tensors.update({k: f.get_tensor(k) for k in f.keys()})
    if any(m != metas[0] for m in metas):
        sys.exit(f"error: the shards in {folder} come from different saves (steps {sorted({m['step'] for m in metas})})")
    return tensors, metas[0]


def publish_shards(tensors: dict[str, torch.Tensor], meta: dict, out: Path, prefix: str) -> None:
    """save_shards into out/partial, then rename into out: a kill at the lease's limit leaves the last
    complete save (what is under $OUT comes back even then), never a half-written shard."""
    partial = out / "partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    paths = save_shards(tensors, meta, partial, prefix)
    for old in out.glob(f"{prefix}-*.safetensors"):
        if old.name not in {p.name for p in paths}:
            old.unlink()
    for path in paths:
        path.replace(out / path.name)
    partial.rmdir()


def portable_state(model: dict, ema: dict, ema_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {**{f"model.{k}": v.float() for k, v in model.items()},
            **{f"ema.{k}": v.to(ema_dtype) for k, v in ema.items()}}


def split_state(tensors: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    model = {k[6:]: v.float() for k, v in tensors.items() if k.startswith("model.")}
    ema = {k[4:]: v.float() for k, v in tensors.items() if k.startswith("ema.")}
    return model, ema


def pick_audio(train_list: Path, out: Path, budget_mb: float, seconds: float, seed: int, mono: bool = True) -> list[Path]:
    """Excerpts of `seconds` from randomly chosen training files, as Ogg Vorbis, until the budget is
    spent: many short excerpts keep the subset as varied as the corpus. Mono (the mean of the channels)
    by default: the crops take one channel anyway, and it doubles the music that fits (~80 kbps; the
    Vorbis round trip's log-mel distance is ~0.05, the codec's ~0.4)."""
    import numpy as np
    import soundfile as sf

    files = [Path(p) for p in train_list.read_text().splitlines() if p.strip()]  # paths may hold spaces
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    written, total = [], 0
    for i in rng.permutation(len(files)):
        try:
            info = sf.info(str(files[i]))
        except sf.LibsndfileError:
            continue  # what libsndfile cannot read, the training's cache skips too
        if info.duration < seconds:
            continue
        start = int(rng.integers(0, int((info.duration - seconds) * info.samplerate)))
        audio, sr = sf.read(str(files[i]), start=start, frames=int(seconds * info.samplerate), dtype="float32",
                            always_2d=True)
        if mono:
            audio = audio.mean(axis=1, keepdims=True)
        path = out / f"{len(written):03d}.ogg"
        sf.write(str(path), audio, sr, format="OGG", subtype="VORBIS")
        total += path.stat().st_size
        if total > budget_mb * 2**20:
            path.unlink()
            break
        written.append(path)
    return written


def cmd_pack(args: argparse.Namespace) -> None:
    from m2lcodec.train import load_checkpoint

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    state = load_checkpoint(Path(args.checkpoint))
    meta = {"step": int(state["step"]), "model_config": state["model_config"], "train_config": state["train_config"]}
    # fp16 model too by default: its rounding (2^-11 relative) is below one step's update, and it leaves
    # twice the room for music within the 64 MiB that travel
    model_dtype = {"fp16": torch.float16, "fp32": torch.float32}[args.model_dtype]
    state_tensors = {**{f"model.{k}": v.to(model_dtype) for k, v in state["model"].items()},
                     **{f"ema.{k}": v.to(torch.float16) for k, v in state["ema"].items()}}
    save_shards(state_tensors, meta, out, "state")
    if args.wheels:  # what the GPU image lacks (docs/training.md, "GPU"): soundfile + cffi, soxr, zstandard
        shutil.copytree(args.wheels, out / "whl")

    def packed() -> int:
        return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())

    tree = tree_bytes()
    clips = pick_audio(Path(args.train_list), out / "audio", audio_budget_mb(args.audio_mb, tree, packed()),
                       args.seconds, args.seed, mono=not args.stereo)
    (out / "train.txt").write_text("".join(f"{p.relative_to(out)}\n" for p in clips))
    size = packed()
    print(f"packed step {meta['step']}, {len(clips)} excerpts of {args.seconds:g} s, {size / 2**20:.1f} MiB in {out}; "
          f"with the tree ({tree / 2**20:.1f} MiB) {(size + tree) / 2**20:.1f} of {TRAVEL_BYTES / 2**20:.0f} MiB travel")


def cmd_train(args: argparse.Namespace) -> None:
    from m2lcodec.model import ModelConfig
    from m2lcodec.train import TrainConfig, Trainer

    torch.backends.cuda.matmul.allow_tf32 = True  # the fp32 parts outside bf16 autocast (losses, STFTs)
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True  # the crops have one fixed shape
    pack = Path(args.pack)
    tensors, meta = load_shards(pack, "state")
    model, ema = split_state(tensors)
    files = [str(pack / line) for line in (pack / "train.txt").read_text().splitlines()]
    data = Path(args.work) / "train.txt"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("\n".join(files) + "\n")
    fields = {**meta["train_config"], "batch_size": args.batch_size, "num_workers": args.workers,
              "val_every": 0, "log_every": 2, "cache_dir": str(Path(args.work) / "cache"), "init_weights": "",
              "checkpoint_minutes": 1e9}
    trainer = Trainer(TrainConfig.from_dict(fields), data, Path(args.work) / "run", device=args.device,
                      model_config=ModelConfig.from_dict(meta["model_config"]))
    trainer.load_state({"model": model, "ema": ema, "step": meta["step"]})
    start = trainer.step
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = last_save = time.time()

    def publish() -> None:
        back = {**meta, "step": trainer.step, "gpu": {"from_step": start, "seconds": round(time.time() - t0, 1),
                                                      "batch_size": args.batch_size, "device": str(trainer.device)}}
        state = portable_state(trainer.model.state_dict(), trainer.ema.state_dict(), torch.float32)
        publish_shards(state, back, out, "state")
        if (trainer.run_dir / "log.jsonl").exists():
            shutil.copy(trainer.run_dir / "log.jsonl", out / "log.jsonl")

    def every_step(record: dict) -> None:  # a save every --save-minutes, so a killed lease still brings one back
        nonlocal last_save
        if time.time() - last_save > 60 * args.save_minutes:
            publish()
            last_save = time.time()
            print(f"saved step {trainer.step} after {time.time() - t0:.0f} s", flush=True)

    trainer.fit(until=start + args.max_steps if args.max_steps else None, progress=every_step,
                max_seconds=60 * args.minutes)
    publish()
    print(f"trained {start} -> {trainer.step} in {time.time() - t0:.0f} s at batch {args.batch_size} on {trainer.device}")


def cmd_unpack(args: argparse.Namespace) -> None:
    from m2lcodec.model import ModelConfig
    from m2lcodec.train import load_checkpoint, save_checkpoint

    tensors, meta = load_shards(Path(args.shards), "state")
    model, ema = split_state(tensors)
    ckpt = Path(args.checkpoint)
    old = load_checkpoint(ckpt) if ckpt.exists() else None
    if old is not None and ModelConfig.from_dict(old["model_config"]) != ModelConfig.from_dict(meta["model_config"]):
        sys.exit(f"error: the shards are of another model than {ckpt}")
    if old is not None:
        shutil.copy(ckpt, ckpt.with_suffix(".before-gpu.pt"))
    # no optimiser state: the resumed run starts RAdam afresh (Trainer.load_state skips opt None)
    save_checkpoint(ckpt, {"step": meta["step"], "model": model, "ema": ema, "opt": None,
                           "model_config": meta["model_config"], "train_config": meta["train_config"]})
    print(f"{ckpt}: step {meta['step']} from the GPU ({meta.get('gpu')}); resume the run as usual")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="CPU side: checkpoint + corpus subset -> a folder that travels")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--train-list", required=True)
    p.add_argument("--audio-mb", type=float, default=None,
                   help="MiB of music excerpts (default: all that the tree and the state leave of 64 MiB)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each excerpt")
    p.add_argument("--stereo", action="store_true", help="keep the channels (default: mono excerpts)")
    p.add_argument("--model-dtype", choices=["fp16", "fp32"], default="fp16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wheels", help="folder of wheels to carry (pip download ... for the GPU's Python)")
    p.add_argument("--out", default=".gpu")
    p = sub.add_parser("train", help="GPU side: train from the pack for --minutes, write shards to --out")
    p.add_argument("--pack", default=".gpu")
    p.add_argument("--minutes", type=float, required=True)
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: only --minutes)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--save-minutes", type=float, default=2.0, help="publish the state to --out this often")
    p.add_argument("--work", default="/tmp/m2l-gpu")
    p.add_argument("--out", required=True)
    p = sub.add_parser("unpack", help="CPU side: shards back -> checkpoint.pt (the old one kept beside it)")
    p.add_argument("--shards", required=True)
    p.add_argument("--checkpoint", required=True)
    args = ap.parse_args()
    {"pack": cmd_pack, "train": cmd_train, "unpack": cmd_unpack}[args.cmd](args)


if __name__ == "__main__":
    main()
