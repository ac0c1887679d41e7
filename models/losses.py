"""Loss pieces shared by several methods."""
from __future__ import annotations

import torch


def label_similarity(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """S_ij = 1 if rows i of ``a`` and j of ``b`` share at least one label, else 0 (float)."""
    b = a if b is None else b
    return (a.float() @ b.float().t() > 0).float()


def batch_similarity(batch: dict) -> torch.Tensor:
    """Label similarity of a batch; for pair-only data (no ``label``) each item is similar only to itself."""
    if "label" in batch:
        return label_similarity(batch["label"])
    index = batch["index"]
    return (index[:, None] == index[None, :]).float()


def sign_quantization(h: torch.Tensor) -> torch.Tensor:
    """mean((h - sign(h))^2) with the sign target detached: pulls relaxed codes toward +-1."""
    target = torch.where(h >= 0, 1.0, -1.0).to(h.dtype).detach()
    return (h - target).pow(2).mean()


def pair_quantization(pairs: torch.Tensor) -> torch.Tensor:
    """Q(P) = 1 - mean((2P - 1)^2) over two-way softmax outputs: 0 when every pair is one-hot."""
    return 1 - (2 * pairs - 1).pow(2).mean()
