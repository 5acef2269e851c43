"""Writing the files the package hands to a user: checked first, written whole or not at all.

* :func:`check_writable` runs before any work: a read-only or impossible output path fails at once, not after an hour.
* :func:`write_atomically` writes to a temporary name in the same folder and renames it into place only when the
  writer has finished: a crash or a full disk leaves the previous good file intact and never a truncated file that
  reads cleanly.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["check_writable", "write_atomically", "write_text_atomically"]


def check_writable(path: str | os.PathLike, option: str = "--output") -> Path:
    """Refuse an output path that cannot be written: an existing folder in its place, or a folder (the nearest one
    that exists) this process may not write in."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{option} {path}: a folder is in the way; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"{option} {path}: the file exists and cannot be overwritten (permission denied)")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{option} {path}: cannot write in {parent} (permission denied or read-only)")
    return path


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(temporary_path)`, then rename the temporary file to `path`; on any failure remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # ends in the target's suffix, so writers that choose a format by the name (pandas' .gz, numpy's .npy) still do
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_text(text))
