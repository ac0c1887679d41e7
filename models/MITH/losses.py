"""MITH's loss pieces, as in DarrenZZhang/MM23-MITH ``train_asym.py`` (spec §3).

Each function is pure, so tests compare it with the formula written out independently.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bank_likelihood(bank: torch.Tensor, codes: torch.Tensor, sim: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of the similarities between a memory bank and the batch codes.

    ``theta = 0.5 * clamp(bank @ codes.T, -64, 64)`` (the reference clamps the inner products, then
    halves them) and the loss is ``-mean(sim * theta - log(1 + exp(theta)))`` over all N x B pairs.

    Args:
        bank: (N, K) codes of the whole training set (no gradient).
        codes: (B, K) codes of the batch.
        sim: (N, B) 1 where training item n and batch item b share a label.
    """
    theta = 0.5 * (bank @ codes.t()).clamp(-64, 64)
    return (F.softplus(theta) - sim * theta).mean()


def instance_contrast(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between paired rows of (B, D) unit vectors: item i of ``a`` matches item i of ``b``."""
    logits = a @ b.t() / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def token_contrast(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between the concept tokens of each pair: token k of ``a`` matches token k of ``b``.

    Args:
        a, b: (B, K, D) unit vectors. The cross-entropy averages over all B * K rows in each direction.
    """
    logits = a @ b.transpose(1, 2) / temperature
    batch, bits = logits.shape[:2]
    target = torch.arange(bits, device=a.device).repeat(batch)
    forward = F.cross_entropy(logits.reshape(batch * bits, bits), target)
    backward = F.cross_entropy(logits.transpose(1, 2).reshape(batch * bits, bits), target)
    return 0.5 * (forward + backward)


def quantization(codes: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||codes - target||_F^2 / (B K)``: pulls the fused codes toward the shared binary target."""
    return F.mse_loss(codes, target)


def distillation(teacher: torch.Tensor, student: torch.Tensor, feedback: float = 0.1) -> torch.Tensor:
    """Two-way global-local distillation of one modality, a sum over the batch (spec §3.2 item 5).

    Teaching moves the student toward the (fixed) teacher with full weight; feedback moves the teacher
    toward the (fixed) student with weight ``feedback``.
    """
    teaching = F.mse_loss(student, teacher.detach(), reduction="sum")
    return teaching + feedback * F.mse_loss(teacher, student.detach(), reduction="sum")
