"""Atomic, no-clobber output files.

Every file the codec produces is first written to a hidden temporary file in
the destination directory and then renamed over the final name, so readers
never see a half-written file and a crash or Ctrl-C never leaves debris or
destroys an existing file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["OutputError", "OutputExistsError", "atomic_output"]


class OutputError(OSError):
    """The output path cannot be written (missing/unwritable directory, protected input, ...)."""


class OutputExistsError(OutputError):
    """The output path exists and overwriting was not requested."""


def _current_umask() -> int:
    """Return the process umask without changing it where possible (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # fallback: briefly racy with other threads creating files
    os.umask(mask)
    return mask


def _same_file(a: Path, b: Path) -> bool:
    """True when `a` and `b` name the same file (by inode if both exist, else by resolved path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _fsync_dir(directory: Path) -> None:
    """Best-effort fsync of a directory so a completed rename survives a power loss."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_destination(path: Path, force: bool, protect: Path | str | None) -> None:
    """Raise OutputError/OutputExistsError if `path` must not be written."""
    directory = path.parent
    if not directory.exists():
        raise OutputError(f"cannot write {path}: directory {directory} does not exist")
    if not directory.is_dir():
        raise OutputError(f"cannot write {path}: {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: directory {directory} is not writable")
    if protect is not None and _same_file(path, Path(protect)):
        raise OutputError(f"refusing to overwrite input file {protect} with output {path}")
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory")
    if (path.exists() or path.is_symlink()) and not force:
        raise OutputExistsError(f"{path} already exists (use --force to overwrite)")


@contextlib.contextmanager
def atomic_output(
    path: Path | str, force: bool = False, protect: Path | str | None = None
) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success atomically rename it onto `path`.

    Refuses (before anything is written) when `path` exists and `force` is false,
    when its directory is missing or unwritable, or when it is the same file as
    `protect` (an input file, which is never overwritten, even with `force`).
    On any exception inside the block the temporary file is removed and the
    exception re-raised; an existing file at `path` is left untouched.
    """
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise OutputError(f"cannot write {str(path)!r}: not a file name")
    _check_destination(path, force, protect)
    directory = path.parent
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        # mkstemp creates mode 0600; give the result the usual permissions.
        os.fchmod(fd, 0o666 & ~_current_umask())
        os.close(fd)
        fd = -1
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if not force and (path.exists() or path.is_symlink()):
            # Someone created it while we were writing: still never clobber.
            raise OutputExistsError(f"{path} already exists (use --force to overwrite)")
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(directory)
