"""The one way this project writes a file: to a unique temporary name in the same folder, then a rename.

A crash, a kill or a full disk at any instant leaves either the old file or the complete new one under the
final name, never a truncated file; the temporary file is removed when the write fails.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from typing import Any, BinaryIO, Callable

Writer = Callable[[BinaryIO], Any]


def write_files_atomically(writers: dict[str | os.PathLike, Writer]) -> None:
    """Write each file through ``writer(binary_file)`` to a temporary name, then rename them all into place.

    Renaming happens only after every file is written and flushed to disk, so a group of files (the three
    files of a ``.mat`` triple) is replaced together or not at all.
    """
    temps: dict[str, str] = {}
    mask = os.umask(0)
    os.umask(mask)
    path = ""
    try:
        for path, write in writers.items():
            path = os.fspath(path)
            folder = os.path.dirname(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
            fd, temps[path] = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
            os.fchmod(fd, 0o666 & ~mask)
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        for path in list(temps):
            os.replace(temps.pop(path), path)
    except Exception as err:
        explained = _explained(err, path)
        if explained is err:
            raise
        raise explained from err
    finally:
        for temp in temps.values():
            os.unlink(temp)


def _explained(err: Exception, path: str) -> Exception:
    """A write failure in words, with the path: a full disk (torch reports it as an 'unexpected pos'
    RuntimeError) or a folder that cannot be written; other errors pass unchanged."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    full = getattr(err, "errno", None) == errno.ENOSPC or (
        os.path.isdir(folder) and shutil.disk_usage(folder).free < 1 << 20)
    if full:
        return DiskFullError(f"no space left on device while writing '{path}' (the file under that name is "
                             f"unchanged); free some space and run again")
    if isinstance(err, PermissionError):
        return PermissionError(f"cannot write '{path}': permission denied on '{folder}'")
    return err


class DiskFullError(OSError):
    """The disk filled up during a write; the message names the file."""

    errno = errno.ENOSPC


def atomic_write(path: str | os.PathLike, write: Writer) -> None:
    """Write one file through ``write(binary_file)`` atomically."""
    write_files_atomically({path: write})


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
