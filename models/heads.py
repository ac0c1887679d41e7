"""Hash layers shared by several methods (as timm keeps its blocks in ``timm/layers``)."""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


def kaiming_fan_out_(linear: nn.Linear, fan_out: int | None = None) -> nn.Linear:
    """Kaiming-uniform init with mode='fan_out' (gain sqrt 2), bias 0, as the CLIP-hashing code bases do.

    ``fan_out`` overrides the layer's own out_features: a fused layer of K two-way selectors must be
    initialised as K separate 2-output layers (bound sqrt(6/2)), not as one 2K-output layer.
    """
    bound = math.sqrt(6.0 / (fan_out or linear.out_features))
    nn.init.uniform_(linear.weight, -bound, bound)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
    return linear


def pairwise_softmax(logits: torch.Tensor) -> torch.Tensor:
    """(B, 2K) logits -> (B, 2K) probabilities, a softmax over each consecutive pair (bit k = slots 2k, 2k+1)."""
    batch = logits.shape[0]
    return torch.softmax(logits.view(batch, -1, 2), dim=-1).view(batch, -1)


def argmax_codes(pairs: torch.Tensor) -> torch.Tensor:
    """(B, 2K) pair probabilities -> (B, K) codes: +1 where slot 1 beats slot 0, else -1 (a tie gives -1)."""
    view = pairs.view(pairs.shape[0], -1, 2)
    return torch.where(view[..., 1] > view[..., 0], 1.0, -1.0).to(pairs.dtype)


class SelectHead(nn.Module):
    """DCMHT's canonical head: Linear(in, hidden) -> ReLU -> K two-way selectors, each softmaxed.

    The K ``Linear(hidden, 2)`` selectors are fused into one ``Linear(hidden, 2K)`` (mathematically the
    same) and initialised per selector (fan_out 2), which reproduces the paper code's large initial logits.
    """

    def __init__(self, in_dim: int, bits: int, hidden: int = 128):
        super().__init__()
        self.fc = kaiming_fan_out_(nn.Linear(in_dim, hidden))
        self.select = kaiming_fan_out_(nn.Linear(hidden, 2 * bits), fan_out=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pairwise_softmax(self.select(torch.relu(self.fc(x))))


class FrameworkSelectHead(nn.Module):
    """The kalenforn framework's DCMHT head: one-token self-attention, a norm, Linear(2K), ReLU, pair softmax.

    Self-attention over a single token reduces to ``out_proj(v_proj(x))``; we keep ``nn.MultiheadAttention``
    so its parameters and init match. Unlike the reference, a batch of one keeps its batch axis.
    """

    def __init__(self, in_dim: int, bits: int, norm: str, heads: int = 8):
        super().__init__()
        if norm not in ("batch", "layer"):
            raise ValueError(f"norm must be 'batch' or 'layer', got '{norm}'")
        self.attn = nn.MultiheadAttention(in_dim, heads, batch_first=True)
        self.norm = nn.BatchNorm1d(in_dim) if norm == "batch" else nn.LayerNorm(in_dim)
        self.fc = kaiming_fan_out_(nn.Linear(in_dim, 2 * bits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        token = x.unsqueeze(1)
        attended = self.attn(token, token, token, need_weights=False)[0][:, 0]
        return pairwise_softmax(torch.relu(self.fc(self.norm(attended.float()))))


class MLPHashHead(nn.Module):
    """Linear(in, hidden) -> ReLU -> Dropout -> Linear(hidden, K) -> tanh: the classic relaxed-sign head."""

    def __init__(self, in_dim: int, bits: int, hidden: int = 256, dropout: float = 0.3):
        super().__init__()
        self.net = nn.Sequential(kaiming_fan_out_(nn.Linear(in_dim, hidden)), nn.ReLU(), nn.Dropout(dropout),
                                 kaiming_fan_out_(nn.Linear(hidden, bits)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(x))


class TanhHashHead(nn.Module):
    """``tanh(Dropout(Linear(x)))`` with PyTorch's default init: the proxy-hashing methods' layer (DSPH, DNPH).

    Dropout acts on the pre-activation, as in their reference code.
    """

    def __init__(self, in_dim: int, bits: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(in_dim, bits)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dropout(self.fc(x)))


HashActivationKind = Literal["tanh", "sigmoid", "gumbel"]


class HashActivation(nn.Module):
    """Relaxed codes in [-1, 1] from pre-activations z (BASELINE spec §B2); the sign of z is the binary code.

    ``tanh``: tanh(z). ``sigmoid``: 2 sigmoid(z) - 1 (= tanh(z / 2)). ``gumbel``: per bit the two logits
    (z, -z); in training a soft Gumbel-softmax sample g at temperature ``tau`` gives 2 g_+ - 1, in evaluation
    the code itself, sign(z) with 0 -> +1.
    """

    def __init__(self, kind: HashActivationKind = "tanh", tau: float = 1.0):
        super().__init__()
        self.kind, self.tau = kind, tau

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.kind == "tanh":
            return torch.tanh(z)
        if self.kind == "sigmoid":
            return 2 * torch.sigmoid(z) - 1
        if not self.training:
            return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
        return 2 * F.gumbel_softmax(torch.stack([z, -z], dim=-1), tau=self.tau, hard=False)[..., 0] - 1

    def extra_repr(self) -> str:
        return f"kind={self.kind}" + (f", tau={self.tau:g}" if self.kind == "gumbel" else "")
