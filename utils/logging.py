"""The framework's logger: console plus ``train.log`` in the run directory, rank 0 only.

One hierarchy: every module logs through ``get_logger(__name__)``, a child of the ``hashing`` logger, so its
lines reach the same console and ``train.log`` as the runner's.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

LOGGER_NAME = "hashing"


def get_logger(name: str | None = None) -> logging.Logger:
    """The framework's logger, or the child for module ``name`` (pass ``__name__``)."""
    return logging.getLogger(LOGGER_NAME if name is None else f"{LOGGER_NAME}.{name}")


def setup_logging(run_dir: str | Path | None, is_main: bool = True) -> logging.Logger:
    """Log INFO to stdout and to ``run_dir/train.log`` on rank 0; other ranks log warnings only."""
    logger = get_logger()
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if run_dir is not None and is_main:
        file = logging.FileHandler(Path(run_dir) / "train.log")
        file.setFormatter(fmt)
        logger.addHandler(file)
    return logger
