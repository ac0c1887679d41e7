"""Hash centers and the targets TwDH derives from them (spec §3.1, §3.4).

The centers follow CSQ (Yuan et al., CVPR 2020; yuanli2333/Hadamard-Matrix-for-hashing): rows of a Sylvester
Hadamard matrix when there are enough, else random balanced rows ("Bernoulli" centers) redrawn until they are
far apart. A multi-label sample's target is the sign of the mean of its classes' centers; a tie bit takes
the value of a random vector shared by the whole batch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from models.heads import argmax_codes
from utils.logging import get_logger


def sylvester_hadamard(n: int) -> torch.Tensor:
    """The n x n Sylvester Hadamard matrix (n a power of two), in the row order of ``scipy.linalg.hadamard``."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"a Sylvester Hadamard matrix needs a power of two, got {n}")
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.kron(torch.tensor([[1.0, 1.0], [1.0, -1.0]]), h)
    return h


def hamming_distances(codes: torch.Tensor) -> torch.Tensor:
    """(..., C, K) codes in {-1,+1} -> (..., C, C) pairwise Hamming distances."""
    return (codes.shape[-1] - codes @ codes.transpose(-1, -2)) / 2


def bernoulli_centers(num_classes: int, bits: int, seed: int = 0, trials: int = 1000,
                      min_distance: int | None = None) -> torch.Tensor:
    """CSQ's random centers: every row has half of its bits at -1, the set redrawn until it is spread out.

    A draw is accepted when its smallest pairwise distance reaches ``min_distance`` (default 5/16 of the
    bits, CSQ's 20 for 64 bits) and its mean distance reaches bits/2. CSQ loops until that happens, which
    never ends when the class count makes the threshold unreachable (80 classes in 16 bits); we stop after
    ``trials`` draws and keep the most spread one (largest minimum, then largest mean).
    """
    threshold = round(bits * 5 / 16) if min_distance is None else min_distance
    rng = np.random.default_rng([seed, num_classes, bits])
    off = ~torch.eye(num_classes, dtype=torch.bool)
    best, best_key = None, None
    for start in range(0, trials, 100):
        draws = rng.random((min(100, trials - start), num_classes, bits)).argsort(-1) < bits // 2
        codes = torch.from_numpy(np.where(draws, -1.0, 1.0).astype(np.float32))
        if num_classes == 1:
            return codes[0]
        dist = hamming_distances(codes)[:, off]
        smallest, mean = dist.amin(-1), dist.mean(-1)
        for i in range(len(codes)):
            key = (float(smallest[i]), float(mean[i]))
            if key[0] >= threshold and key[1] >= bits / 2:
                return codes[i]
            if best_key is None or key > best_key:
                best, best_key = codes[i], key
    get_logger().warning(f"no {num_classes} x {bits} random centers with min distance >= {threshold} and mean "
                         f">= {bits / 2} in {trials} draws; using the most spread draw (min {best_key[0]:.0f}, "
                         f"mean {best_key[1]:.2f})")
    return best


def hash_centers(num_classes: int, bits: int, seed: int = 0) -> torch.Tensor:
    """(C, K) centers in {-1,+1}: Hadamard rows, then their negations, then Bernoulli centers.

    CSQ takes the first C rows of H_K, or of [H_K; -H_K] when C > K. Like the centers shipped with TwDH we
    leave out the constant rows (all +1 and all -1), which are not balanced. So for C <= K-1 every pair is
    exactly K/2 apart, for C <= 2K-2 at least K/2 apart (K for a row and its negation); beyond that, or when
    K is not a power of two, the centers are random (:func:`bernoulli_centers`).
    """
    if num_classes < 1:
        raise ValueError(f"hash centers need at least one class, got {num_classes}")
    if bits >= 2 and not bits & (bits - 1):
        h = sylvester_hadamard(bits)[1:]
        rows = torch.cat([h, -h])
        if num_classes <= len(rows):
            return rows[:num_classes].clone()
    return bernoulli_centers(num_classes, bits, seed)


def tie_vector(seed: int, step: int, bits: int) -> torch.Tensor:
    """The batch's random {-1,+1} vector for tie bits, a pure function of (seed, step, bits).

    The reference draws it from the global torch RNG; a keyed draw is the same on every process and after
    a resume, and leaves the global RNG alone (spec §7.4).
    """
    draw = np.random.default_rng([seed, step, bits]).integers(0, 2, size=bits)
    return torch.from_numpy(np.where(draw == 1, 1.0, -1.0).astype(np.float32))


def center_targets(labels: torch.Tensor, centers: torch.Tensor, ties: torch.Tensor) -> torch.Tensor:
    """(B, C) multi-hot labels -> (B, K) targets: sign of the mean of the positive classes' centers.

    The sign of the sum is the sign of the mean and stays exact in float arithmetic; zero sums (ties) take
    ``ties``. A row without labels is all ties, so callers leave such rows out.
    """
    total = labels.float() @ centers.float()
    ties = ties.to(total).expand_as(total)
    return torch.where(total > 0, 1.0, torch.where(total < 0, -1.0, ties))


def pair_onehot(codes: torch.Tensor) -> torch.Tensor:
    """(B, K) codes in {-1,+1} -> (B, 2K) one-hot pairs: -1 -> (1, 0), +1 -> (0, 1) (spec §3.1)."""
    positive = (codes > 0).to(torch.float32)
    return torch.stack([1 - positive, positive], dim=-1).flatten(-2)


def map_centers(long_centers: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """(C, L) long centers -> (C, S) codes ``argmax_pairs(onehot(H^L) T)``.

    The lossless check of spec §3.5 compares them with the short centers.
    """
    return argmax_codes(pair_onehot(long_centers) @ transform.to(long_centers))


def save_codebook(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write centers and transforms as plain float32 arrays (safetensors: no pickle)."""
    save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(path))


def load_codebook(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a codebook written by :func:`save_codebook` (or converted from the reference's files)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.codebook: file '{path}' not found; give a .safetensors file with "
                                f"'long', 'short_<S>' and optionally 'transform_<S>' arrays, or null to generate them")
    return load_file(str(path))
