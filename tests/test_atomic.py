"""Tests for m2lcodec.atomic: atomic, no-clobber output files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from m2lcodec.atomic import OutputError, OutputExistsError, atomic_output


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_writes_via_hidden_temp_and_renames(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    with atomic_output(out) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".out.bin.") and tmp.name.endswith(".tmp")
        assert tmp.exists() and not out.exists()
        tmp.write_bytes(b"hello")
    assert out.read_bytes() == b"hello"
    assert _entries(tmp_path) == ["out.bin"]


def test_temp_names_are_unique(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    with atomic_output(out, force=True) as a, atomic_output(out, force=True) as b:
        assert a != b
        a.write_bytes(b"a")
        b.write_bytes(b"b")
    assert out.read_bytes() == b"a"  # the outer block commits last
    assert _entries(tmp_path) == ["out.bin"]


def test_nested_second_commit_refuses_without_force(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    with pytest.raises(OutputExistsError):
        with atomic_output(out) as outer:
            outer.write_bytes(b"outer")
            with atomic_output(out) as inner:
                inner.write_bytes(b"inner")
    assert out.read_bytes() == b"inner"
    assert _entries(tmp_path) == ["out.bin"]


def test_exception_removes_temp_and_keeps_existing(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    out.write_bytes(b"original")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(out, force=True) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert out.read_bytes() == b"original"
    assert _entries(tmp_path) == ["out.bin"]


def test_keyboard_interrupt_also_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(out) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert _entries(tmp_path) == []


def test_refuses_existing_without_force(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    out.write_bytes(b"original")
    with pytest.raises(OutputExistsError, match="already exists") as info:
        with atomic_output(out):
            pytest.fail("body must not run")
    assert "\n" not in str(info.value)
    assert isinstance(info.value, OSError)
    assert out.read_bytes() == b"original"
    assert _entries(tmp_path) == ["out.bin"]


def test_force_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    out.write_bytes(b"original")
    with atomic_output(out, force=True) as tmp:
        tmp.write_bytes(b"new")
    assert out.read_bytes() == b"new"


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        with atomic_output(tmp_path / "nope" / "out.bin"):
            pass


def test_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OutputError, match="not a directory"):
        with atomic_output(tmp_path / "file" / "out.bin"):
            pass


def test_output_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        with atomic_output(tmp_path / "d", force=True):
            pass


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_directory(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(OutputError, match="not writable"):
            with atomic_output(ro / "out.bin"):
                pass
    finally:
        ro.chmod(stat.S_IRWXU)


def test_protect_refuses_even_with_force(tmp_path: Path) -> None:
    src = tmp_path / "in.wav"
    src.write_bytes(b"input")
    for target in (src, tmp_path / "." / "in.wav"):
        with pytest.raises(OutputError, match="input"):
            with atomic_output(target, force=True, protect=src):
                pass
    assert src.read_bytes() == b"input"


def test_protect_sees_through_symlinks(tmp_path: Path) -> None:
    src = tmp_path / "in.wav"
    src.write_bytes(b"input")
    link = tmp_path / "link.wav"
    link.symlink_to(src)
    with pytest.raises(OutputError):
        with atomic_output(link, force=True, protect=src):
            pass
    assert src.read_bytes() == b"input"


def test_protect_other_file_is_fine(tmp_path: Path) -> None:
    src = tmp_path / "in.wav"
    src.write_bytes(b"input")
    with atomic_output(tmp_path / "out.wav", protect=src) as tmp:
        tmp.write_bytes(b"x")
    assert (tmp_path / "out.wav").read_bytes() == b"x"


def test_result_has_umask_permissions(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    with atomic_output(out) as tmp:
        tmp.write_bytes(b"x")
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask


def test_accepts_str_path(tmp_path: Path) -> None:
    out = str(tmp_path / "out.bin")
    with atomic_output(out) as tmp:
        tmp.write_bytes(b"x")
    assert Path(out).read_bytes() == b"x"


def test_unwritable_directory_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same check as above but runs as root too, by faking the permission answer."""
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    with pytest.raises(OutputError, match="not writable"):
        with atomic_output(tmp_path / "out.bin"):
            pass


def test_temp_creation_failure_is_output_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("m2lcodec.atomic.tempfile.mkstemp", refuse)
    with pytest.raises(OutputError, match="Permission denied"):
        with atomic_output(tmp_path / "out.bin"):
            pass
    assert _entries(tmp_path) == []
