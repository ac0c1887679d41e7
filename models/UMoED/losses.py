"""UMoED's loss pieces (spec §3): slot-aligned word distances and per-sample uniformity.

The label-weighted triplet loss is DIMCH's, shared through ``models/losses.py``.
"""
from __future__ import annotations

import torch

UNIFORMITY_SCALE = 20.0  # t of exp(-t ||a - b||^2), fixed in the reference


def sharpen(unit: torch.Tensor, temperature: float | None) -> torch.Tensor:
    """Word distributions softmax(unit / temperature) of unit-norm slot logits (the "extreme" softmax).

    None keeps the unit vectors themselves (the reference's ``extreme: False``).
    """
    return unit if temperature is None else torch.softmax(unit / temperature, dim=-1)


def slot_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, M, V), (B', M, V) -> (B, B'): mean over slots m of 1 - max(0, <a_im, b_jm>), slot m meets slot m only."""
    return (1 - torch.einsum("imv,jmv->ijm", a, b).clamp(min=0)).mean(dim=-1)


def slot_uniformity(unit: torch.Tensor) -> torch.Tensor:
    """(B, M, V) unit slot vectors -> mean over samples and slot pairs m < m' of exp(-20 ||u_m - u_m'||^2).

    Computed per sample (slots of different samples never meet). Differences are taken exactly rather than
    through ``cdist``, so the gradient is finite even for coinciding slots. A single slot gives 0.
    """
    slots = unit.shape[1]
    if slots < 2:
        return unit.new_zeros(())
    first, second = torch.triu_indices(slots, slots, offset=1, device=unit.device)
    sq = (unit[:, first] - unit[:, second]).pow(2).sum(dim=-1)
    return torch.exp(-UNIFORMITY_SCALE * sq).mean()
