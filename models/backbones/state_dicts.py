"""Reading ``torch.save`` and safetensors weight files, shared by the backbone families.

Each family checks the tensors against its own variant table; this module only gets them out of the file
safely (``weights_only=True``, so a file cannot run code) and without the wrappers training scripts add.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch


def read_state_dict(path: Path, other_format: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file or a ``torch.save`` file (``weights_only``), unwrapped.

    Args:
        path: an existing local file.
        other_format: the family's own release format (e.g. "a TorchScript archive"), named when the file is
            neither that nor a torch checkpoint.

    Raises:
        ValueError: the file is not a weights-only torch checkpoint, or holds no tensors.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path), device="cpu")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is neither {other_format} nor a weights-only torch checkpoint: "
                         f"{first_line}") from err
    # Training checkpoints nest the weights ({"state_dict": ...} for open_clip, {"model": ...} elsewhere).
    while isinstance(checkpoint, dict):
        wrapper = next((key for key in ("state_dict", "model") if isinstance(checkpoint.get(key), dict)), None)
        if wrapper is None:
            break
        checkpoint = checkpoint[wrapper]
    if not isinstance(checkpoint, dict) or not any(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path} holds no state dict of tensors (looked at the top level and under "
                         f"'state_dict' / 'model')")
    return {key: value for key, value in checkpoint.items() if isinstance(value, torch.Tensor)}


def strip_ddp_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the ``module.`` prefix that saving a DistributedDataParallel wrapper adds to every key."""
    if state and all(key.startswith("module.") for key in state):
        return {key[len("module."):]: value for key, value in state.items()}
    return state
