"""The `m2lcodec` command line: a thin Typer layer over codec, container, train and bench.

Every failure a user can cause ends in one line on stderr and exit status 1 (set M2L_DEBUG=1 for the
traceback); outputs are written to a temp file and renamed, and never overwrite without --force.
`decompress --salvage` of a damaged file writes its output and exits with SALVAGED (3); a closed output
pipe exits with 141 quietly.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

if TYPE_CHECKING:  # the codec imports torch: only where a command needs it
    from m2lcodec.codec import CodecStats

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Music2Latent2 neural audio codec for music.")
console = Console(stderr=True)
out = Console(markup=False)  # file names may contain [brackets]: never parse them as markup

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif"}
FORMATS = {"wav16": ("wav", "PCM_16"), "wav24": ("wav", "PCM_24"), "float": ("wav", "FLOAT"),
           "flac": ("flac", "PCM_16"), "flac24": ("flac", "PCM_24")}


EXTRAS = {"scipy": "bench", "matplotlib": "bench", "visqol": "bench"}  # optional module -> the extra with it


SALVAGED = 3  # exit status of `decompress --salvage` when the input was damaged (the output was written)


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def fail(message: str) -> None:
    raise CliError(message)


def run_safely(fn):
    """Decorator: turn any exception into a one-line error and a non-zero exit."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except BrokenPipeError:  # the reader of our stdout went away (`| head -c 1000`): stop quietly
            with contextlib.suppress(OSError):  # and keep Python's exit-time flush from complaining
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141)  # 128 + SIGPIPE, as a program killed by SIGPIPE reports
        except KeyboardInterrupt:
            console.print("[red]error:[/red] interrupted (no partial output was left)")
            raise typer.Exit(130)
        except ModuleNotFoundError as err:
            extra = EXTRAS.get((err.name or "").split(".")[0])
            if extra is None or os.environ.get("M2L_DEBUG"):
                raise
            console.print(f"[red]error:[/red] this command needs the optional extra '{extra}' (missing module "
                          f"{err.name}): pip install 'm2lcodec\\[{extra}]'", highlight=False, soft_wrap=True)
            raise typer.Exit(1)
        except Exception as err:  # noqa: BLE001 - the CLI boundary: nothing escapes as a traceback
            if os.environ.get("M2L_DEBUG"):
                raise
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            known = ("AudioError", "ContainerError", "OutputError", "OutputExistsError", "WeightsError",
                     "ModelMismatchError", "CliError", "FileNotFoundError", "ValueError", "PermissionError")
            prefix = "" if type(err).__name__ in known else f"{type(err).__name__}: "
            console.print(f"[red]error:[/red] {escape(prefix + message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)

    return wrapper


def parse_shard(shard: Optional[str]) -> tuple[int, int]:
    if shard is None:
        return 0, 1
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        fail(f"--shard must look like I/N (e.g. 0/4), got {shard!r}")
    if not (n >= 1 and 0 <= i < n):
        fail(f"--shard I/N needs 0 <= I < N, got {shard!r}")
    return i, n


def plan_jobs(src: Path, dst: Path, suffixes: set[str], new_suffix: str, shard: tuple[int, int]) -> list[tuple[Path, Path]]:
    """One (input, output) pair for a file, or a mirrored tree for a directory, split by shard."""
    if not src.exists():
        fail(f"input not found: {src}")
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            fail(f"no input files ({', '.join(sorted(suffixes))}) under {src}")
        jobs = [(f, dst / f.relative_to(src).with_suffix(new_suffix)) for f in files]
    else:
        jobs = [(src, dst)]
    i, n = shard
    return [job for k, job in enumerate(jobs) if k % n == i]


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                    TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


def summary_table(title: str, rows: list, compress: bool) -> Table:
    """Sizes, ratios, bitrate and speed of a compress or decompress run (one row per file; a single
    file is shown as a field/value list so it fits a narrow terminal)."""
    records = []
    for name, st in rows:
        m2l = st.output_bytes if compress else st.input_bytes
        orig = st.input_bytes if compress else st.output_bytes
        records.append({
            "file": name, "duration": f"{st.duration:.2f} s", "channels / rate": f"{st.channels} / {st.sample_rate} Hz",
            "input": human_bytes(st.input_bytes), "output": human_bytes(st.output_bytes),
            "ratio vs PCM16": f"{st.pcm16_bytes / max(m2l, 1):.0f}x",
            "ratio vs input": f"{orig / max(m2l, 1):.1f}x" if compress else "-",
            "bitrate": f"{m2l * 8 / max(st.duration, 1e-9) / 1000:.2f} kbps"
                       f" ({m2l * 8 / max(st.duration, 1e-9) / 1000 / st.channels:.2f} per channel)",
            "time": f"{st.seconds:.2f} s", "speed": f"{st.realtime:.1f}x real time"})
    table = Table(title=title)
    if len(records) == 1:
        table.add_column("field")
        table.add_column("value", justify="right")
        for key, value in records[0].items():
            table.add_row(key, value)
        return table
    for col in records[0]:
        table.add_column(col, justify="left" if col == "file" else "right")
    for record in records:
        table.add_row(*record.values())
    return table


def get_codec(model: Optional[Path], device: str):
    from m2lcodec.codec import load_codec

    if device not in ("auto", "cpu", "cuda"):
        fail(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            fail("--device cuda was asked for but no CUDA device is available")
    return load_codec(model, device)


ModelOpt = typer.Option(None, "--model", help="weights file (.safetensors); default: the bundled model")
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu or cuda")
ForceOpt = typer.Option(False, "--force", help="overwrite existing outputs")
ShardOpt = typer.Option(None, "--shard", help="I/N: process only the I-th of N slices of a directory")


@app.command()
@run_safely
def compress(src: Path = typer.Argument(..., help="audio file, directory, or - for standard input"),
             dst: Path = typer.Argument(..., help=".m2l file, directory, or - for standard output"),
             model: Optional[Path] = ModelOpt, quant: str = typer.Option("int8", help="int8 or fp16"),
             device: str = DeviceOpt, force: bool = ForceOpt,
             seed: int = typer.Option(0, help="decoding seed stored in the file"),
             sigma_cond: Optional[float] = typer.Option(None, "--sigma-cond", help="stored decode parameter"),
             shard: Optional[str] = ShardOpt) -> None:
    """Compress audio to .m2l (prints sizes, compression ratio, bitrate and timing).

    SRC - reads audio from standard input (WAV, AIFF or FLAC); DST - writes the .m2l to standard output.
    With a pipe, the summary goes to standard error."""
    if quant not in ("int8", "fp16"):
        fail(f"--quant must be int8 or fp16, got {quant!r}")
    if is_pipe(src) or is_pipe(dst):
        source, target = pipe_ends(src, dst)
        codec = get_codec(model, device)
        with console.status("compressing", spinner="dots") if console.is_terminal else contextlib.nullcontext():
            st = codec.compress_file(source, target, quant=quant, seed=seed, sigma_cond=sigma_cond, force=force)
        console.print(summary_table(f"compress ({quant}, model {codec.info.name} {codec.info.hash})",
                                    [(pipe_name(src), st)], True))
        return
    jobs = plan_jobs(src, dst, AUDIO_SUFFIXES, ".m2l", parse_shard(shard))
    codec = get_codec(model, device)
    rows = []
    with progress_bar() as bar:
        task = bar.add_task("compressing", total=len(jobs))
        for s, d in jobs:
            bar.update(task, description=f"compressing {s.name}")
            if src.is_dir():
                d.parent.mkdir(parents=True, exist_ok=True)
            rows.append((s.name, codec.compress_file(s, d, quant=quant, seed=seed, sigma_cond=sigma_cond,
                                                     force=force)))
            bar.advance(task)
    out.print(summary_table(f"compress ({quant}, model {codec.info.name} {codec.info.hash})", rows, True))


def is_pipe(path: Path) -> bool:
    return str(path) == "-"


def pipe_name(path: Path) -> str:
    return "(stdin)" if is_pipe(path) else path.name


def pipe_ends(src: Path, dst: Path):
    """Map '-' to standard input/output; refuse what a pipe cannot be (a folder, binary to a terminal)."""
    if not is_pipe(src):
        if not src.exists():
            fail(f"input not found: {src}")
        if src.is_dir():
            fail(f"{src} is a directory: a folder cannot be piped (use a folder as output instead of -)")
    if is_pipe(dst) and sys.stdout.isatty():
        fail("refusing to write binary data to a terminal: redirect standard output or pipe it")
    if is_pipe(src) and sys.stdin.isatty():
        fail("standard input is a terminal: pipe or redirect the input into - ")
    return (sys.stdin.buffer if is_pipe(src) else src), (sys.stdout.buffer if is_pipe(dst) else dst)


@app.command()
@run_safely
def decompress(src: Path = typer.Argument(..., help=".m2l file, directory, or - for standard input"),
               dst: Path = typer.Argument(..., help="audio file, directory, or - for standard output (WAV)"),
               model: Optional[Path] = ModelOpt, device: str = DeviceOpt, force: bool = ForceOpt,
               seed: Optional[int] = typer.Option(None, help="override the seed stored in the file"),
               sigma_cond: Optional[float] = typer.Option(None, "--sigma-cond", help="override the stored value"),
               deblock: Optional[float] = typer.Option(
                   None, "--deblock", min=0.0, max=1.0,
                   help="seam deblocking strength, 0-1 (default: the model's; 0 = off, the paper's decode)"),
               noise_scale: Optional[float] = typer.Option(
                   None, "--noise-scale", min=0.0,
                   help="scale of the first step's starting noise (default: the model's; 1 = the paper's)"),
               start: float = typer.Option(0.0, help="decode from this time (seconds)"),
               duration: Optional[float] = typer.Option(None, help="decode this many seconds"),
               fmt: str = typer.Option("wav16", "--format", help=f"output format: {', '.join(FORMATS)}"),
               shard: Optional[str] = ShardOpt,
               salvage: bool = typer.Option(False, "--salvage", help="decode a damaged file: lost frames become "
                                            "silence, damaged time ranges go to standard error, exit status "
                                            f"{SALVAGED}")) -> None:
    """Decompress .m2l to audio with the original sample rate, channels and length.

    SRC - reads the .m2l from standard input; DST - streams WAV (wav16, wav24 or float) to standard output
    while it decodes (`m2lcodec decompress song.m2l - | ffplay -nodisp -`). With a pipe, progress and the
    summary go to standard error.

    A damaged file is refused (one error line, no output) unless --salvage: then every intact frame is
    decoded, lost frames are silence, the output keeps the original length, each damaged time range is
    listed on standard error ("damaged: 11.85-23.78 s (frame 1; ...)") and the exit status is 3.

    Exit status: 0 done, 1 error (nothing written), 3 salvaged a damaged file, 141 output pipe closed."""
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if duration is not None and duration <= 0:
        fail("--duration must be positive")
    suffix, subtype = FORMATS[fmt]
    if is_pipe(src) or is_pipe(dst):
        if is_pipe(dst) and suffix != "wav":
            fail(f"--format {fmt}: standard output carries WAV only (wav16, wav24 or float)")
        source, target = pipe_ends(src, dst)
        codec = get_codec(model, device)
        with progress_bar() as bar:
            task = bar.add_task(f"decompressing {pipe_name(src)}", total=1.0)
            st = codec.decompress_file(source, target, force=force, seed=seed, sigma_cond=sigma_cond, start=start,
                                       duration=duration, subtype=subtype, salvage=salvage, deblock=deblock,
                                       noise_scale=noise_scale, progress=lambda f: bar.update(task, completed=min(f, 1.0)))
        console.print(summary_table(f"decompress (model {codec.info.name} {codec.info.hash})",
                                    [(pipe_name(src), st)], False))
        if report_damage(st, ""):
            raise typer.Exit(SALVAGED)
        return
    jobs = plan_jobs(src, dst, {".m2l"}, "." + suffix, parse_shard(shard))
    codec = get_codec(model, device)
    rows = []
    damaged = False
    with progress_bar() as bar:
        task = bar.add_task("decompressing", total=len(jobs))
        audio_task = bar.add_task("", total=1.0)  # the file being decoded, chunk by chunk
        for s, d in jobs:
            bar.update(task, description=f"decompressing {s.name}")
            bar.update(audio_task, completed=0.0, description=f"  {s.name}")
            if src.is_dir():
                d.parent.mkdir(parents=True, exist_ok=True)
            rows.append((s.name, codec.decompress_file(
                s, d, force=force, seed=seed, sigma_cond=sigma_cond, start=start, duration=duration,
                subtype=subtype, salvage=salvage, deblock=deblock, noise_scale=noise_scale,
                progress=lambda f: bar.update(audio_task, completed=min(f, 1.0)))))
            damaged |= report_damage(rows[-1][1], f"{s}: " if src.is_dir() else "")
            bar.advance(task)
    out.print(summary_table(f"decompress (model {codec.info.name} {codec.info.hash})", rows, False))
    if damaged:
        raise typer.Exit(SALVAGED)


def report_damage(stats: CodecStats, prefix: str) -> bool:
    """Print a salvaged file's damaged time ranges and notes on standard error, one plain line each
    (whatever the terminal's width); True if there was any damage."""
    for damaged in stats.damaged:
        print(prefix + damaged.describe(), file=sys.stderr, flush=True)
    for note in stats.notes:
        print(f"{prefix}note: {note}", file=sys.stderr, flush=True)
    return bool(stats.damaged or stats.notes)


def version_callback(value: bool) -> None:
    if value:
        from m2lcodec.version import __version__

        out.print(f"m2lcodec {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                              help="print the version and exit")) -> None:
    """Music2Latent2 neural audio codec for music."""


def verify_one(path: Path) -> dict:
    """Header and every frame's checksum, zstd stream and values of one .m2l file; no model, no torch."""
    from m2lcodec.container import ContainerError, Reader

    try:
        with Reader.open(path) as reader:
            for i in range(reader.num_frames):
                reader.read_frame(i)
            h = reader.header
        return {"path": str(path), "ok": True, "frames": reader.num_frames, "duration_s": round(h.duration, 3),
                "channels": h.channels, "quant": h.quant}
    except (ContainerError, OSError) as err:
        message = str(err).splitlines()[0] if not isinstance(err, OSError) else err.strerror or str(err)
        record = {"path": str(path), "ok": False, "error": message.removeprefix(f"{path}: ")}
        if isinstance(err, ContainerError):
            try:  # how much `decompress --salvage` would keep
                with Reader.open(path, salvage=True) as reader:
                    record["intact_frames"] = sum(off is not None for off in reader.frame_offsets)
                    record["frames"] = reader.num_frames
            except (ContainerError, OSError):
                record["intact_frames"] = 0  # preamble or header damaged: nothing can be decoded
        return record


def salvage_hint(record: dict) -> str:
    """' (--salvage keeps 3 of 4 frames)' for a damaged file whose header is intact, else ''."""
    if "frames" not in record:
        return " (nothing can be salvaged)" if record.get("intact_frames") == 0 else ""
    return f" (decompress --salvage keeps {record['intact_frames']} of {record['frames']} frames)"


@app.command()
@run_safely
def verify(paths: list[Path] = typer.Argument(..., help=".m2l files or folders (searched recursively)"),
           as_json: bool = typer.Option(False, "--json", help="one JSON list instead of lines")) -> None:
    """Check .m2l files without decoding them: magic, version, header and every frame's checksum.
    One line per file (a damaged one says what `decompress --salvage` keeps); exit status 1 if any file
    is damaged."""
    files = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.rglob("*.m2l") if q.is_file())
            if not found:
                fail(f"no .m2l files under {p}")
            files += found
        else:
            files.append(p)
    results = [verify_one(f) for f in files]
    if as_json:
        out.print_json(json.dumps(results))
    else:
        for r in results:  # plain print: one line per file whatever the terminal's width
            print(f"ok       {r['path']} ({r['frames']} frames, {r['duration_s']:.2f} s, {r['channels']} ch, "
                  f"{r['quant']})" if r["ok"] else f"DAMAGED  {r['path']}: {r['error']}{salvage_hint(r)}", flush=True)
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)


@app.command()
@run_safely
def info(src: Path = typer.Argument(..., help=".m2l file"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Show an .m2l file's header, duration, bitrate and model."""
    from m2lcodec.container import Reader

    with Reader.open(src) as reader:
        header = reader.header
    size = src.stat().st_size
    record = {**header.to_dict(), "duration_s": header.duration, "file_bytes": size,
              "kbps": size * 8 / max(header.duration, 1e-9) / 1000,
              "kbps_per_channel": size * 8 / max(header.duration, 1e-9) / 1000 / header.channels}
    if as_json:
        out.print_json(json.dumps(record))
        return
    table = Table(title=str(src), show_header=False)
    for k, v in record.items():
        table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    out.print(table)


@app.command()
@run_safely
def embed(src: Path = typer.Argument(..., help="audio file"), dst: Path = typer.Argument(..., help=".npy output"),
          model: Optional[Path] = ModelOpt, device: str = DeviceOpt, force: bool = ForceOpt) -> None:
    """Summary-embedding features for MIR (channels x K*width, averaged over chunks) as .npy."""
    import numpy as np

    from m2lcodec.atomic import atomic_output
    from m2lcodec.audio import read_audio

    audio, sr = read_audio(src)
    codec = get_codec(model, device)
    features = codec.embed(audio, sr)
    with atomic_output(dst, force=force, protect=src) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, features)
    out.print(f"wrote {dst}: features {features.shape[0]} x {features.shape[1]} (channels x K*width)")


@app.command("model-info")
@run_safely
def model_info(spec: str = typer.Argument(..., help="preset name (tiny, small, paper), weights or checkpoint"),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Config and parameter count per module and in total; for a weights file also its hash, step and
    the decode parameters it carries (sigma_cond, deblock, noise_scale)."""
    from m2lcodec.codec import decode_defaults
    from m2lcodec.weights import model_from_preset_or_file, read_info

    model, cfg, source = model_from_preset_or_file(spec)
    counts = model.param_counts()
    record = {"source": source, "config": cfg.to_dict(), "params": counts, "total_params": counts["total"],
              "tokens_per_chunk": cfg.tokens, "token_grid": list(cfg.grid)}
    if spec.endswith(".safetensors") and Path(spec).is_file():
        info = read_info(Path(spec))
        record |= {"hash": info.hash, "step": info.metadata.get("step"), "decode": decode_defaults(info)}
    if as_json:
        out.print_json(json.dumps(record))
        return
    table = Table(title=f"{cfg.name} ({source})")
    table.add_column("module")
    table.add_column("parameters", justify="right")
    for k, v in counts.items():
        table.add_row(k, f"{v:,}")
    out.print(table)
    if "decode" in record:
        out.print(f"hash {record['hash']}, step {record['step']}, decode: "
                  + ", ".join(f"{k} {v:g}" for k, v in record["decode"].items()))
    out.print({k: v for k, v in cfg.to_dict().items()})


@app.command()
@run_safely
def train(preset: str = typer.Option("small", help="tiny, small or paper"),
          data: Path = typer.Option(..., help="folder of audio or a .txt file list"),
          run_dir: Path = typer.Option(..., "--run-dir", help="log.jsonl and checkpoint.pt go here"),
          steps: Optional[int] = typer.Option(None, help="total steps of the run (schedules)"),
          until: Optional[int] = typer.Option(None, help="stop at this step (default: --steps)"),
          minutes: Optional[float] = typer.Option(None, help="stop after this much wall time (saves first)"),
          resume: bool = typer.Option(False, help="continue from RUN_DIR/checkpoint.pt"),
          batch_size: Optional[int] = typer.Option(None, "--batch-size"),
          device: str = DeviceOpt, val_data: Optional[Path] = typer.Option(None, "--val-data"),
          config: Optional[Path] = typer.Option(None, help="JSON file of TrainConfig fields"),
          init: Optional[Path] = typer.Option(None, help="fine-tune: start from this weights file (.safetensors)"),
          cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="decoded-audio cache")) -> None:
    """Train or fine-tune a model (consistency training; see docs/training.md)."""
    from m2lcodec.train import TrainConfig, Trainer

    saved = run_dir / "config.json"
    fields = {}
    if resume and saved.exists():
        fields = json.loads(saved.read_text())
        # a run begun before the envelope term existed goes on without it: switched on in a collapsed run
        # it saturated the latents (docs/training.md, "Decoder collapse")
        fields.setdefault("envelope_weight", 0.0)
    if config is not None:
        fields.update(json.loads(config.read_text()))
    if not resume or "preset" not in fields:
        fields["preset"] = preset
    for key, value in (("steps", steps), ("batch_size", batch_size)):
        if value is not None:
            fields[key] = value
    if cache_dir is not None:
        fields["cache_dir"] = str(cache_dir)
    if init is not None:
        if resume:
            fail("--init starts a new run from a weights file; --resume continues one: choose one")
        fields["init_weights"] = str(init.resolve())  # a resume from another directory still finds it
    cfg = TrainConfig.from_dict(fields)
    if resume and not (run_dir / "checkpoint.pt").exists():
        fail(f"--resume: no checkpoint in {run_dir}")
    if not resume and (run_dir / "checkpoint.pt").exists():
        fail(f"{run_dir} already holds a run; pass --resume to continue it or choose another --run-dir")
    trainer = Trainer(cfg, data, run_dir, device=device, val_data=val_data)
    if resume:
        trainer.resume()
    if trainer.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(asdict(cfg), indent=1))
    target = min(until or cfg.steps, cfg.steps)
    if trainer.rank != 0:
        trainer.fit(target, max_seconds=None if minutes is None else 60 * minutes)
        return
    with progress_bar() as bar:
        task = bar.add_task(f"training {cfg.preset}", total=target, completed=trainer.step)

        def report(record: dict) -> None:
            bar.update(task, completed=record["step"],
                       description=f"training {cfg.preset} loss {record['loss']:.3g}")

        trainer.fit(target, progress=report, max_seconds=None if minutes is None else 60 * minutes)
    out.print(f"step {trainer.step}: checkpoint {trainer.ckpt_path}, log {run_dir / 'log.jsonl'}")


@app.command()
@run_safely
def export(checkpoint: Path = typer.Argument(..., help="training checkpoint.pt, or a weights .safetensors"),
           dst: Path = typer.Argument(..., help="output .safetensors"), force: bool = ForceOpt,
           raw: bool = typer.Option(False, help="export the raw weights instead of the EMA"),
           sigma_cond: Optional[float] = typer.Option(None, "--sigma-cond", help="default decode parameter"),
           deblock: Optional[float] = typer.Option(None, "--deblock", min=0.0, max=1.0,
                                                   help="default seam deblocking strength (0 = off)"),
           noise_scale: Optional[float] = typer.Option(None, "--noise-scale", min=0.0,
                                                       help="default scale of the starting noise (1 = the paper's)"),
           name: Optional[str] = typer.Option(None, help="model name (default: the preset)")) -> None:
    """Turn a training checkpoint into the small fp16 weights file the codec loads. From a weights file:
    a copy with the given decode parameters (or name) changed, the same tensors and hash."""
    from m2lcodec.train import export_weights
    from m2lcodec.weights import decode_metadata, retag_weights

    if not checkpoint.is_file():
        fail(f"checkpoint not found: {checkpoint}")
    if dst.exists() and not force:
        fail(f"{dst} exists; pass --force to overwrite")
    if checkpoint.suffix == ".safetensors":
        if raw:
            fail("--raw applies to a checkpoint; a weights file holds one set of weights")
        digest = retag_weights(checkpoint, dst, decode_metadata(sigma_cond, deblock, noise_scale), name=name)
    else:
        digest = export_weights(checkpoint, dst, use_ema=not raw, sigma_cond=sigma_cond, deblock=deblock,
                                noise_scale=noise_scale, name=name)
    out.print(f"wrote {dst} ({human_bytes(dst.stat().st_size)}), hash {digest}")


@app.command()
@run_safely
def bench(clips: Path = typer.Argument(..., help="folder of audio clips (searched recursively)"),
          report_dir: Path = typer.Option(..., "--out", help="report folder: results.json, report.md, PNG"),
          model: Optional[Path] = ModelOpt,
          quant: str = typer.Option("int8,fp16", help="comma-separated codec quantisations (int8, fp16); "
                                    "'' for none"),
          baselines: str = typer.Option("opus-6k,opus-12k,opus-24k,mp3-32k",
                                        help="comma-separated ffmpeg baselines; '' for none"),
          limit: Optional[int] = typer.Option(None, help="only the first N clips (sorted)"),
          mono: bool = typer.Option(False, "--mono", help="mix clips to mono before coding"),
          device: str = DeviceOpt,
          no_visqol: bool = typer.Option(False, "--no-visqol", help="skip ViSQOL (the slowest metric)"),
          seed: int = typer.Option(0, help="decoding seed stored in the .m2l data"),
          save_audio: bool = typer.Option(False, "--save-audio", help="also write decoded WAVs to OUT/audio/"),
          force: bool = typer.Option(False, "--force", help="overwrite an existing report")) -> None:
    """Benchmark the codec against ffmpeg baselines: quality, bitrate, speed, memory (docs/bench.md)."""
    import scipy  # noqa: F401 - the bench extra (FAD), checked before any work is done
    from rich.markup import escape as escape_markup

    from m2lcodec.bench import DEFAULT_BASELINE_NAMES, TABLE_COLUMNS, run_bench, summary_rows

    quants = [q.strip() for q in quant.split(",") if q.strip()]
    names = [b.strip() for b in baselines.split(",") if b.strip()]
    for q in quants:
        if q not in ("int8", "fp16"):
            fail(f"--quant takes int8 and/or fp16, got {q!r}")
    for b in names:
        if b not in DEFAULT_BASELINE_NAMES:
            fail(f"unknown baseline {b!r}; choose from {', '.join(DEFAULT_BASELINE_NAMES)}")
    if not quants and not names:
        fail("nothing to benchmark: --quant and --baselines are both empty")
    if limit is not None and limit < 1:
        fail("--limit must be at least 1")
    if not clips.is_dir():
        fail(f"clip folder not found: {clips}")
    if not force:
        for name in ("results.json", "report.md", "quality_vs_bitrate.png"):
            if (report_dir / name).exists():
                fail(f"{report_dir / name} exists; pass --force to overwrite the report")
    codec = get_codec(model, device)  # loaded even for baselines only: the report records the model
    import shlex

    command = ["m2lcodec", "bench", str(clips), "--out", str(report_dir)]  # canonical, for the report
    command += ["--model", str(model)] if model is not None else []
    command += ["--quant", ",".join(quants), "--baselines", ",".join(names), "--seed", str(seed)]
    command += (["--limit", str(limit)] if limit is not None else []) + (["--mono"] if mono else [])
    command += (["--no-visqol"] if no_visqol else []) + (["--device", device] if device != "auto" else [])
    with progress_bar() as bar:
        task = bar.add_task("benchmarking", total=None)

        def report(done: int, total: int, description: str) -> None:
            bar.update(task, completed=done, total=total, description=description)

        results = run_bench(clips, report_dir, codec, quants=quants, baselines=names, limit=limit, mono=mono,
                            use_visqol=not no_visqol, seed=seed, save_audio=save_audio, model_path=model,
                            command=shlex.join(command), force=force, progress=report)
    meta = results["meta"]
    table = Table(title=f"bench: {meta['num_clips']} clips, model {meta['model']['name']} "
                        f"{meta['model']['hash']}, {meta['machine']['device']} (means over clips)")
    table.add_column("codec")
    for _, header, _ in TABLE_COLUMNS:
        table.add_column(header, justify="right")
    for row in summary_rows(results):
        table.add_row(*row)
    out.print(table)
    for note in meta["notes"]:
        console.print(f"[yellow]note:[/yellow] {escape_markup(note)}", highlight=False)
    out.print(f"wrote {report_dir / 'results.json'}, {report_dir / 'report.md'}"
              + (f", {report_dir / 'quality_vs_bitrate.png'}" if (report_dir / "quality_vs_bitrate.png").exists()
                 else ""))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
