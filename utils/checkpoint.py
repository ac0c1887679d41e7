"""Checkpoint io: atomic writes, and loads that never unpickle code (``weights_only=True``)."""
from __future__ import annotations

import os
import random
import zipfile
from pathlib import Path

import numpy as np
import torch

from utils.io import atomic_write


def save_atomic(obj, path: str | os.PathLike) -> None:
    """torch.save through :func:`utils.io.atomic_write`: a crash never leaves a half-written file."""
    atomic_write(path, lambda f: torch.save(obj, f))


def read(path: str | os.PathLike, map_location="cpu", what: str = "file"):
    """``torch.load`` with ``weights_only=True`` (no pickled code runs) and errors that say what is wrong.

    Raises:
        FileNotFoundError: no such file.
        ValueError: one line naming the file: empty, not a PyTorch file, or holding objects this framework
            never writes (torch's advice to unpickle such a file is never repeated).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} '{path}' not found")
    foreign = f"{what} '{path}' is not a {what} written by this framework"
    if path.stat().st_size == 0:
        raise ValueError(f"{foreign}: the file is empty (0 bytes)")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{foreign}: it is not a PyTorch file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # torch raises several types
        raise ValueError(f"{foreign}: it holds Python objects other than tensors and plain data, which are not "
                         f"loaded for safety") from None


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_atomic`: :func:`read`, and a ``model`` entry must be there."""
    state = read(path, map_location, what="checkpoint")
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        bare = isinstance(state, dict) and state and all(torch.is_tensor(v) for v in state.values())
        what = "a bare state dict of tensors" if bare else f"a {type(state).__name__} without a 'model' entry"
        raise ValueError(f"checkpoint '{path}' is not a checkpoint written by this framework: it holds {what}; "
                         f"save weights as {{'model': state_dict}} to evaluate them with --eval-only")
    return state


def rng_state() -> dict:
    """Python, numpy and torch RNG states as plain data (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value):
    """random.setstate needs tuples; a checkpoint round trip may hand back lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
