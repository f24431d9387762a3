"""The `m2lcodec` command line: the commands, directory mode with shards, --force, and every kind of bad
input a user can give (each must end in exit status != 0, one `error:` line, no traceback, no partial or
temporary output, and the input untouched)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from conftest import file_digest, tree_listing
from m2lcodec.cli import app
from m2lcodec import spectral
from m2lcodec.container import Reader, write_file
from m2lcodec.model import Music2Latent2, get_config

M2L_SCRIPT = Path(sys.executable).with_name("m2lcodec")


def make_runner() -> CliRunner:
    """stderr kept apart from stdout: click < 8.2 (older typer) needs mix_stderr=False, newer ones
    (and typer's own vendored click) always keep both and have no such argument."""
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


runner = make_runner()


class Run:
    """A finished CLI invocation: exit code, stdout, stderr, everything together."""

    def __init__(self, result) -> None:
        self.code = result.exit_code
        self.exception = result.exception
        self.stdout = result.stdout
        try:
            self.stderr = result.stderr
        except ValueError:  # old click with mixed streams
            self.stderr = ""
        self.all = self.stdout + self.stderr


def cli(*args) -> Run:
    return Run(runner.invoke(app, [str(a) for a in args], catch_exceptions=True))


def model_args(weights: Path) -> list[str]:
    return ["--model", str(weights), "--device", "cpu"]


def assert_one_line_error(run: Run, match: str | None = None) -> None:
    assert run.code != 0, run.all
    assert run.exception is None or isinstance(run.exception, SystemExit), run.exception
    assert "Traceback" not in run.all
    lines = [line for line in run.all.splitlines() if line.strip()]
    assert len(lines) == 1, run.all
    assert lines[0].startswith("error:"), run.all
    if match is not None:
        assert match.lower() in lines[0].lower(), run.all


@pytest.fixture
def work(tmp_path, stereo_wav, mono48_wav) -> Path:
    """A scratch folder with copies of the test clips (so their hashes can be checked afterwards)."""
    shutil.copy(stereo_wav, tmp_path / "stereo44.wav")
    shutil.copy(mono48_wav, tmp_path / "mono48.wav")
    (tmp_path / "out").mkdir()
    return tmp_path


@pytest.fixture(scope="module")
def good_m2l(tmp_path_factory, tiny_weights, stereo_wav) -> Path:
    d = tmp_path_factory.mktemp("m2l")
    r = cli("compress", stereo_wav, d / "good.m2l", *model_args(tiny_weights))
    assert r.code == 0, r.all
    return d / "good.m2l"


# -- the commands -----------------------------------------------------------------------------------

def test_compress_decompress_info(work, tiny_weights):
    src, m2l, wav = work / "stereo44.wav", work / "out" / "s.m2l", work / "out" / "s.wav"
    before = file_digest(src)
    r = cli("compress", src, m2l, *model_args(tiny_weights), "--quant", "fp16", "--seed", "3")
    assert r.code == 0, r.all
    assert "kbps" in r.stdout and "Traceback" not in r.all
    with Reader.open(m2l) as reader:
        assert (reader.header.quant, reader.header.seed) == ("fp16", 3)
    r = cli("decompress", m2l, wav, *model_args(tiny_weights))
    assert r.code == 0, r.all
    i, o = sf.info(str(src)), sf.info(str(wav))
    assert (o.frames, o.samplerate, o.channels, o.subtype) == (i.frames, i.samplerate, i.channels, "PCM_16")
    r = cli("info", m2l, "--json")
    assert r.code == 0, r.all
    rec = json.loads(r.stdout)
    assert rec["sample_rate"] == 44100 and rec["channels"] == 2 and rec["num_samples"] == i.frames
    assert rec["duration_s"] == pytest.approx(i.frames / 44100)
    assert rec["file_bytes"] == m2l.stat().st_size and rec["quant"] == "fp16"
    assert rec["kbps"] == pytest.approx(m2l.stat().st_size * 8 / rec["duration_s"] / 1000)
    r = cli("info", m2l)
    assert r.code == 0 and "sample_rate" in r.stdout
    assert file_digest(src) == before
    assert tree_listing(work / "out") == ["s.m2l", "s.wav"]


@pytest.mark.parametrize("option, neutral, other, bad", [("--deblock", "0", "1", "1.5"),
                                                     ("--noise-scale", "1", "0.5", "-1")])
def test_decompress_decode_options(work, tiny_weights, good_m2l, option, neutral, other, bad):
    """--deblock (seam deblocking strength, 0-1) and --noise-scale (starting noise, >= 0) override the
    model's decode parameters: the neutral value is the tiny model's own default (deblocking off, the
    paper's full noise), another value changes the decode, a value out of range is a one-line error with
    nothing written."""
    out = work / "out"
    for name, args in (("default", []), ("neutral", [option, neutral]), ("other", [option, other])):
        r = cli("decompress", good_m2l, out / f"{name}.wav", *model_args(tiny_weights), "--format", "float",
                "--force", *args)
        assert r.code == 0, r.all
    default, neutral_out, other_out = (sf.read(str(out / f"{n}.wav"))[0] for n in ("default", "neutral", "other"))
    np.testing.assert_array_equal(default, neutral_out)
    assert np.abs(other_out - neutral_out).max() > 0
    r = cli("decompress", good_m2l, out / "bad.wav", *model_args(tiny_weights), option, bad)
    assert r.code != 0 and "Traceback" not in r.all and not (out / "bad.wav").exists()


def test_export_from_weights_file_sets_decode_parameters(work, tiny_weights):
    """export from a .safetensors: a copy with new decode parameters and the same hash; --raw makes no sense
    there, the input is never overwritten, an existing output needs --force."""
    dst = work / "out" / "w.safetensors"
    r = cli("export", tiny_weights, dst, "--noise-scale", "0.5", "--deblock", "0.4")
    assert r.code == 0, r.all
    rec = json.loads(cli("model-info", dst, "--json").stdout)
    assert rec["decode"] == {"sigma_cond": 0.4, "deblock": 0.4, "noise_scale": 0.5}
    assert rec["hash"] == json.loads(cli("model-info", tiny_weights, "--json").stdout)["hash"]
    assert_one_line_error(cli("export", tiny_weights, dst, "--noise-scale", "0.7"), "exists")
    assert_one_line_error(cli("export", tiny_weights, work / "out" / "x.safetensors", "--raw"), "--raw")
    before = file_digest(dst)
    assert_one_line_error(cli("export", dst, dst, "--force", "--noise-scale", "0.7"), "input")
    assert file_digest(dst) == before


def test_decompress_formats_and_range(work, tiny_weights):
    m2l = work / "out" / "m.m2l"
    assert cli("compress", work / "mono48.wav", m2l, *model_args(tiny_weights)).code == 0
    r = cli("decompress", m2l, work / "out" / "m.flac", *model_args(tiny_weights), "--format", "flac24")
    assert r.code == 0, r.all
    o = sf.info(str(work / "out" / "m.flac"))
    assert (o.format, o.subtype, o.samplerate, o.channels, o.frames) == ("FLAC", "PCM_24", 48000, 1, 96000)
    r = cli("decompress", m2l, work / "out" / "p.wav", *model_args(tiny_weights), "--format", "float",
            "--start", "0.5", "--duration", "0.75")
    assert r.code == 0, r.all
    o = sf.info(str(work / "out" / "p.wav"))
    assert (o.subtype, o.frames, o.samplerate) == ("FLOAT", 36000, 48000)


def test_embed(work, tiny_weights):
    dst = work / "out" / "e.npy"
    r = cli("embed", work / "stereo44.wav", dst, *model_args(tiny_weights))
    assert r.code == 0, r.all
    cfg = get_config("tiny")
    assert np.load(dst).shape == (2, cfg.num_latents * cfg.width)
    assert_one_line_error(cli("embed", work / "stereo44.wav", dst, *model_args(tiny_weights)), "exists")
    assert cli("embed", work / "stereo44.wav", dst, *model_args(tiny_weights), "--force").code == 0


def test_model_info_tiny():
    r = cli("model-info", "tiny", "--json")
    assert r.code == 0, r.all
    rec = json.loads(r.stdout)
    assert rec["total_params"] == sum(p.numel() for p in Music2Latent2(get_config("tiny")).parameters())
    assert rec["config"]["name"] == "tiny" and rec["tokens_per_chunk"] == get_config("tiny").tokens
    assert set(rec["params"]) == {"encoder", "decoder", "cm", "total"}


def test_model_info_weights_file(tiny_weights):
    r = cli("model-info", tiny_weights, "--json")
    assert r.code == 0, r.all
    rec = json.loads(r.stdout)
    assert rec["config"]["name"] == "tiny"
    # a file that names no decode parameters gets the codec's defaults: the paper's sigma_cond, no deblocking
    assert rec["decode"] == {"sigma_cond": 0.4, "deblock": 0.0, "noise_scale": 1.0} and len(rec["hash"]) == 16
    r = cli("model-info", "tiny")
    assert r.code == 0 and "total" in r.stdout


def test_model_info_paper():
    r = cli("model-info", "paper", "--json")
    assert r.code == 0, r.all
    assert 90e6 <= json.loads(r.stdout)["total_params"] <= 110e6


def test_model_info_unknown_preset():
    assert_one_line_error(cli("model-info", "gigantic"), "unknown preset")


# -- directory mode, shards, --force ------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path, stereo_audio, mono48_audio) -> Path:
    """in/a.wav, in/sub/b.wav, in/sub/deeper/c.flac (short clips) and a text file to be ignored."""
    (x, sr), (y, sr48) = stereo_audio, mono48_audio
    src = tmp_path / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    sf.write(src / "a.wav", x[:, :30000].T, sr)
    sf.write(src / "sub" / "b.wav", y[:, :20000].T, sr48)
    sf.write(src / "sub" / "deeper" / "c.flac", x[:, :10000].T, sr)
    (src / "sub" / "notes.txt").write_text("not audio\n")
    return src


EXPECTED_M2L = ["a.m2l", "sub", "sub/b.m2l", "sub/deeper", "sub/deeper/c.m2l"]


def test_directory_mode_mirrors_tree(tree, tiny_weights):
    dst = tree.parent / "coded"
    r = cli("compress", tree, dst, *model_args(tiny_weights))
    assert r.code == 0, r.all
    assert tree_listing(dst) == EXPECTED_M2L
    back = tree.parent / "decoded"
    r = cli("decompress", dst, back, *model_args(tiny_weights), "--format", "flac")
    assert r.code == 0, r.all
    assert tree_listing(back) == ["a.flac", "sub", "sub/b.flac", "sub/deeper", "sub/deeper/c.flac"]
    for name, frames, rate in (("a", 30000, 44100), ("sub/b", 20000, 48000), ("sub/deeper/c", 10000, 44100)):
        info = sf.info(str(back / f"{name}.flac"))
        assert (info.frames, info.samplerate) == (frames, rate)


def test_directory_shards_cover_every_file_once(tree, tiny_weights):
    dst = tree.parent / "coded"
    seen = []
    for shard in ("0/2", "1/2"):
        before = set(p for p in tree_listing(dst) if p.endswith(".m2l")) if dst.exists() else set()
        r = cli("compress", tree, dst, *model_args(tiny_weights), "--shard", shard)
        assert r.code == 0, r.all
        new = set(p for p in tree_listing(dst) if p.endswith(".m2l")) - before
        assert new, f"shard {shard} did nothing"
        seen.append(new)
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {p for p in EXPECTED_M2L if p.endswith(".m2l")}
    assert tree_listing(dst) == EXPECTED_M2L  # no leftovers


def test_directory_force(tree, tiny_weights):
    dst = tree.parent / "coded"
    assert cli("compress", tree, dst, *model_args(tiny_weights), "--seed", "1").code == 0
    digests = {p: file_digest(dst / p) for p in EXPECTED_M2L if p.endswith(".m2l")}
    assert_one_line_error(cli("compress", tree, dst, *model_args(tiny_weights), "--seed", "2"), "--force")
    assert {p: file_digest(dst / p) for p in digests} == digests  # nothing overwritten
    assert tree_listing(dst) == EXPECTED_M2L
    r = cli("compress", tree, dst, *model_args(tiny_weights), "--seed", "2", "--force")
    assert r.code == 0, r.all
    assert tree_listing(dst) == EXPECTED_M2L
    with Reader.open(dst / "a.m2l") as reader:
        assert reader.header.seed == 2


def test_file_force(work, tiny_weights):
    src, m2l = work / "stereo44.wav", work / "out" / "s.m2l"
    assert cli("compress", src, m2l, *model_args(tiny_weights)).code == 0
    digest = file_digest(m2l)
    assert_one_line_error(cli("compress", src, m2l, *model_args(tiny_weights), "--quant", "fp16"), "--force")
    assert file_digest(m2l) == digest
    assert cli("compress", src, m2l, *model_args(tiny_weights), "--quant", "fp16", "--force").code == 0
    assert file_digest(m2l) != digest
    assert tree_listing(work / "out") == ["s.m2l"]


# -- bad input: one error line, nothing left behind, input untouched ----------------------------------------

def _wav(path: Path, data: np.ndarray, sr: int = 44100, subtype: str = "FLOAT") -> Path:
    sf.write(path, data, sr, subtype=subtype)
    return path


def _flip_payload_byte(data: bytes) -> bytes:
    with Reader.from_bytes(data) as r:
        payload_at = r.frame_offsets[0] + 8
    b = bytearray(data)
    b[payload_at + 40] ^= 0x5A
    return bytes(b)


def make_bad_input(kind: str, work: Path, good_m2l: Path, other_weights: Path) -> tuple[str, Path]:
    """(command, input path) for each kind of bad input."""
    if kind == "missing":
        return "compress", work / "nope.wav"
    if kind == "text":
        p = work / "text.wav"
        p.write_text("this is not audio, just text\n" * 20)
        return "compress", p
    if kind == "zero_samples":
        return "compress", _wav(work / "empty.wav", np.zeros((0, 2), np.float32), subtype="PCM_16")
    if kind == "nan":
        x = np.zeros((4000, 1), np.float32)
        x[1234] = np.nan
        return "compress", _wav(work / "nan.wav", x)
    if kind == "inf":
        x = np.full((4000, 2), 0.1, np.float32)
        x[10, 1] = -np.inf
        return "compress", _wav(work / "inf.wav", x)
    if kind == "directory_of_nothing":
        d = work / "nothing"
        d.mkdir()
        (d / "readme.txt").write_text("x")
        return "compress", d
    data = good_m2l.read_bytes()
    if kind == "truncated_m2l":
        p = work / "trunc.m2l"
        p.write_bytes(data[: len(data) - 100])
        return "decompress", p
    if kind == "truncated_header":
        p = work / "trunc_header.m2l"
        p.write_bytes(data[:30])
        return "decompress", p
    if kind == "corrupted_m2l":
        p = work / "corrupt.m2l"
        p.write_bytes(_flip_payload_byte(data))
        return "decompress", p
    if kind == "empty_m2l":
        p = work / "empty.m2l"
        p.write_bytes(b"")
        return "decompress", p
    if kind == "wav_to_decompress":
        return "decompress", work / "stereo44.wav"
    if kind == "other_model":
        p = work / "other.m2l"
        r = cli("compress", work / "mono48.wav", p, *model_args(other_weights))
        assert r.code == 0, r.all
        return "decompress", p
    raise AssertionError(kind)


BAD_KINDS = {
    "missing": "not found", "text": "not a readable audio file", "zero_samples": "no audio samples",
    "nan": "nan", "inf": "infinite", "directory_of_nothing": "no input files",
    "truncated_m2l": "truncated", "truncated_header": "truncated", "corrupted_m2l": "corrupt",
    "empty_m2l": "empty", "wav_to_decompress": "not an .m2l file", "other_model": "--model",
}


@pytest.mark.parametrize("kind", list(BAD_KINDS))
def test_bad_input(kind, work, good_m2l, tiny_weights, other_weights):
    command, src = make_bad_input(kind, work, good_m2l, other_weights)
    out_dir = work / "out"
    dst = out_dir / ("x.m2l" if command == "compress" else "x.wav")
    before_out = tree_listing(out_dir)
    before_src = file_digest(src) if src.is_file() else None
    assert_one_line_error(cli(command, src, dst, *model_args(tiny_weights)), BAD_KINDS[kind])
    assert tree_listing(out_dir) == before_out  # no partial output, no temporary file
    if before_src is not None:
        assert file_digest(src) == before_src


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_existing_output_not_overwritten(command, work, good_m2l, tiny_weights):
    src = work / "stereo44.wav" if command == "compress" else good_m2l
    dst = work / "out" / ("x.m2l" if command == "compress" else "x.wav")
    dst.write_bytes(b"precious")
    before_src = file_digest(src)
    assert_one_line_error(cli(command, src, dst, *model_args(tiny_weights)), "already exists")
    assert dst.read_bytes() == b"precious"
    assert tree_listing(work / "out") == ["x.m2l" if command == "compress" else "x.wav"]
    assert file_digest(src) == before_src


@pytest.mark.parametrize("command", ["compress", "decompress", "embed"])
@pytest.mark.parametrize("where", ["missing_dir", "proc"])
def test_unwritable_output(command, where, work, good_m2l, tiny_weights):
    src = good_m2l if command == "decompress" else work / "stereo44.wav"
    name = {"compress": "x.m2l", "decompress": "x.wav", "embed": "x.npy"}[command]
    # /proc exists and passes os.access as root, but no file can be created there
    dst = work / "no" / "such" / "dir" / name if where == "missing_dir" else Path("/proc") / name
    before = tree_listing(work)
    before_src = file_digest(src)
    assert_one_line_error(cli(command, src, dst, *model_args(tiny_weights)), "cannot write")
    assert tree_listing(work) == before
    assert file_digest(src) == before_src


def test_input_protected_even_with_force(work, tiny_weights):
    src = work / "stereo44.wav"
    before = file_digest(src)
    r = cli("decompress", src, src, *model_args(tiny_weights), "--force")
    assert_one_line_error(r)
    assert file_digest(src) == before


@pytest.mark.parametrize("args,match", [
    (["compress", "{wav}", "{out}/x.m2l", "--quant", "bogus"], "--quant"),
    (["compress", "{wav}", "{out}/x.m2l", "--shard", "3/2"], "--shard"),
    (["compress", "{wav}", "{out}/x.m2l", "--shard", "two"], "--shard"),
    (["compress", "{wav}", "{out}/x.m2l", "--shard", "0/0"], "--shard"),
    (["compress", "{wav}", "{out}/x.m2l", "--device", "tpu"], "--device"),
    (["decompress", "{m2l}", "{out}/x.wav", "--format", "mp3"], "--format"),
    (["decompress", "{m2l}", "{out}/x.wav", "--duration", "-1"], "--duration"),
    (["decompress", "{m2l}", "{out}/x.wav", "--start", "1000"], "--start"),
    (["compress", "{wav}", "{out}/x.m2l", "--model", "{out}/../stereo44.wav"], "model weights"),
    (["compress", "{wav}", "{out}/x.m2l", "--model", "{out}/missing.safetensors"], "not found"),
])
def test_bad_option_values(args, match, work, good_m2l, tiny_weights):
    fill = {"wav": str(work / "stereo44.wav"), "out": str(work / "out"), "m2l": str(good_m2l)}
    argv = [a.format(**fill) for a in args]
    if "--model" not in argv:
        argv += ["--model", str(tiny_weights)]
    if "--device" not in argv:
        argv += ["--device", "cpu"]
    before = file_digest(work / "stereo44.wav"), file_digest(good_m2l)
    assert_one_line_error(cli(*argv), match)
    assert tree_listing(work / "out") == []
    assert (file_digest(work / "stereo44.wav"), file_digest(good_m2l)) == before


def test_brackets_in_paths_are_not_markup(work, tiny_weights):
    """File names reach rich: a name like 'a[/x].wav' must neither crash nor be mangled."""
    src = work / "a[/x]b.wav"
    assert_one_line_error(cli("compress", src, work / "out" / "x.m2l", *model_args(tiny_weights)), "a[/x]b.wav")
    src = work / "a[bold]b.wav"
    shutil.copy(work / "stereo44.wav", src)
    r = cli("compress", src, work / "out" / "c[red].m2l", *model_args(tiny_weights))
    assert r.code == 0, r.all
    assert (work / "out" / "c[red].m2l").is_file()
    r = cli("info", work / "out" / "c[red].m2l")
    assert r.code == 0, r.all


# -- the real console script (separate stdout/stderr, real exit codes) ----------------------------------------

def _script(*args) -> subprocess.CompletedProcess:
    cmd = [str(M2L_SCRIPT)] if M2L_SCRIPT.exists() else [sys.executable, "-m", "m2lcodec.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("M2L_DEBUG", None)
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, env=env, timeout=120)


def test_script_error_goes_to_stderr(work, tiny_weights):
    p = _script("decompress", work / "stereo44.wav", work / "out" / "x.wav", *model_args(tiny_weights))
    assert p.returncode == 1
    assert p.stdout == ""
    assert "Traceback" not in p.stderr
    assert p.stderr.strip().startswith("error:") and len(p.stderr.strip().splitlines()) == 1
    assert tree_listing(work / "out") == []


def test_script_info_json(good_m2l):
    p = _script("info", good_m2l, "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["channels"] == 2


def test_train_and_resume_keeps_an_old_runs_recipe(work):
    """`train` then `train --resume` continue the same run; a run whose saved config predates the envelope
    term (no `envelope_weight`) resumes without it rather than with the new default."""
    data = work / "data"
    data.mkdir()
    shutil.copy(work / "stereo44.wav", data / "a.wav")
    run, cfg = work / "run", work / "cfg.json"
    cfg.write_text(json.dumps({"num_workers": 0, "log_every": 1, "val_every": 0, "warmup_steps": 1}))
    r = cli("train", "--preset", "tiny", "--data", data, "--run-dir", run, "--steps", "4", "--until", "2",
            "--batch-size", "2", "--config", cfg, "--device", "cpu")
    assert r.code == 0, r.all
    saved = json.loads((run / "config.json").read_text())
    assert saved["envelope_weight"] == 1.0  # the default for new runs
    del saved["envelope_weight"]  # as written before session 3
    (run / "config.json").write_text(json.dumps(saved))
    r = cli("train", "--data", data, "--run-dir", run, "--resume", "--device", "cpu")
    assert r.code == 0, r.all
    assert json.loads((run / "config.json").read_text())["envelope_weight"] == 0.0
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


# -- verify, --version, optional extras (issue 11) ----------------------------------------------------

def test_verify_clean_damaged_and_json(work, good_m2l):
    bad = work / "bad.m2l"
    bad.write_bytes(_flip_payload_byte(good_m2l.read_bytes()))
    r = cli("verify", good_m2l)
    assert r.code == 0 and r.stdout.startswith("ok") and "frames" in r.stdout, r.all
    r = cli("verify", good_m2l, bad)
    assert r.code == 1 and len(r.stdout.strip().splitlines()) == 2, r.all
    assert "DAMAGED" in r.stdout and "corrupt frame 0" in r.stdout and "bad.m2l" in r.stdout
    shutil.copy(good_m2l, work / "out" / "good.m2l")
    r = cli("verify", work / "out", "--json")
    assert r.code == 0
    records = json.loads(r.stdout)
    assert [x["ok"] for x in records] == [True] and records[0]["path"].endswith("good.m2l")
    r = cli("verify", work / "missing.m2l")
    assert r.code == 1 and "DAMAGED" in r.stdout


def test_verify_needs_no_torch(good_m2l):
    """verify runs without importing torch (fast, and works where only the container's needs are met)."""
    code = ("import sys; from m2lcodec.cli import app\n"
            "try:\n    app(['verify', sys.argv[1]])\nexcept SystemExit as e:\n    code = e.code\n"
            "print('torch' in sys.modules, code)")
    res = subprocess.run([sys.executable, "-c", code, str(good_m2l)], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip().splitlines()[-1] == "False 0", res.stdout + res.stderr


def test_version():
    from m2lcodec.version import __version__

    r = cli("--version")
    assert r.code == 0 and r.stdout.strip() == f"m2lcodec {__version__}"


def test_missing_optional_extra_names_it(tmp_path):
    """Without the bench extra (scipy hidden), `bench` ends in one line that says what to install."""
    code = ("import sys; sys.modules['scipy'] = None\nfrom m2lcodec.cli import app\n"
            "app(['bench', sys.argv[1], '--out', sys.argv[2]])")
    (tmp_path / "clips").mkdir()
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "clips"), str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'm2lcodec[bench]'" in lines[0] and "scipy" in lines[0], res.stderr


# -- pipes (real subprocess pipes between real processes) ------------------------------------------------------

def _cmd(*args) -> list[str]:
    cmd = [str(M2L_SCRIPT)] if M2L_SCRIPT.exists() else [sys.executable, "-m", "m2lcodec.cli"]
    return cmd + [str(a) for a in args]


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("M2L_DEBUG", None)
    return env


def test_pipe_round_trip_equals_files(work, tiny_weights):
    """cat a.wav | m2lcodec compress - - | m2lcodec decompress - z.wav: the same .m2l bytes and samples as
    the file commands; data on stdout only, the summaries on stderr."""
    src = work / "stereo44.wav"
    m = model_args(tiny_weights)
    assert _script("compress", src, work / "f.m2l", *m).returncode == 0
    assert _script("decompress", work / "f.m2l", work / "f.wav", *m).returncode == 0
    with open(src, "rb") as stdin:
        enc = subprocess.Popen(_cmd("compress", "-", "-", *m), stdin=stdin, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=_env())
        dec = subprocess.Popen(_cmd("decompress", "-", work / "z.wav", *m), stdin=enc.stdout,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
        enc.stdout.close()
        dec_out, dec_err = dec.communicate(timeout=120)
        enc_err = enc.stderr.read()
        enc.wait(timeout=60)
    assert enc.returncode == 0 and dec.returncode == 0, (enc_err, dec_err)
    assert b"compress" in enc_err and b"kbps" in enc_err and dec_out == b""
    a, sr_a = sf.read(work / "f.wav", dtype="int16")
    z, sr_z = sf.read(work / "z.wav", dtype="int16")
    assert sr_a == sr_z == 44100 and z.shape == a.shape == (sf.info(src).frames, 2)
    np.testing.assert_array_equal(z, a)
    # stdin -> file gives the very bytes of the file command
    with open(src, "rb") as stdin:
        p = subprocess.run(_cmd("compress", "-", work / "p.m2l", *m), stdin=stdin, capture_output=True, env=_env(),
                           timeout=120)
    assert p.returncode == 0 and p.stdout == b"" and b"kbps" in p.stderr
    assert (work / "p.m2l").read_bytes() == (work / "f.m2l").read_bytes()


def test_decompress_to_stdout_streams_a_wav(work, tiny_weights):
    m = model_args(tiny_weights)
    assert _script("compress", work / "mono48.wav", work / "m.m2l", *m).returncode == 0
    assert _script("decompress", work / "m.m2l", work / "m.wav", "--format", "wav24", *m).returncode == 0
    p = subprocess.run(_cmd("decompress", work / "m.m2l", "-", "--format", "wav24", *m), capture_output=True,
                       env=_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    import io

    a, sr_a = sf.read(work / "m.wav", dtype="int32")
    b, sr_b = sf.read(io.BytesIO(p.stdout), dtype="int32")
    assert sr_a == sr_b == 48000
    np.testing.assert_array_equal(a, b)
    # flac cannot stream to stdout: one line, nothing on stdout
    p = subprocess.run(_cmd("decompress", work / "m.m2l", "-", "--format", "flac", *m), capture_output=True,
                       env=_env(), timeout=120)
    assert p.returncode == 1 and p.stdout == b"" and p.stderr.decode().count("\n") == 1
    assert "WAV only" in p.stderr.decode()


def test_closed_pipe_ends_quietly(work, tiny_weights):
    """`m2lcodec decompress x.m2l - | head -c 1000`: no traceback, no message, exit 141 (as SIGPIPE)."""
    m = model_args(tiny_weights)
    assert _script("compress", work / "stereo44.wav", work / "f.m2l", *m).returncode == 0
    dec = subprocess.Popen(_cmd("decompress", work / "f.m2l", "-", *m), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=_env())
    head = dec.stdout.read(1000)
    dec.stdout.close()  # the reader goes away early
    err = dec.stderr.read()
    dec.wait(timeout=120)
    assert head[:4] == b"RIFF" and len(head) == 1000
    assert dec.returncode == 141 and b"Traceback" not in err and b"error" not in err, err


def test_pipe_input_errors(work, tiny_weights):
    m = model_args(tiny_weights)
    p = subprocess.run(_cmd("compress", "-", work / "x.m2l", *m), input=b"not audio at all" * 50,
                       capture_output=True, env=_env(), timeout=120)
    assert p.returncode == 1 and p.stderr.decode().startswith("error: standard input: not a readable audio")
    assert p.stderr.decode().count("\n") == 1 and not (work / "x.m2l").exists()
    p = subprocess.run(_cmd("decompress", "-", work / "x.wav", *m), input=b"M2L\x00garbage",
                       capture_output=True, env=_env(), timeout=120)
    assert p.returncode == 1 and p.stderr.decode().startswith("error: standard input:")
    assert not (work / "x.wav").exists()
    p = subprocess.run(_cmd("compress", work, "-", *m), capture_output=True, env=_env(), timeout=120)
    assert p.returncode == 1 and b"cannot be piped" in p.stderr and p.stdout == b""


# -- damaged files: decompress --salvage (issue 11) ------------------------------------------------------------

CHUNK, PAD = spectral.CHUNK_SAMPLES, spectral.PAD_LEFT


@pytest.fixture(scope="module")
def framed_m2l(tmp_path_factory, tiny_weights, stereo_wav) -> Path:
    """The stereo clip (2.5 s, 4 chunks) as .m2l with one chunk per frame: 4 frames to damage one by one."""
    from m2lcodec.codec import load_codec

    codec = load_codec(tiny_weights, device="cpu")
    x, sr = sf.read(stereo_wav, dtype="float32", always_2d=True)
    z = codec.encode(x.T, sr)
    header = dataclasses.replace(codec.make_header(z, x.shape[0], sr, "int8", 0, None), frame_chunks=1)
    path = tmp_path_factory.mktemp("framed") / "framed.m2l"
    write_file(path, header, z)
    return path


def _damaged(data: bytes, kind: str) -> bytes:
    """Frame 1 overwritten with random bytes after its 8-byte prefix ("payload") or length field included
    ("prefix"), or the file cut in the middle of frame 2 ("truncated")."""
    with Reader.from_bytes(data) as r:
        off = r.frame_offsets
    if kind == "truncated":
        return data[: off[2] + 100]
    b = bytearray(data)
    at = off[1] + (8 if kind == "payload" else 0)
    b[at : off[2]] = np.random.default_rng(7).bytes(off[2] - at)
    return bytes(b)


def _int16(path: Path) -> np.ndarray:
    y, sr = sf.read(path, dtype="int16", always_2d=True)
    assert sr == 44100
    return y


@pytest.mark.parametrize("kind", ["payload", "prefix", "truncated"])
def test_salvage_damaged_file(kind, work, framed_m2l, tiny_weights):
    """Plain decompress refuses a damaged file (one line, no output); --salvage writes the original length,
    names the damaged range on stderr and exits 3; before the damage the samples are the clean decode's,
    after it those of a ranged decode warming up on the first intact chunk; verify flags the file."""
    m = model_args(tiny_weights)
    out = work / "out"
    assert cli("decompress", framed_m2l, out / "clean.wav", *m).code == 0
    clean = _int16(out / "clean.wav")
    bad = work / "bad.m2l"
    bad.write_bytes(_damaged(framed_m2l.read_bytes(), kind))
    before = tree_listing(out)
    assert_one_line_error(cli("decompress", bad, out / "x.wav", *m), "truncated" if kind == "truncated" else "frame 1")
    assert tree_listing(out) == before
    r = cli("decompress", bad, out / "s.wav", *m, "--salvage")
    assert r.code == 3 and "Traceback" not in r.all, r.all
    salvaged = _int16(out / "s.wav")
    assert salvaged.shape == clean.shape == (sf.info(work / "stereo44.wav").frames, 2)
    lines = [line for line in r.stderr.splitlines() if line.startswith("damaged:")]
    gap = (1 if kind != "truncated" else 2) * CHUNK - PAD  # where the first lost chunk's frames begin
    np.testing.assert_array_equal(salvaged[:gap], clean[:gap])
    if kind == "truncated":  # frames 2 and 3 lost: silence to the end
        assert len(lines) == 1 and lines[0].startswith("damaged: 1.45-2.50 s (frames 2-3; "), r.stderr
        assert "truncated" in lines[0]
        assert not salvaged[gap:].any()
    else:
        assert len(lines) == 1 and lines[0].startswith("damaged: 0.71-1.49 s (frame 1; "), r.stderr
        assert not salvaged[gap : 2 * CHUNK].any()
        start = 3 * CHUNK - PAD  # a ranged decode from here warms up on chunk 2, the first intact one
        r = cli("decompress", framed_m2l, out / "ranged.wav", *m, "--start", repr(start / 44100))
        assert r.code == 0, r.all
        np.testing.assert_array_equal(salvaged[start:], _int16(out / "ranged.wav"))
    r = cli("verify", framed_m2l, bad)
    assert r.code == 1, r.all
    ok, damaged = r.stdout.strip().splitlines()
    assert ok.startswith("ok") and damaged.startswith("DAMAGED") and "bad.m2l" in damaged
    assert f"decompress --salvage keeps {2 if kind == 'truncated' else 3} of 4 frames" in damaged
    r = cli("decompress", framed_m2l, out / "intact.wav", *m, "--salvage")  # nothing to salvage: exit 0
    assert r.code == 0 and "damaged" not in r.all, r.all
    np.testing.assert_array_equal(_int16(out / "intact.wav"), clean)


def test_salvage_through_pipes_exits_3(work, framed_m2l, tiny_weights):
    """The real script: `cat bad.m2l | m2lcodec decompress --salvage - -` streams a WAV of the original
    length, puts the damaged range (one line) and the summary on stderr, and exits 3."""
    m = model_args(tiny_weights)
    data = _damaged(framed_m2l.read_bytes(), "prefix")
    p = subprocess.run(_cmd("decompress", "--salvage", "-", "-", *m), input=data, capture_output=True, env=_env(),
                       timeout=120)
    assert p.returncode == 3, p.stderr
    err = p.stderr.decode()
    lines = [line for line in err.splitlines() if "damaged" in line]
    assert len(lines) == 1 and lines[0].startswith("damaged: 0.71-1.49 s (frame 1; unreadable length field"), err
    assert "Traceback" not in err and "kbps" in err
    y, sr = sf.read(io.BytesIO(p.stdout), dtype="int16", always_2d=True)
    assert (sr, y.shape) == (44100, (sf.info(work / "stereo44.wav").frames, 2))
    p = subprocess.run(_cmd("decompress", "-", "-", *m), input=data, capture_output=True, env=_env(), timeout=120)
    assert p.returncode == 1 and p.stdout == b"" and p.stderr.decode().count("\n") == 1
