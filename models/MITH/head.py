"""MITH's hash head: a shared global-concept teacher (GCL) and one local-concept student (LCT) per modality.

Liu et al., "Multi-Granularity Interactive Transformer Hashing for Cross-modal Retrieval", ACM MM 2023
(DOI 10.1145/3581783.3612411); reference code DarrenZZhang/MM23-MITH ``hash_model.py``. Sequences are
batch-first here ((B, L, D) instead of the reference's (L, B, D)); the arithmetic is the same.
"""
from __future__ import annotations

import math

import torch
from open_clip.transformer import QuickGELU, Transformer
from torch import nn

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


class ResidualMLP(nn.Module):
    """``x <- x + Linear(4D->D)(Dropout(act(Linear(D->4D)(LayerNorm(x)))))``, repeated ``layers`` times."""

    def __init__(self, dim: int, layers: int = 2, dropout: float = 0.0, activation: str = "gelu"):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, 4 * dim), ACTIVATIONS[activation](), nn.Dropout(dropout),
                          nn.Linear(4 * dim, dim))
            for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm, mlp in zip(self.norms, self.mlps):
            x = x + mlp(norm(x))
        return x


class GlobalConceptLearning(nn.Module):
    """The teacher: residual MLP, then K concept scores ``tanh(W r)`` with a bias-free W.

    One instance serves both modalities (paper Fig. 2, "share weight"); on a global token its scores are
    the global hash, on local tokens they say which concepts each token carries.
    """

    def __init__(self, dim: int, bits: int, layers: int = 2, dropout: float = 0.0, activation: str = "gelu"):
        super().__init__()
        self.mlp = ResidualMLP(dim, layers, dropout, activation) if layers else nn.Identity()
        self.concept = nn.Linear(dim, bits, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., D) -> the refined feature (..., D) and the concept scores in (-1, 1) (..., K)."""
        feature = self.mlp(x)
        return feature, torch.tanh(self.concept(feature))


def localized_token_aggregation(tokens: torch.Tensor, scores: torch.Tensor, top_k: int,
                                mask: torch.Tensor | None = None) -> torch.Tensor:
    """LTA: one concept token per concept, the softmax-weighted sum of the local tokens that respond to it.

    A token votes for a concept only if its score is positive and among its ``top_k`` largest (ties kept);
    masked tokens vote for nothing. The weights are a softmax over tokens per (sample, concept); a concept
    no token votes for gets the zero vector (the reference's NaN -> 0). ``scores`` must come without
    gradient (the reference detaches them), so the weights are constants and gradient reaches ``tokens`` only.

    Args:
        tokens: (B, L, D) local tokens.
        scores: (B, L, K) concept scores of the tokens (detached).
        top_k: concepts each token may vote for.
        mask: (B, L) bool, True for tokens that take no part (text padding and EOT).

    Returns:
        (B, K, D) concept tokens.
    """
    neg_inf = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
    if mask is not None:
        scores = scores.masked_fill(mask.unsqueeze(-1), neg_inf)
    scores = torch.where(scores > 0, scores, neg_inf)
    kth = scores.topk(top_k, dim=-1).values[..., -1:]
    scores = torch.where(scores >= kth, scores, neg_inf)
    weights = torch.softmax(scores, dim=1).nan_to_num(nan=0.0)
    return weights.transpose(1, 2) @ tokens


def sinusoid_positions(length: int, dim: int) -> torch.Tensor:
    """The transformer sinusoid table (length, dim), divided by sqrt(dim) as in the reference."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table / math.sqrt(dim)


class BitwiseHashing(nn.Module):
    """Bit k = tanh(w_k . t_k + b_k) from concept token k alone: K separate Linear(D, 1) layers, fused.

    Each row of ``weight`` and entry of ``bias`` is initialised like its own ``nn.Linear(D, 1)``
    (uniform in +-1/sqrt(D)).
    """

    def __init__(self, dim: int, bits: int):
        super().__init__()
        bound = 1.0 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(bits, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(bits).uniform_(-bound, bound))

    def forward(self, concepts: torch.Tensor) -> torch.Tensor:
        """(B, K, D) -> (B, K)."""
        return torch.tanh((concepts * self.weight).sum(-1) + self.bias)


class LocalConceptTransforming(nn.Module):
    """The student of one modality: LTA -> positional encoding -> transformer encoder -> bitwise hashing.

    The encoder is CLIP's pre-LN block (QuickGELU, ``dim // 64`` heads) with PyTorch's default init.
    """

    def __init__(self, dim: int, bits: int, layers: int = 2, top_k: int = 8):
        super().__init__()
        self.top_k = top_k
        self.register_buffer("positions", sinusoid_positions(bits, dim), persistent=False)
        self.transformer = Transformer(dim, layers, max(dim // 64, 1), act_layer=QuickGELU, batch_first=True)
        self.hashing = BitwiseHashing(dim, bits)

    def forward(self, tokens: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Local tokens (B, L, D) and their detached scores (B, L, K) -> concept tokens (B, K, D), local hash (B, K)."""
        concepts = localized_token_aggregation(tokens, scores, self.top_k, mask)
        concepts = self.transformer(concepts + self.positions)
        return concepts, self.hashing(concepts)
