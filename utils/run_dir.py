"""A run directory belongs to one run: claimed under an exclusive lock, never mixed with another run.

``RunDirectory(path, mode).claim()`` is called once the whole config has validated and every input was found,
right before the first write:

* ``new``: the folder must not hold a run yet (``config.yaml``, ``metrics.json``, ``train.log`` or
  ``checkpoints/``); the refusal names both ways out (``--resume`` or ``--overwrite``);
* ``resume``: the folder may hold the run being continued;
* ``overwrite``: an earlier run is moved aside to ``<path>-replaced-<time>`` (never deleted), then the folder
  starts afresh.

The lock is ``fcntl.flock`` on ``<path>/.lock``, held until :meth:`release` or the process ends (the kernel
drops it then, so the lock of a crashed or killed run never blocks the next one). A second run on the same
folder fails at once, naming the process that holds it.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Literal

RUN_FILES = ("config.yaml", "metrics.json", "train.log", "checkpoints")
Mode = Literal["new", "resume", "overwrite"]


class RunDirectoryError(RuntimeError):
    """The run directory cannot be used as asked; the message says why and what to do."""


class RunDirectory:
    """The folder of one run (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, mode: Mode = "new"):
        self.path, self.mode = Path(path), mode
        self.moved_to: Path | None = None
        self._lock = None

    def existing_run(self) -> list[str]:
        """The files of an earlier run the folder holds."""
        return [name for name in RUN_FILES if (self.path / name).exists()]

    def claim(self) -> None:
        """Lock the folder for this run and check (or move aside) what it already holds."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(f"run directory '{self.path}' is a file; choose a folder for --save-dir")
        self.path.mkdir(parents=True, exist_ok=True)
        self._acquire()
        found = self.existing_run()
        if not found or self.mode == "resume":
            return
        if self.mode == "new":
            self.release()
            raise RunDirectoryError(
                f"run directory '{self.path}' already holds a run ({', '.join(found)}); continue it with --resume "
                f"{self.path / 'checkpoints' / 'last.pt'}, or pass --overwrite to move it aside to "
                f"'{self.path}-replaced-<time>' and start afresh")
        self._move_aside(found)

    def _move_aside(self, found: list[str]) -> None:
        base = self.path.with_name(f"{self.path.name}-replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        aside, number = base, 2
        while aside.exists():
            aside, number = base.with_name(f"{base.name}-{number}"), number + 1
        aside.mkdir(parents=True)
        for entry in self.path.iterdir():
            if entry.name != ".lock":
                os.replace(entry, aside / entry.name)
        self.moved_to = aside

    def _acquire(self) -> None:
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunDirectoryError(f"run directory '{self.path}' is in use by {holder}; wait for that run to end "
                                    f"or choose another --save-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._lock = fd

    def release(self) -> None:
        """Drop the lock (also dropped by the kernel when the process ends)."""
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = None
