"""UMoED's loss pieces (spec §3): slot-aligned word distances, the label-weighted triplet, per-sample uniformity."""
from __future__ import annotations

import torch

UNIFORMITY_SCALE = 20.0  # t of exp(-t ||a - b||^2), fixed in the reference
ACTIVE_EPS = 1e-16  # a triplet counts as active above this loss, and the count is offset by it


def sharpen(unit: torch.Tensor, temperature: float | None) -> torch.Tensor:
    """Word distributions softmax(unit / temperature) of unit-norm slot logits (the "extreme" softmax).

    None keeps the unit vectors themselves (the reference's ``extreme: False``).
    """
    return unit if temperature is None else torch.softmax(unit / temperature, dim=-1)


def slot_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, M, V), (B', M, V) -> (B, B'): mean over slots m of 1 - max(0, <a_im, b_jm>), slot m meets slot m only."""
    return (1 - torch.einsum("imv,jmv->ijm", a, b).clamp(min=0)).mean(dim=-1)


def shared_labels(batch: dict) -> torch.Tensor:
    """N = Y Y^T, the number of labels two items share; pair-only data counts an item as sharing one with itself."""
    if "label" in batch:
        labels = batch["label"].float()
        return labels @ labels.t()
    index = batch["index"]
    return (index[:, None] == index[None, :]).float()


def label_weighted_triplet(dist: torch.Tensor, relevance: torch.Tensor, margin: float) -> torch.Tensor:
    """DIMCH's triplet loss (DIMCH spec §3.1): anchors are rows of ``dist``, candidates its columns.

    ``l_ijk = max(0, (G_ij - G_ik) S_ij (1 - S_ik) (D_ij - D_ik + margin))`` with the DCG gain
    ``G_ij = (2^N_ij - 1) / Z_i`` (``Z_i`` the row's ideal DCG) and ``S = [N > 0]``, averaged over the
    triplets with a positive loss. An anchor sharing no label with any candidate has ``Z_i = 0``; it
    contributes nothing here, where the reference gives NaN.
    """
    cols = relevance.shape[1]
    discount = torch.log2(torch.arange(2, cols + 2, device=dist.device, dtype=dist.dtype))
    ideal = ((2 ** relevance.sort(dim=1, descending=True).values - 1) / discount).sum(dim=1, keepdim=True)
    gain = (2 ** relevance - 1) / torch.where(ideal > 0, ideal, torch.ones_like(ideal))
    positive = (relevance > 0).to(dist.dtype)
    weight = (gain[:, :, None] - gain[:, None, :]) * positive[:, :, None] * (1 - positive[:, None, :])
    loss = (weight * (dist[:, :, None] - dist[:, None, :] + margin)).clamp(min=0)
    return loss.sum() / ((loss > ACTIVE_EPS).sum() + ACTIVE_EPS)


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
