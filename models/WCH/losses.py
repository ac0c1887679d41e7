"""The pieces of WCH's training step as plain functions of tensors (spec §5, §6, §8), each testable alone."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from models.losses import bit_balance

WeightNorm = Literal["column", "row"]


def straight_through_sign(u: torch.Tensor) -> torch.Tensor:
    """sign(u) in the forward pass, the identity in the backward pass (spec §7)."""
    return u + (torch.sign(u) - u).detach()


def mutual_attention(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Each view's patch tokens re-expressed at the other view's positions, without parameters (spec §5).

    With ``S[i, j]`` the cosine of view-1 patch i and view-2 patch j of the same image, view 1 is regathered
    at every view-2 position j (softmax over i, a column of S) and view 2 at every view-1 position i (softmax
    over j, a row of S). The unnormalised tokens are averaged; there is no projection and no residual.

    Args:
        z1, z2: (B, N, D) patch tokens of the two views.

    Returns:
        (B, N, D) each: view-1 tokens at view-2 positions, view-2 tokens at view-1 positions.
    """
    cosine = F.normalize(z1, dim=-1) @ F.normalize(z2, dim=-1).transpose(1, 2) / temperature
    at_view2 = cosine.softmax(dim=1).transpose(1, 2) @ z1
    at_view1 = cosine.softmax(dim=2) @ z2
    return at_view2, at_view1


def patch_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``s[n, m]``: each patch of image n in ``a`` takes its best cosine among the patches of image m in ``b``,
    averaged over n's patches (spec §6; asymmetric). Computed in float32 over the (B, B, N, N) cosines, since
    the maxima are sensitive to low precision (spec §15.8).

    Args:
        a, b: (B, N, D) attended tokens of view 1 (anchors) and view 2 (candidates).
    """
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    return torch.einsum("nid,mjd->nmij", a, b).amax(dim=-1).mean(dim=-1)


def similarity_weights(similarity: torch.Tensor, temperature: float = 0.2,
                       norm: WeightNorm = "column") -> torch.Tensor:
    """Soft targets from patch similarities: a row softmax of ``s / temperature``, divided by a diagonal entry.

    ``column`` (the official code, a broadcasting side effect of dividing by the diagonal vector) divides
    entry (n, m) by p[m, m], the column's own positive; ``row`` divides it by p[n, n]. Either way the diagonal
    is 1; ``column`` entries may exceed 1.
    """
    p = (similarity / temperature).softmax(dim=1)
    diagonal = p.diagonal()
    return p / diagonal if norm == "column" else p / diagonal[:, None]


def weighted_contrastive(h1: torch.Tensor, h2: torch.Tensor, weights: torch.Tensor, temperature: float = 0.3,
                         alpha_distill: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the code logits ``<h1_n, h2_m> / (K temperature)`` against soft targets (spec §8).

    Row n's target is 1 at m = n (one-directional InfoNCE, view 1 -> view 2) and ``alpha_distill * W[n, m]``
    elsewhere (the patch-similarity "distillation" part; 1 is the official code, which has no such weight).
    Targets need not sum to 1, as with PyTorch's CrossEntropyLoss on probability targets; mean over rows.
    """
    bits = h1.shape[1]
    nll = -(h1 @ h2.T / (bits * temperature)).log_softmax(dim=1)
    eye = torch.eye(len(h1), device=h1.device, dtype=nll.dtype)
    targets = eye + alpha_distill * weights.to(nll.dtype) * (1 - eye)
    return (targets * nll).sum(dim=1).mean()


def bit_regularizer(h: torch.Tensor) -> torch.Tensor:
    """Mean over bits of the squared batch mean (bit balance) minus the mean squared code value (spec §8).

    The second term is 1 in value for +-1 codes, but through the straight-through sign it pushes |u| up.
    """
    return bit_balance(h) - h.pow(2).mean()
