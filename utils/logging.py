"""The framework's logger: console plus ``train.log`` in the run directory, rank 0 only.

One hierarchy: every module logs through ``get_logger(__name__)``, a child of the ``hashing`` logger, so its
lines reach the same console and ``train.log`` as the runner's.
"""
from __future__ import annotations

import logging
import sys
from logging.handlers import MemoryHandler
from pathlib import Path

LOGGER_NAME = "hashing"
FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")


def get_logger(name: str | None = None) -> logging.Logger:
    """The framework's logger, or the child for module ``name`` (pass ``__name__``)."""
    return logging.getLogger(LOGGER_NAME if name is None else f"{LOGGER_NAME}.{name}")


def setup_logging(is_main: bool = True, keep: bool = False) -> logging.Logger:
    """Log INFO to stdout on rank 0 (other ranks: warnings only); with ``keep``, also keep every record until
    :func:`log_to_file` names the run's ``train.log``, so lines logged while the run is built reach it too."""
    logger = get_logger()
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(FORMAT)
    logger.addHandler(console)
    if is_main and keep:
        logger.addHandler(MemoryHandler(capacity=2**31, flushLevel=logging.CRITICAL + 1))
    return logger


def log_to_file(path: str | Path) -> None:
    """From now on also log to ``path``, starting with every record kept since :func:`setup_logging`."""
    logger = get_logger()
    file = logging.FileHandler(path)
    file.setFormatter(FORMAT)
    for handler in [h for h in logger.handlers if isinstance(h, MemoryHandler)]:
        handler.setTarget(file)
        handler.flush()
        logger.removeHandler(handler)
        handler.close()
    logger.addHandler(file)
