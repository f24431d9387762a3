"""The benchmark end to end on a tiny random model and two synthetic 2 s clips (a few seconds on CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from m2lcodec import baselines
from m2lcodec.bench import METRIC_KEYS, PeakMemory, find_clips
from m2lcodec.cli import app
from m2lcodec.model import Music2Latent2, get_config
from m2lcodec.weights import save_weights

SR = 44100


def music_like(seconds: float, seed: int) -> np.ndarray:
    """Stereo harmonic tones with a tremolo envelope plus a little noise, (samples, channels)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    chans = []
    for f0 in (220.0 * (1 + seed * 0.25), 277.2):
        phases = rng.uniform(0, 2 * np.pi, size=8)
        tone = sum(np.sin(2 * np.pi * f0 * k * t + phases[k - 1]) / k for k in range(1, 9))
        envelope = 0.3 + 0.7 * np.abs(np.sin(2 * np.pi * 1.5 * t))
        chans.append(0.2 * tone * envelope + 0.01 * rng.standard_normal(t.shape))
    return np.stack(chans, axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = get_config("tiny")
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_weights(path, cfg, Music2Latent2(cfg).state_dict())
    return path


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    (root / "sub").mkdir()
    sf.write(root / "a.wav", music_like(2.0, 0), SR, subtype="PCM_16")
    sf.write(root / "sub" / "b.wav", music_like(2.0, 1), SR, subtype="PCM_16")
    (root / "notes.txt").write_text("not audio")
    return root


def test_find_clips(clips_dir: Path) -> None:
    assert [p.relative_to(clips_dir).as_posix() for p in find_clips(clips_dir)] == ["a.wav", "sub/b.wav"]
    assert len(find_clips(clips_dir, limit=1)) == 1


def test_peak_memory_sees_an_allocation() -> None:
    with PeakMemory() as mem:
        block = np.ones(50_000_000 // 8)  # 50 MB, touched
        del block
    assert mem.peak_mb is None or mem.peak_mb > 40


def test_bench_cli(tiny_model: Path, clips_dir: Path, tmp_path: Path) -> None:
    use_opus = baselines.ffmpeg_available() and "libopus" in baselines.available_encoders()
    report = tmp_path / "report"
    args = ["bench", str(clips_dir), "--out", str(report), "--model", str(tiny_model), "--device", "cpu",
            "--no-visqol", "--baselines", "opus-12k" if use_opus else ""]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    names = ["m2l-int8", "m2l-fp16"] + (["opus-12k"] if use_opus else [])

    results = json.loads((report / "results.json").read_text())
    assert list(results["codecs"]) == names
    for name in names:
        entry = results["codecs"][name]
        for key in (*METRIC_KEYS, "fad_mel_stats", "clips"):
            assert key in entry, (name, key)
        assert entry["clips"] == 2
        assert entry["visqol"] is None
        assert entry["kbps"] > 0 and entry["compression_ratio"] > 1
        assert entry["encode_rtf"] > 0 and entry["decode_rtf"] > 0
        assert entry["si_sdr"] is not None and entry["mel_distance"] > 0
        assert entry["fad_mel_stats"] is not None and entry["fad_mel_stats"] >= 0
    assert results["codecs"]["m2l-fp16"]["kbps"] > results["codecs"]["m2l-int8"]["kbps"]
    if use_opus:
        assert results["codecs"]["opus-12k"]["peak_memory_mb"] is None
        assert results["codecs"]["opus-12k"]["si_sdr"] > results["codecs"]["m2l-int8"]["si_sdr"]

    rows = results["clips"]
    assert len(rows) == 2 * len(names)
    assert {(r["clip"], r["codec"]) for r in rows} == {(c, n) for c in ("a.wav", "sub/b.wav") for n in names}
    for row in rows:
        assert {"clip", "codec", *METRIC_KEYS} <= set(row)
        # m2l bitrate from the real byte count
        assert row["kbps"] == pytest.approx(row["encoded_bytes"] * 8 / 2.0 / 1000)

    meta = results["meta"]
    assert {"machine", "model", "versions", "command", "date"} <= set(meta)
    assert meta["model"]["path"] == str(tiny_model) and len(meta["model"]["hash"]) == 16
    assert meta["model"]["decode"] == {"sigma_cond": 0.4, "deblock": 0.0, "noise_scale": 1.0}  # what a file without them decodes with
    assert {"platform", "cpu_count", "torch", "device"} <= set(meta["machine"])
    assert {"m2lcodec", "torch", "numpy", "visqol-python"} <= set(meta["versions"])
    assert meta["command"].startswith("m2lcodec bench")
    assert any("ViSQOL" in n for n in meta["notes"])

    md = (report / "report.md").read_text()
    assert all(f"| {name} |" in md for name in names)
    png = report / "quality_vs_bitrate.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not any(p.suffix in (".wav", ".m2l", ".opus") for p in report.rglob("*"))  # no audio by default
    assert "bench: 2 clips" in result.output  # the terminal table

    # never overwrites a report without --force
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1 and "--force" in again.output


def test_run_bench_without_ffmpeg(tiny_model: Path, clips_dir: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from m2lcodec import bench
    from m2lcodec.codec import load_codec

    monkeypatch.setattr(bench.bl, "ffmpeg_available", lambda: False)
    results = bench.run_bench(clips_dir, tmp_path, load_codec(tiny_model, "cpu"), quants=("int8",),
                              baselines=("opus-12k",), limit=1, mono=True, use_visqol=False, plot=False)
    assert list(results["codecs"]) == ["m2l-int8"] and len(results["clips"]) == 1
    assert results["clips"][0]["channels"] == 1
    assert any("ffmpeg not found" in n for n in results["meta"]["notes"])
    assert (tmp_path / "results.json").exists() and not (tmp_path / "quality_vs_bitrate.png").exists()
    with pytest.raises(FileExistsError):
        bench.run_bench(clips_dir, tmp_path, load_codec(tiny_model, "cpu"), quants=("int8",), baselines=(),
                        limit=1)


def test_bench_cli_rejects_bad_options(clips_dir: Path, tmp_path: Path) -> None:
    for extra in (["--quant", "int4"], ["--baselines", "aac-64k"], ["--limit", "0"]):
        result = CliRunner().invoke(app, ["bench", str(clips_dir), "--out", str(tmp_path / "r"), *extra])
        assert result.exit_code == 1 and "error" in result.output, extra
