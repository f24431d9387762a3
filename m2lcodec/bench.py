"""The codec benchmark: Music2Latent2 against ffmpeg baselines on a folder of clips.

`run_bench` codes every clip with the codec (one entry per quantisation, named ``m2l-int8``,
``m2l-fp16``) and with the ffmpeg baselines of :mod:`m2lcodec.baselines` (``opus-6k``, ...), scores
each decoded clip against its reference (ViSQOL, SI-SDR, multi-resolution mel distance), measures the
real bitrate, speed and memory, computes one FAD per codec with the offline mel-statistics embedding,
and writes ``results.json``, ``report.md`` and ``quality_vs_bitrate.png`` to the report folder. What
every number means is in docs/bench.md.

    from m2lcodec.codec import load_codec
    from m2lcodec.bench import run_bench
    results = run_bench("clips/", "report/", load_codec(), quants=("int8",), baselines=("opus-12k",))
"""

from __future__ import annotations

import ctypes
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from m2lcodec import baselines as bl
from m2lcodec import metrics
from m2lcodec.atomic import atomic_output
from m2lcodec.audio import audio_info, read_audio, write_audio
from m2lcodec.version import __version__

__all__ = [
    "AUDIO_SUFFIXES",
    "DEFAULT_BASELINE_NAMES",
    "DEFAULT_QUANTS",
    "METRIC_KEYS",
    "PeakMemory",
    "find_clips",
    "plot_quality_vs_bitrate",
    "run_bench",
    "write_report",
]

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif"}
DEFAULT_QUANTS = ("int8", "fp16")
DEFAULT_BASELINE_NAMES = tuple(b.name for b in bl.DEFAULT_BASELINES)
# per-codec summary keys (means over clips, nulls ignored) and per-clip metric keys
METRIC_KEYS = ("visqol", "si_sdr", "mel_distance", "kbps", "compression_ratio", "encode_rtf", "decode_rtf",
               "peak_memory_mb")
WARMUP_SECONDS = 2.0

Progress = Callable[[int, int, str], None]  # (done, total, description)


# --------------------------------------------------------------------------
# peak memory
# --------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    """A ``kB`` field (VmRSS, VmHWM) of /proc/self/status, or None where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _malloc_trim() -> None:
    """Give freed heap pages back to the OS (glibc) so an RSS increase is not hidden by memory that an
    earlier clip freed but the allocator kept. A no-op where glibc is not the C library."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak resident-memory increase of this process during a ``with`` block, in MB (10^6 bytes).

    Before the block, freed heap is returned to the OS (``malloc_trim``) and the current RSS is read from
    /proc/self/status (VmRSS). During the block a background thread samples VmRSS every
    ``interval`` seconds; where the kernel allows it the peak-RSS counter VmHWM is also reset on entry
    (``/proc/self/clear_refs``) and read on exit, which catches peaks shorter than the sampling interval.
    ``peak_mb`` = max(sampled peak, VmHWM) - RSS before: memory the block needed beyond what the process
    already held (model weights and the torch runtime are not counted). tracemalloc cannot see torch's
    allocations, hence RSS. On CUDA ``gpu_peak_mb`` is the increase of torch's peak allocated memory.
    Where /proc is missing (not Linux) ``peak_mb`` is None.
    """

    def __init__(self, interval: float = 0.002, cuda: bool = False) -> None:
        self.interval = interval
        self.cuda = cuda
        self.peak_mb: float | None = None
        self.gpu_peak_mb: float | None = None
        self.method = "unavailable"
        self._stop = threading.Event()
        self._peak_kb = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = _status_kb("VmRSS")
            if rss is not None:
                self._peak_kb = max(self._peak_kb, rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        _malloc_trim()
        self._before_kb = _status_kb("VmRSS")
        if self._before_kb is None:
            return self
        self._peak_kb = self._before_kb
        self._hwm = _reset_hwm()
        self.method = "VmHWM+VmRSS sampler" if self._hwm else "VmRSS sampler"
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._gpu_before = torch.cuda.memory_allocated()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._before_kb is None:
            return
        self._stop.set()
        self._thread.join()
        peak = self._peak_kb
        if self._hwm:
            peak = max(peak, _status_kb("VmHWM") or 0)
        self.peak_mb = max(peak - self._before_kb, 0) * 1024 / 1e6
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.gpu_peak_mb = max(torch.cuda.max_memory_allocated() - self._gpu_before, 0) / 1e6


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def find_clips(clips_dir: str | Path, limit: int | None = None) -> list[Path]:
    """Audio files under `clips_dir` (recursive, sorted by relative path); the first `limit` of them."""
    root = Path(clips_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"clip folder not found: {root}")
    files = sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES),
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise ValueError(f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) under {root}")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be at least 1, got {limit}")
        files = files[:limit]
    return files


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def _finite(row: dict) -> dict:
    """Non-finite floats become None so results.json stays strict JSON."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def _save(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_audio(path, audio, sample_rate, subtype="PCM_16", force=True)


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _ffmpeg_version() -> str | None:
    if not bl.ffmpeg_available():
        return None
    try:
        out = subprocess.run([bl.FFMPEG, "-version"], capture_output=True, timeout=30, check=False).stdout
        return out.decode(errors="replace").splitlines()[0] if out else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def _model_path_label(model_path: str | Path | None) -> str:
    from m2lcodec.weights import DEFAULT_WEIGHTS

    if model_path is None or Path(model_path).resolve() == DEFAULT_WEIGHTS.resolve():
        return "m2lcodec/weights/default.safetensors (bundled)"
    return str(model_path)


def _meta(codec: Any, model_path: str | Path | None, command: str | None, clips_dir: Path, n_clips: int,
          mono: bool, seed: int) -> dict:
    import torch

    return {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "device": str(codec.device),
                    "cuda_device": torch.cuda.get_device_name(codec.device) if codec.device.type == "cuda"
                    else None},
        "model": {"name": codec.info.name, "hash": codec.info.hash, "path": _model_path_label(model_path),
                  "decode": {"sigma_cond": codec.sigma_cond, "deblock": codec.deblock,
                             "noise_scale": codec.noise_scale}},
        "versions": {"m2lcodec": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "visqol-python": _package_version("visqol-python"), "python": platform.python_version(),
                     "ffmpeg": _ffmpeg_version()},
        "command": command if command is not None else " ".join(["m2lcodec", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "clips_dir": str(clips_dir),
        "num_clips": n_clips,
        "mono": mono,
        "seed": seed,
        "peak_memory_method": None,
        "notes": [],
    }


# --------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------


def run_bench(clips_dir: str | Path, out_dir: str | Path, codec: Any, quants: Sequence[str] = DEFAULT_QUANTS,
              baselines: Sequence[str] = DEFAULT_BASELINE_NAMES, limit: int | None = None, mono: bool = False,
              use_visqol: bool = True, seed: int = 0, save_audio: bool = False,
              model_path: str | Path | None = None, command: str | None = None, force: bool = False,
              progress: Progress | None = None, plot: bool = True) -> dict:
    """Benchmark `codec` (a loaded :class:`m2lcodec.codec.Codec`) and the ffmpeg `baselines` on the clips
    of `clips_dir`; write results.json, report.md and quality_vs_bitrate.png to `out_dir` and return the
    results dict (see docs/bench.md for its layout). Baselines are skipped with a note when ffmpeg or its
    encoder is missing, ViSQOL (null) when `use_visqol` is False or visqol-python is not installed.
    Existing report files are only replaced with `force`."""
    for q in quants:
        if q not in ("int8", "fp16"):
            raise ValueError(f"quant must be int8 or fp16, got {q!r}")
    if not quants and not baselines:
        raise ValueError("nothing to benchmark: no quant and no baseline")
    try:
        base_list = [bl.get_baseline(name) for name in baselines]
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    clips_dir, out_dir = Path(clips_dir), Path(out_dir)
    clips = find_clips(clips_dir, limit)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not force:
        for name in ("results.json", "report.md", "quality_vs_bitrate.png"):
            if (out_dir / name).exists():
                raise FileExistsError(f"{out_dir / name} exists; pass --force to overwrite the report")

    meta = _meta(codec, model_path, command, clips_dir, len(clips), mono, seed)
    notes: list[str] = meta["notes"]

    if base_list:
        if not bl.ffmpeg_available():
            notes.append(f"ffmpeg not found on PATH: baselines skipped ({', '.join(b.name for b in base_list)})")
            base_list = []
        else:
            missing = [b for b in base_list if b.codec not in bl.available_encoders()]
            for b in missing:
                notes.append(f"this ffmpeg has no {b.codec} encoder: baseline {b.name} skipped")
            base_list = [b for b in base_list if b not in missing]
            if not mono:
                wide = [c.name for c in clips if audio_info(c)[1] > 2]
                if wide:
                    raise ValueError(f"{wide[0]} has more than 2 channels; the ffmpeg baselines take mono or "
                                     "stereo: pass --mono")
    if not use_visqol:
        notes.append("ViSQOL not computed (--no-visqol)")

    codec_names = [f"m2l-{q}" for q in quants] + [b.name for b in base_list]
    if not codec_names:
        raise ValueError("nothing to benchmark: every baseline was skipped and no quant was asked for")
    cuda = getattr(codec, "device", None) is not None and codec.device.type == "cuda"
    total = len(clips) * len(codec_names)
    done = 0
    rows: list[dict] = []
    ref_emb: list[np.ndarray] = []
    est_emb: dict[str, list[np.ndarray]] = {name: [] for name in codec_names}
    visqol_on = use_visqol

    def tick(description: str, advance: int = 0) -> None:
        nonlocal done
        done += advance
        if progress is not None:
            progress(done, total, description)

    def score(clip_name: str, codec_name: str, ref: np.ndarray, dec: np.ndarray, sr: int,
              row: dict) -> dict:
        nonlocal visqol_on
        if dec.shape != ref.shape:
            raise RuntimeError(f"{codec_name} returned shape {dec.shape} for {clip_name} {ref.shape}")
        row["si_sdr"] = metrics.si_sdr(ref, dec)
        row["mel_distance"] = metrics.mel_distance(ref, dec, sr)
        row["visqol"] = None
        if visqol_on:
            try:
                row["visqol"] = metrics.visqol(ref, dec, sr)
            except metrics.MetricUnavailable as err:
                notes.append(f"ViSQOL unavailable ({err}); column left null")
                visqol_on = False
        est_emb[codec_name].append(metrics.mel_statistics_embedding(dec, sr))
        if save_audio:
            _save(out_dir / "audio" / codec_name / Path(clip_name).with_suffix(".wav"), dec, sr)
        return _finite(row)

    warm = False
    tick("starting")
    for path in clips:
        clip_name = path.relative_to(clips_dir).as_posix()
        audio, sr = read_audio(path)
        if mono:
            audio = audio.mean(axis=0, keepdims=True)
        channels, length = audio.shape
        duration = length / sr
        pcm16_kbps = sr * channels * 16 / 1000
        ref_emb.append(metrics.mel_statistics_embedding(audio, sr))
        if save_audio:
            _save(out_dir / "audio" / "reference" / Path(clip_name).with_suffix(".wav"), audio, sr)

        for q in quants:
            name = f"m2l-{q}"
            tick(f"{name} {path.name}")
            if not warm:  # first calls pay one-off costs (allocator, kernels): keep them out of the timing
                snippet = audio[:, : max(1, int(WARMUP_SECONDS * sr))]
                codec.decompress(codec.compress(snippet, sr, quant=q, seed=seed))
                warm = True
            t0 = time.perf_counter()
            data = codec.compress(audio, sr, quant=q, seed=seed)
            t1 = time.perf_counter()
            with PeakMemory(cuda=cuda) as mem:
                t2 = time.perf_counter()
                decoded, out_sr = codec.decompress(data)
                t3 = time.perf_counter()
            meta["peak_memory_method"] = mem.method
            if out_sr != sr:
                raise RuntimeError(f"{name} decoded {clip_name} at {out_sr} Hz instead of {sr} Hz")
            kbps = len(data) * 8 / duration / 1000
            row = {"clip": clip_name, "codec": name, "duration_s": duration, "channels": channels,
                   "encoded_bytes": len(data), "kbps": kbps, "compression_ratio": pcm16_kbps / kbps,
                   "encode_rtf": duration / max(t1 - t0, 1e-9), "decode_rtf": duration / max(t3 - t2, 1e-9),
                   "peak_memory_mb": mem.peak_mb}
            if cuda:
                row["peak_gpu_memory_mb"] = mem.gpu_peak_mb
            rows.append(score(clip_name, name, audio, decoded, sr, row))
            tick(f"{name} {path.name}", 1)

        for b in base_list:
            tick(f"{b.name} {path.name}")
            res = bl.run_baseline(b, audio, sr)
            row = {"clip": clip_name, "codec": b.name, "duration_s": duration, "channels": channels,
                   "encoded_bytes": res.encoded_bytes, "kbps": res.kbps,
                   "compression_ratio": pcm16_kbps / res.kbps,
                   "encode_rtf": duration / max(res.encode_seconds, 1e-9),
                   "decode_rtf": duration / max(res.decode_seconds, 1e-9),
                   # ru_maxrss of children is useless here: Python starts ffmpeg with vfork, so the child's
                   # peak is recorded as this (large) process's RSS. See docs/bench.md.
                   "peak_memory_mb": None, "lag_samples": res.lag_samples}
            rows.append(score(clip_name, b.name, audio, res.audio, sr, row))
            tick(f"{b.name} {path.name}", 1)

    if base_list:
        notes.append("peak_memory_mb is null for the ffmpeg baselines (not measurable per run, see docs/bench.md)")

    summary: dict[str, dict] = {}
    for name in codec_names:
        mine = [r for r in rows if r["codec"] == name]
        entry = {k: _mean([r.get(k) for r in mine]) for k in METRIC_KEYS}
        if cuda and name.startswith("m2l-"):
            entry["peak_gpu_memory_mb"] = _mean([r.get("peak_gpu_memory_mb") for r in mine])
        try:
            entry["fad_mel_stats"] = metrics.frechet_distance(
                *metrics.embedding_statistics(np.concatenate(ref_emb)),
                *metrics.embedding_statistics(np.concatenate(est_emb[name])))
        except ValueError as err:
            entry["fad_mel_stats"] = None
            notes.append(f"FAD for {name} not computed: {err}")
        entry["clips"] = len(mine)
        summary[name] = entry
    total_rows = sum(e.shape[0] for e in ref_emb)
    if total_rows <= ref_emb[0].shape[1]:
        notes.append(f"FAD from {total_rows} embedding rows for a {ref_emb[0].shape[1]}-dim embedding: "
                     "use more clips for stable values")

    results = {"codecs": summary, "clips": rows, "meta": meta}
    write_report(results, out_dir, plot=plot)
    tick("done")
    return results


# --------------------------------------------------------------------------
# report files
# --------------------------------------------------------------------------


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


TABLE_COLUMNS = (  # (key, header, digits)
    ("kbps", "kbps", 2), ("compression_ratio", "ratio vs PCM16", 0), ("visqol", "ViSQOL", 2),
    ("si_sdr", "SI-SDR dB", 1), ("mel_distance", "mel dist", 3), ("fad_mel_stats", "FAD (mel-stats)", 2),
    ("encode_rtf", "enc x RT", 1), ("decode_rtf", "dec x RT", 1), ("peak_memory_mb", "peak MB", 0),
)


def summary_rows(results: dict) -> list[list[str]]:
    """The means table as strings: codec name then one cell per TABLE_COLUMNS entry."""
    return [[name, *(_fmt(entry.get(key), d) for key, _, d in TABLE_COLUMNS)]
            for name, entry in results["codecs"].items()]


def _markdown(results: dict, has_plot: bool) -> str:
    meta = results["meta"]
    m, mach = meta["model"], meta["machine"]
    lines = [
        "# m2lcodec benchmark",
        "",
        f"- model: `{m['name']}` hash `{m['hash']}` ({m['path']})"
        + ("; decode: " + ", ".join(f"{k} {v:g}" for k, v in m["decode"].items()) if "decode" in m else ""),
        f"- clips: {meta['num_clips']} from `{meta['clips_dir']}`" + (" (mixed to mono)" if meta["mono"] else ""),
        f"- machine: {mach['platform']}, {mach['cpu_count']} CPUs, torch {mach['torch']} "
        f"({mach['torch_threads']} threads), device {mach['device']}",
        f"- date: {meta['date']}",
        f"- command: `{meta['command']}`",
        "",
        "Means over clips (FAD: one value per codec over all clips). Metrics are defined in docs/bench.md.",
        "",
        "| codec | " + " | ".join(h for _, h, _ in TABLE_COLUMNS) + " |",
        "| --- | " + " | ".join("---:" for _ in TABLE_COLUMNS) + " |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(results)]
    lines.append("")
    if has_plot:
        lines += ["![quality vs bitrate](quality_vs_bitrate.png)", ""]
    notes = list(meta["notes"])
    if meta.get("peak_memory_method"):
        notes.append(f"peak memory (m2l): increase of resident memory during decompress "
                     f"({meta['peak_memory_method']})")
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def plot_quality_vs_bitrate(results: dict, path: str | Path) -> str:
    """ViSQOL (or mel distance where ViSQOL is missing) against kbps, one labelled point per codec.
    Returns the quantity plotted; raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    codecs = results["codecs"]
    use_visqol = any(e.get("visqol") is not None for e in codecs.values())
    key = "visqol" if use_visqol else "mel_distance"
    ylabel = "ViSQOL MOS-LQO (higher is better)" if use_visqol else \
        "mel distance (lower is better; ViSQOL unavailable)"
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, entry in codecs.items():
        x, y = entry.get("kbps"), entry.get(key)
        if x is None or y is None:
            continue
        ours = name.startswith("m2l-")
        ax.scatter([x], [y], marker="*" if ours else "o", s=140 if ours else 50,
                   color="tab:red" if ours else "tab:blue", zorder=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=9)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=8)
    ax.set_xlabel("measured bitrate (kbps, log scale)")
    ax.set_ylabel(ylabel)
    meta = results["meta"]
    ax.set_title(f"quality vs bitrate: {meta['model']['name']} vs ffmpeg, {meta['num_clips']} clips")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_output(Path(path), force=True) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return key


def write_report(results: dict, out_dir: str | Path, plot: bool = True) -> None:
    """results.json, report.md and (with matplotlib) quality_vs_bitrate.png in `out_dir`."""
    out_dir = Path(out_dir)
    notes = results["meta"]["notes"]
    has_plot = False
    if plot:
        try:
            key = plot_quality_vs_bitrate(results, out_dir / "quality_vs_bitrate.png")
            has_plot = True
            if key != "visqol":
                notes.append("quality_vs_bitrate.png plots mel distance instead of ViSQOL (no ViSQOL scores)")
        except ImportError:
            notes.append("matplotlib is not installed: quality_vs_bitrate.png not written "
                         "(pip install 'm2lcodec[bench]')")
    with atomic_output(out_dir / "results.json", force=True) as tmp:
        Path(tmp).write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
    with atomic_output(out_dir / "report.md", force=True) as tmp:
        Path(tmp).write_text(_markdown(results, has_plot) + "\n")
