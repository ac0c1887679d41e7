"""TwDH's second step: the long->short transform matrices, learned from the training labels.

The transforms depend only on the training labels and the centers (TwDH spec §3.5, the reference's
``runners/TwDH/transform_matrix_generation``), so :meth:`models.TwDH.model.TwDH.before_training` fits them
once, before the first epoch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from models.heads import pairwise_softmax
from models.losses import pair_quantization
from models.TwDH.centers import center_targets, map_centers, pair_onehot
from runners.optim import BertAdam


def _random_signs(bits: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (bits,), generator=generator).float() * 2 - 1


def learn_transform(labels: torch.Tensor, long_centers: torch.Tensor, short_centers: torch.Tensor,
                    epochs: int = 100, batch_size: int = 200, lr: float = 0.001, l1: float = 0.001, seed: int = 0,
                    device: str | torch.device = "cpu") -> tuple[torch.Tensor, int | None]:
    """Fit T (2L x 2S) so that the short target of each training label follows from its long target.

    Per batch of labels: x = onehot(long target), q = pair-softmax(x T); loss = Q(q) + BCE(q, onehot(short
    target)) + l1 * sum|T|, with BertAdam (warmup_cosine 0.1, b2 0.98, weight decay 0.2, per-tensor clip 1)
    over ``epochs`` passes. After each epoch the class centers are mapped; once every class maps onto its
    short center exactly, fitting stops (the reference's "lossless" check).

    Returns:
        T on ``device``, and the epoch at which the mapping became exact (None if it never did).
    """
    labels = labels[labels.sum(1) > 0].float()
    if not len(labels):
        raise ValueError("TwDH: the training set has no labelled item to learn the transform from")
    gen = torch.Generator().manual_seed(seed)
    long_bits, short_bits = long_centers.shape[1], short_centers.shape[1]
    matrix = (torch.rand(2 * long_bits, 2 * short_bits, generator=gen) * 2 - 1).to(device).requires_grad_()
    long_centers, short_centers, labels = long_centers.to(device), short_centers.to(device), labels.to(device)
    steps = math.ceil(len(labels) / batch_size) * epochs
    opt = BertAdam([matrix], lr=lr, t_total=steps, schedule="warmup_cosine", warmup=0.1, b1=0.9, b2=0.98,
                   e=1e-6, weight_decay=0.2, max_grad_norm=1.0)
    for epoch in range(epochs):
        for rows in torch.randperm(len(labels), generator=gen).split(batch_size):
            y = labels[rows.to(device)]
            x = pair_onehot(center_targets(y, long_centers, _random_signs(long_bits, gen).to(device)))
            target = pair_onehot(center_targets(y, short_centers, _random_signs(short_bits, gen).to(device)))
            q = pairwise_softmax(x @ matrix)
            loss = pair_quantization(q) + F.binary_cross_entropy(q, target) + l1 * matrix.abs().sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if (map_centers(long_centers, matrix.detach()) == short_centers).all():
            return matrix.detach(), epoch + 1
    return matrix.detach(), None
