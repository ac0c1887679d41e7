"""Exact integer products: the form codes and labels take on a device, and the one product that turns it into
Hamming distances and shared-label counts.

Its own module because every other part builds on it: the input checks store data in this form, the chunk engine
and :func:`~common.metrics.hashing.hamming_distance` multiply it, caption recall scores codes with it.

Distances and shared-label counts are exact integer products: codes are stored as 0/1 bit halves so that one
product yields the Hamming distance directly; on CPU the products run as int8 GEMMs with int32 accumulation
(``torch._int_mm``), elsewhere in float32 (exact for these small integers), with autocast off.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _product_dtype(device: torch.device) -> torch.dtype:
    """int8 on CPU (exact int32 GEMM, about 5x faster than float32 there); float32 elsewhere, which is also
    exact for 0/1 entries and sums below 2^24."""
    return torch.int8 if device.type == "cpu" else torch.float32


def _products(a: Tensor, b: Tensor) -> Tensor:
    """Exact dot products of all rows of a with all rows of b (int32 on CPU, float32 elsewhere).

    Autocast is switched off: inside a caller's mixed-precision region a half-precision product would round
    the inner products of long codes.
    """
    if a.dtype == torch.int8:
        return torch._int_mm(a, b.T)
    with torch.autocast(device_type=a.device.type, enabled=False):
        return a @ b.T


def _bit_halves(codes: Tensor, side: str, dtype: torch.dtype) -> Tensor:
    """Codes as 0/1 bit halves whose product is the Hamming distance: [b, 1 - b] for the query side and
    [1 - b, b] for the database side (b = code > 0), so <q, x> = sum b_q (1 - b_x) + (1 - b_q) b_x."""
    bits = codes > 0
    halves = torch.cat((bits, ~bits) if side == "query" else (~bits, bits), 1)
    return halves.view(torch.int8) if dtype == torch.int8 else halves.to(dtype)  # a bool is a 0/1 byte
