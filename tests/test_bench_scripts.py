"""bench/sigma_cond.py, bench/seams.py, bench/paired.py and friends on a tiny random model and 2 s synthetic clips.

A random model cannot reconstruct audio, so only the plumbing (keys, shapes, determinism) is checked on
decodes; the seam metrics themselves are checked on synthetic signals with and without level steps at
the chunk seams, and the seam positions against the spectral layout.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf
import torch

from m2lcodec import spectral

SR = 44100
BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


sigma_cond = _load("sigma_cond")
seams = _load("seams")
compare_models = _load("compare_models")
train_study = _load("train_study")
paired = _load("paired")


def sines(seconds: float, seed: int = 0, channels: int = 1) -> np.ndarray:
    """(channels, n) float32: a sum of sines at fixed levels plus a little noise (stationary)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    out = []
    for _ in range(channels):
        freqs = rng.uniform(100, 4000, size=6)
        phases = rng.uniform(0, 2 * np.pi, size=6)
        x = sum(0.1 * np.sin(2 * np.pi * f * t + p) for f, p in zip(freqs, phases))
        out.append(x + 0.01 * rng.standard_normal(t.shape))
    return np.stack(out).astype(np.float32)


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    sf.write(root / "a.wav", sines(2.0, 0, channels=2).T, SR, subtype="PCM_16")
    sf.write(root / "b.wav", sines(2.0, 1).T, 48000, subtype="FLOAT")  # another rate: resampled
    return root


# -- sigma_cond sweep ------------------------------------------------------------------------------

def test_sweep_writes_json_and_png(codec, clips_dir: Path, tmp_path: Path, monkeypatch) -> None:
    # a stand-in ViSQOL (the real one is slow): the best value must then be picked by it
    monkeypatch.setattr(sigma_cond.metrics, "visqol", lambda ref, est, sr: 5.0 - float(np.abs(est).mean()))
    import m2lcodec

    monkeypatch.setattr(m2lcodec, "load_codec", lambda *a, **k: codec)
    out = tmp_path / "out"
    sigma_cond.main(["--clips", str(clips_dir), "--out", str(out), "--values", "0.1,0.6", "--count", "2"])
    report = json.loads((out / "sigma_cond.json").read_text())
    assert (out / "sigma_cond.png").stat().st_size > 1000
    assert {"args", "model", "values", "clips", "results", "best", "kbps"} <= set(report)
    assert report["model"]["hash"] == codec.info.hash
    assert report["values"] == [0.1, 0.6] and report["clips"] == ["a.wav", "b.wav"]
    assert report["args"]["mono"] is True and report["args"]["quant"] == "int8"
    for r in report["results"]:
        assert set(r["mean"]) == {"visqol", "si_sdr", "mel_distance"}
        assert set(r["per_clip"]) == {"a.wav", "b.wav"}
        assert all(r["mean"][k] is not None for k in r["mean"])
    best = max(report["results"], key=lambda r: r["mean"]["visqol"])
    assert report["best"]["by"] == "visqol" and report["best"]["sigma_cond"] == best["sigma_cond"]


def test_sweep_without_visqol_falls_back_to_mel(codec, clips_dir: Path) -> None:
    clips = sorted(clips_dir.glob("*.wav"))[:1]
    sweep = sigma_cond.run_sweep(codec, clips, [0.0, 1.0], quant="fp16", use_visqol=False)
    assert all(r["mean"]["visqol"] is None for r in sweep["results"])
    best = min(sweep["results"], key=lambda r: r["mean"]["mel_distance"])
    assert sweep["best"] == {"sigma_cond": best["sigma_cond"], "by": "mel_distance",
                             "value": best["mean"]["mel_distance"]}
    assert sweep["results"][0]["mean"] != sweep["results"][1]["mean"]  # sigma_cond reaches the decoder


def test_quantised_latents_match_the_container(codec) -> None:
    x = sines(1.0)
    q, nbytes = sigma_cond.quantised_latents(codec, x, SR, "int8")
    z = codec.encode(x, SR)
    np.testing.assert_array_equal(q, np.clip(np.rint(z * 127), -127, 127) / np.float32(127))
    assert nbytes == len(codec.compress(x, SR, "int8"))


# -- seams --------------------------------------------------------------------------------------------

def test_boundary_positions() -> None:
    assert seams.boundary_positions(1000) == []
    assert seams.boundary_positions(32768 - 1536) == []
    assert seams.boundary_positions(32768 - 1535) == [31232]
    assert seams.boundary_positions(441000) == [t * 32768 - 1536 for t in range(1, 14)]
    assert len(seams.boundary_positions(441000)) == spectral.num_chunks(441000) - 1


def test_boundary_positions_match_the_spectral_layout() -> None:
    """Chunk t's frames reach output samples [b_t, 32768 (t + 1)) exactly: zero all other chunks' frames
    of a noise spectrogram, invert and trim as the codec does, and see where the output is non-zero."""
    n = 3 * 32768
    wave, chunks = spectral.pad_to_chunks(torch.randn(1, n, generator=torch.Generator().manual_seed(0)))
    spec = spectral.wave_to_spec(wave)
    b = seams.boundary_positions(n)
    assert chunks == 4 and b == [31232, 64000, 96768]
    for t in (1, 2):
        masked = torch.zeros_like(spec)
        masked[..., 64 * t : 64 * (t + 1)] = spec[..., 64 * t : 64 * (t + 1)]
        y = spectral.trim(spectral.spec_to_wave(masked), n)[0].abs()
        nonzero = torch.nonzero(y > 0).flatten()
        assert int(nonzero[0]) == b[t - 1] + 1  # the Hann window is exactly 0 at the first sample
        assert int(nonzero[-1]) == b[t - 1] + spectral.CHUNK_SAMPLES + spectral.PAD_LEFT - 1


def _stepped(x: np.ndarray, gains: tuple[float, float]) -> np.ndarray:
    """x with its level switched between `gains` at every seam start b_t."""
    edges = [0, *seams.boundary_positions(x.shape[-1]), x.shape[-1]]
    y = x.copy()
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        y[..., lo:hi] *= gains[i % 2]
    return y


def test_seam_ratios_on_synthetic_signals() -> None:
    x = sines(10.0, seed=3)
    bounds = seams.boundary_positions(x.shape[-1])
    assert len(bounds) == 13
    flux, jump = seams.flux_ratio(x, SR, bounds), seams.level_jump_ratio(x, SR, bounds)
    assert 0.9 < flux < 1.1 and 0.7 < jump < 1.4, (flux, jump)
    y = _stepped(x, (1.0, 0.1))  # -20 dB every other chunk; a hard step raises ~5 of the ~11 flux pairs
    flux, jump = seams.flux_ratio(y, SR, bounds), seams.level_jump_ratio(y, SR, bounds)  # of a 1536-sample seam
    assert flux > 1.25 and jump > 5, (flux, jump)
    m = seams.seam_metrics(y, SR)
    assert m["seams"] == 13 and m["flux_ratio"] == pytest.approx(flux) and m["level_jump_ratio"] == pytest.approx(jump)
    # the random reference positions stay clear of every seam
    pos = seams.random_positions(x.shape[-1], bounds, SR)
    w = 441
    assert pos.size >= 200
    for b in bounds:
        assert np.all((pos + 1536 + w <= b) | (pos - w >= b + 1536))


def test_seams_run(codec, clips_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import m2lcodec

    monkeypatch.setattr(m2lcodec, "load_codec", lambda *a, **k: codec)
    out = tmp_path / "seams"
    seams.main(["--clips", str(clips_dir), "--out", str(out), "--count", "2", "--no-opus"])
    report = json.loads((out / "seams.json").read_text())
    assert report["clips"] == ["a.wav", "b.wav"] and report["model"]["hash"] == codec.info.hash
    assert set(report["mean"]) == {"original", "ar", "alone"}
    assert report["mean"]["original"]["periodic_level_std_db"] is None  # decode minus itself: not a decode
    assert report["mean"]["ar"]["periodic_level_std_db"] is not None
    for clip in report["per_clip"].values():
        for m in clip.values():
            assert m["seams"] == 2 and m["flux_ratio"] is not None and m["level_jump_ratio"] is not None
    # the original's ratios are the reference for a stationary signal
    assert 0.8 < report["mean"]["original"]["flux_ratio"] < 1.25


def test_compare_models_scores_the_real_codec(codec, clips_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Two weights files (here the same tiny codec twice) through compress/decompress: same bytes, same
    scores, every measure present; a clip not at 44.1 kHz is refused in one line."""
    import m2lcodec

    monkeypatch.setattr(m2lcodec, "load_codec", lambda *a, **k: codec)
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.wav").write_bytes((clips_dir / "a.wav").read_bytes())
    out = tmp_path / "cmp.json"
    compare_models.main(["--clips", str(one), "--model", "x=w1", "--model", "y=w2", "--no-opus", "--out", str(out)])
    report = json.loads(out.read_text())
    assert set(report["mean"]) == {"original", "x", "y"} and report["clips"] == ["a.wav"]
    assert report["per_clip"]["x"] == report["per_clip"]["y"]  # deterministic decode
    row = report["per_clip"]["x"]["a.wav"]
    assert set(row) == set(compare_models.MEASURES)
    assert 0 < row["kbps"] < 20 and row["mel_distance"] > 0 and row["jump_ratio"] > 0
    assert row["peakiness"] > 0 and -1 <= row["onset_corr"] < 1 and row["flux_ratio"] > 0
    original = report["per_clip"]["original"]["a.wav"]
    assert 0.8 < original["flux_ratio"] < 1.25  # steady sines: the seams are not special in the original
    assert original["onset_corr"] == 1.0 and original["visqol"] is None and original["peakiness"] > 10  # sines
    compare_models.main(["--clips", str(one), "--model", "x=w1", "--no-opus", "--no-visqol", "--out", str(out)])
    quick = json.loads(out.read_text())["per_clip"]["x"]["a.wav"]
    assert quick["visqol"] is None and quick["mel_distance"] == row["mel_distance"]
    with pytest.raises(SystemExit, match="44.1 kHz"):
        compare_models.main(["--clips", str(clips_dir), "--no-opus", "--out", str(out)])


def test_periodic_level_error() -> None:
    """A constant level error has no structure over the chunk period; high-frequency energy that is loud at
    each chunk's start and fades across the chunk (a seam pattern) does."""
    rng = np.random.default_rng(0)
    n = 10 * SR
    x = (0.1 * rng.standard_normal(n)).astype(np.float32)  # broadband: energy above 4 kHz everywhere
    flat, _ = seams.periodic_level_error(0.5 * x, x, SR)
    assert flat < 0.05, flat
    pos = (np.arange(n) + 1536) % 32768 / 32768  # position in the chunk grid of the output
    high = x - np.convolve(x, np.ones(8) / 8, mode="same")  # mostly above 4 kHz
    y = x + high * (3.0 * (1 - pos))  # +HF at each chunk start, fading across the chunk
    periodic, per_bin = seams.periodic_level_error(y, x, SR)
    assert periodic > 1.0 and per_bin.shape == (32,), periodic
    assert per_bin[0] > per_bin[-1] + 2  # louder at the start of the period than at its end


@pytest.mark.skipif(not __import__("shutil").which("ffmpeg"), reason="no ffmpeg for the Opus reference")
def test_seams_run_with_opus_reference(codec, clips_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import m2lcodec

    monkeypatch.setattr(m2lcodec, "load_codec", lambda *a, **k: codec)
    seams.main(["--clips", str(clips_dir), "--out", str(tmp_path), "--count", "1"])
    report = json.loads((tmp_path / "seams.json").read_text())
    assert set(report["mean"]) == {"original", "ar", "alone", "opus-12k"}
    assert report["mean"]["opus-12k"]["periodic_level_std_db"] is not None


@pytest.mark.skipif(not __import__("shutil").which("ffmpeg"), reason="no ffmpeg for the Opus reference")
def test_train_study_scores_opus_like_compare_models(clips_dir: Path, monkeypatch) -> None:
    """The study's Opus rows come from compare_models.score: every measure, means over the clips."""
    from argparse import Namespace

    import m2lcodec.metrics

    monkeypatch.setattr(m2lcodec.metrics, "visqol", lambda ref, est, sr: 3.0)
    one = clips_dir / "a.wav"
    rows = train_study.opus_rows(Namespace(clips=str(one.parent), eval_clips=1))
    assert set(rows) == {"opus-6k", "opus-12k"}
    for row in rows.values():
        assert set(row) == set(compare_models.MEASURES) and row["visqol"] == 3.0
    assert rows["opus-6k"]["kbps"] < rows["opus-12k"]["kbps"]
    assert rows["opus-12k"]["mel_distance"] < rows["opus-6k"]["mel_distance"]


def test_chunks_alone_decode(codec) -> None:
    x = sines(2.0)
    z = codec.encode(x, SR)
    a = seams.decode_chunks_alone(codec, z, x.shape[1], seed=0)
    assert a.shape == x.shape and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, seams.decode_chunks_alone(codec, z, x.shape[1], seed=0))
    # chunks are independent: changing chunk 2's latents leaves everything before its seam unchanged
    z2 = z.copy()
    z2[:, 2] = -z2[:, 2]
    b = seams.decode_chunks_alone(codec, z2, x.shape[1], seed=0)
    seam = seams.boundary_positions(x.shape[1])[1]
    np.testing.assert_array_equal(a[:, :seam], b[:, :seam])
    assert not np.array_equal(a[:, seam + 1536 :], b[:, seam + 1536 :])


def test_learning_curve_compares_runs(tmp_path: Path) -> None:
    """Two runs' logs -> one plot and a JSON per run; hours are summed from the logged steps/s; a run
    without the decoder metrics (older logs) is plotted without them."""
    import subprocess

    val = {"rec_mse": 0.11, "zeros_mse": 0.11, "swap_ratio": 1.0, "denoise_swap_ratio@0.1": 1.0,
           "denoise_swap_ratio@1": 1.0, "denoise_swap_ratio@10": 1.0, "denoise_mse@0.1": 0.01,
           "denoise_mse@1": 0.1, "denoise_mse@10": 0.11, "latent_spread": 0.5}
    for name, extra in (("old", {}), ("new", {"feature_spread": 0.1, "envelope_rel_err": 0.2})):
        run = tmp_path / name
        run.mkdir()
        records = [{"step": 10, "loss": 1.0, "steps_per_s": 1 / 36}, {"step": 20, "loss": 1.0, "steps_per_s": 1 / 36},
                   {"step": 20, "kind": "val", **val, **extra}]
        (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    script = Path(__file__).parent.parent / "bench" / "learning_curve.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "new"), str(tmp_path / "old"),
                          "--out", str(tmp_path / "c.png"), "--json", str(tmp_path / "c.json")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "c.png").stat().st_size > 1000
    curves = json.loads((tmp_path / "c.json").read_text())
    assert set(curves) == {"new", "old"}
    assert curves["new"][0]["train_hours"] == pytest.approx(0.2)  # 20 steps at 36 s each
    assert "feature_spread" not in curves["old"][0]


def test_time_path_probes_see_the_grid_paths() -> None:
    """bench/studies/time_path.py: a bag-of-tokens encoder barely notices its tokens reversed in time; with
    live grid paths it does, and the decoder's grid reading shows up in its probes."""
    import dataclasses

    from m2lcodec.model import Music2Latent2, get_config

    time_path = _load("studies/time_path")
    torch.manual_seed(0)
    x = torch.randn(4, 2, 1024, 64) * 0.3
    plain = Music2Latent2(get_config("tiny")).eval()
    grid = Music2Latent2(dataclasses.replace(get_config("tiny"), grid_code=2)).eval()
    grid.load_adapted(plain.state_dict(), plain.config)
    with torch.no_grad():
        for path in (grid.encoder.grid_path.mix, grid.decoder.grid_path.widen):
            path.weight.normal_(0, 1.0)
    p, g = time_path.model_probes(plain, x), time_path.model_probes(grid, x)
    assert p["decoder_grid_norm"] == 0 and g["decoder_grid_norm"] > 0
    assert g["reversal_change"] > 3 * p["reversal_change"]
    comp = time_path.motion_compressibility(torch.randn(160, 2, 1024, 64), torch.randn(8, 2, 1024, 64))
    assert all(-1 < v <= 1 for v in comp.values())


def test_postfilter_contrast_sharpens_lines_and_keeps_the_envelope() -> None:
    """bench/studies/postfilter.py: alpha 0 is the identity; a positive alpha raises a harmonic line above
    its neighbourhood, keeps the phase, and (keep_power) the running-mean power stays where it was."""
    postfilter = _load("studies/postfilter")
    torch.manual_seed(0)
    spec = torch.randn(1, 2, 1024, 16) * 0.05
    spec[:, :, 100] *= 8.0  # a stationary line in bin 100
    same = postfilter.contrast_filter(spec, postfilter.Contrast(0.0, 9, 5, True))
    assert torch.allclose(same, spec, atol=1e-6)
    cfg = postfilter.Contrast(0.5, 9, 5, True)
    out = postfilter.contrast_filter(spec, cfg)
    mag_in, mag_out = spec.pow(2).sum(1).sqrt(), out.pow(2).sum(1).sqrt()
    line_vs_floor = lambda m: (m[0, 100] / m[0, 90:111].median(0).values).mean().item()  # noqa: E731
    assert line_vs_floor(mag_out) > 1.2 * line_vs_floor(mag_in)
    assert torch.allclose(out[:, 0] * spec[:, 1], out[:, 1] * spec[:, 0], atol=1e-6)  # phase kept
    power = lambda m: ((m / spectral.AMP_SCALE) ** (2 / spectral.AMP_POWER)).sum(1)  # noqa: E731  per frame
    loose = postfilter.contrast_filter(spec, postfilter.Contrast(0.5, 9, 5, False)).pow(2).sum(1).sqrt()
    kept_err = (power(mag_out) / power(mag_in) - 1).abs().max().item()
    assert kept_err < 0.05 and kept_err < 0.5 * (power(loose) / power(mag_in) - 1).abs().max().item()


def test_comb_study_fits_only_the_four_bin_pattern() -> None:
    """bench/studies/comb.py: the fitted profile is the residual's period-4 part (a broad envelope error is
    left alone), and dividing it out of a spectrogram with that comb flattens the comb."""
    comb_study = _load("studies/comb")
    bins = np.arange(spectral.FREQ_BINS)
    pattern = np.array([0.3, -3.0, 0.1, 2.6])[bins % 4]
    pattern -= pattern.mean()
    envelope_err = 6.0 * np.sin(bins / 150.0)  # slow, as the decode's level errors are
    fitted = comb_study.periodic_part(envelope_err + pattern)
    assert np.abs(fitted[40:-40] - pattern[40:-40]).max() < 0.1
    assert np.abs(comb_study.periodic_part(envelope_err)[40:-40]).max() < 0.1
    torch.manual_seed(0)
    orig = torch.randn(1, 2, spectral.FREQ_BINS, 64)
    gain = torch.from_numpy(10 ** (pattern * spectral.AMP_POWER / 20)).float()
    decoded = orig * gain[:, None]
    profile = comb_study.fit_profile([decoded], [orig])
    assert np.abs(profile[40:-40] - pattern[40:-40]).max() < 0.1
    fixed = comb_study.apply_comb(decoded, torch.from_numpy(profile).float())
    assert max(abs(v) for v in comb_study.phase_means(comb_study.mean_residual(fixed, orig))) < 0.1



def test_paired_reads_the_shipping_rule_from_two_runs(tmp_path: Path) -> None:
    """Pairs only the shared clips; ships on a ViSQOL gain with mel level; refuses a mel loss beyond one
    standard error; a bad JSON:NAME is one error line and exit 2."""
    def run(name: str, rows: dict[str, tuple[float, float]]) -> str:
        per_clip = {c: {"visqol": v, "mel_distance": m, "periodic_db": 1.0, "onset_corr": 0.5}
                    for c, (v, m) in rows.items()}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"per_clip": {name: per_clip}}))
        return f"{path}:{name}"

    shipped = run("old", {"a": (3.0, 0.30), "b": (3.2, 0.28), "c": (2.9, 0.31), "only-old": (1.0, 9.0)})
    better = run("new", {"a": (3.1, 0.30), "b": (3.3, 0.281), "c": (2.95, 0.309)})
    worse_mel = run("mel", {"a": (3.1, 0.32), "b": (3.3, 0.30), "c": (2.95, 0.33)})
    diffs = paired.paired_diffs(paired.load_scores(better), paired.load_scores(shipped))
    by = {d.measure: d for d in diffs}
    assert by["visqol"].count == 3 and by["visqol"].better == 3
    assert by["visqol"].mean == pytest.approx(0.25 / 3)
    assert by["mel_distance"].better == 1  # a: equal, b: worse, c: better
    assert paired.main(["--candidate", better, "--shipped", shipped]) == 0
    assert paired.main(["--candidate", worse_mel, "--shipped", shipped]) == 1
    assert paired.main(["--candidate", f"{tmp_path / 'new.json'}:nope", "--shipped", shipped]) == 2
