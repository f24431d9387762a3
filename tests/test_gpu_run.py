"""scripts/gpu_run.py on the CPU path: pack a run, train from the pack, unpack, resume (docs/training.md, "GPU")."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from m2lcodec.train import TrainConfig, Trainer, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_run.py"


def run(*args: str) -> str:
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def test_pack_train_unpack_resume(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    files = []
    for i in range(3):
        t = np.arange(44100 * 8) / 44100
        x = 0.2 * np.sin(2 * np.pi * (220 + 40 * i) * t) + 0.01 * rng.standard_normal(t.size)
        files.append(tmp_path / f"song{i}.wav")
        sf.write(files[-1], x.astype(np.float32), 44100)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{f}\n" for f in files))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "dummy.whl").write_bytes(b"x")
    cfg = TrainConfig(preset="tiny", steps=100, batch_size=2, warmup_steps=5, val_every=0, log_every=1, num_workers=0,
                      recon_weight=1.0)
    trainer = Trainer(cfg, listing, tmp_path / "run", device="cpu")
    trainer.fit(until=2)
    ckpt = tmp_path / "run" / "checkpoint.pt"

    pack = tmp_path / "pack"
    out = run("pack", "--checkpoint", str(ckpt), "--train-list", str(listing), "--audio-mb", "1", "--seconds", "3",
              "--wheels", str(wheels), "--out", str(pack))
    assert "packed step 2" in out
    assert (pack / "whl" / "dummy.whl").exists() and len((pack / "train.txt").read_text().split()) >= 2
    assert all(p.stat().st_size < 15 * 2**20 for p in pack.glob("state-*.safetensors"))

    back = tmp_path / "back"
    excerpt, sr = sf.read(str(pack / (pack / "train.txt").read_text().split()[0]), always_2d=True)
    assert excerpt.shape[1] == 1 and sr == 44100  # mono excerpts by default
    out = run("train", "--pack", str(pack), "--minutes", "5", "--max-steps", "3", "--batch-size", "2", "--workers", "0",
              "--device", "cpu", "--work", str(tmp_path / "work"), "--out", str(back), "--save-minutes", "0")
    assert "trained 2 -> " in out
    assert "saved step 3" in out and "saved step 4" in out  # published while training, not only at the end
    assert not (back / "partial").exists()
    steps = [json.loads(line)["step"] for line in (back / "log.jsonl").read_text().splitlines()]
    assert steps[-1] == 5 and min(steps) > 2  # continued from the packed step 2

    run("unpack", "--shards", str(back), "--checkpoint", str(ckpt))
    state = load_checkpoint(ckpt)
    assert state["step"] == steps[-1] and (tmp_path / "run" / "checkpoint.before-gpu.pt").exists()
    assert state["train_config"]["recon_weight"] == 1.0  # the run's recipe travels and comes back
    resumed = Trainer(cfg, listing, tmp_path / "run", device="cpu")
    assert resumed.resume() and resumed.step == steps[-1]
    # the model came back in fp32, exactly what the GPU side saved
    from safetensors.torch import load_file

    shard = {k: v for p in sorted(back.glob("state-*.safetensors")) for k, v in load_file(str(p)).items()}
    name = next(k for k in resumed.model.state_dict() if k.endswith("weight"))
    torch.testing.assert_close(resumed.model.state_dict()[name], shard[f"model.{name}"], rtol=0, atol=0)
    resumed.fit(until=steps[-1] + 1)
    assert resumed.step == steps[-1] + 1


def test_shards_of_two_saves_are_refused(tmp_path: Path) -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_run

    a = {"x": torch.zeros(3), "y": torch.ones(2)}
    gpu_run.SHARD_BYTES, old = 8, gpu_run.SHARD_BYTES  # one tensor per shard
    try:
        gpu_run.publish_shards(a, {"step": 1}, tmp_path, "state")
        tensors, meta = gpu_run.load_shards(tmp_path, "state")
        assert meta == {"step": 1} and set(tensors) == {"x", "y"}
        gpu_run.save_shards({"x": torch.zeros(3)}, {"step": 2}, tmp_path, "state")  # a kill between renames
    finally:
        gpu_run.SHARD_BYTES = old
    try:
        gpu_run.load_shards(tmp_path, "state")
    except SystemExit as e:
        assert "different saves" in str(e)
    else:
        raise AssertionError("mixed shards were accepted")


def test_audio_budget_fits_what_travels() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    import gpu_run

    mib = 2**20
    assert gpu_run.audio_budget_mb(None, 28 * mib, 26 * mib) == 64 - 1 - 28 - 26
    assert gpu_run.audio_budget_mb(5.0, 28 * mib, 26 * mib) == 5.0
    for asked, tree in ((10.0, 28 * mib), (None, 40 * mib)):
        try:
            gpu_run.audio_budget_mb(asked, tree, 26 * mib)
        except SystemExit as e:
            assert str(e).startswith("error:") and "MiB" in str(e)
        else:
            raise AssertionError("an over-budget pack must be refused")
    tree = gpu_run.tree_bytes()
    assert 10 * mib < tree < 64 * mib  # this checkout: the weights, docs and code

