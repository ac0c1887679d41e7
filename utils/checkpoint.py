"""Checkpoint io: atomic writes, and loads that never unpickle code (``weights_only=True``)."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from utils.io import atomic_write


def save_atomic(obj, path: str | os.PathLike) -> None:
    """torch.save through :func:`utils.io.atomic_write`: a crash never leaves a half-written file."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for a damaged or foreign file
        raise ValueError(f"checkpoint '{path}' cannot be read ({type(err).__name__}: {str(err).splitlines()[0]})") from None


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
