"""Tie statistics: expected hits and expected AP over a uniformly random order inside every group of equal
distance (He et al., CVPR 2018; spec section 6).

Hamming distances take only K + 1 values, so ties are massive; the tie-aware metrics need only per-query
histograms of (distance, relevant) counts: O(K) work per query, no ranking at all. Sums of 1/rank over a tie
group reduce to differences of harmonic numbers, and the boundary group at a cut-off to a hypergeometric sum.
"""
from __future__ import annotations

import torch
from torch import Tensor

from common.metrics.engine import _Block


def _harmonic(n_max: int, device: torch.device) -> Tensor:
    """H[m] = 1 + 1/2 + ... + 1/m with H[0] = 0 (float64): sums of 1/rank over a run of ranks in O(1)."""
    h = torch.zeros(n_max + 1, dtype=torch.float64, device=device)
    h[1:] = torch.arange(1, n_max + 1, dtype=torch.float64, device=device).reciprocal_().cumsum_(0)
    return h


def _expected_group_sum(harmonic: Tensor, before: Tensor, rel_before: Tensor, slots: Tensor, hits: Tensor) -> Tensor:
    """E[sum of r_k * P@k] over `slots` ranks that follow `before` items (`rel_before` of them relevant).

    The slots hold `hits` relevant items in uniformly random order. Slot j is relevant with probability
    hits/slots and then has, in expectation, (j - 1)(hits - 1)/(slots - 1) relevant items before it inside the
    run (spec section 6). The sums over j of 1/(before + j) and (j - 1)/(before + j) reduce to differences of
    harmonic numbers, so the cost is O(1) per run.
    """
    a = harmonic[(before + slots).long()] - harmonic[before.long()]
    b = slots - (before + 1) * a
    within = torch.where(slots > 1, (hits - 1) / (slots - 1).clamp(min=1), torch.zeros_like(slots))
    return hits / slots.clamp(min=1) * ((rel_before + 1) * a + within * b)


def _log_comb(n: Tensor, k: Tensor) -> Tensor:
    return torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)


class _TieStats:
    """Tie-group statistics of a block: sizes, relevant counts and cumulative counts per distance."""

    def __init__(self, block: _Block, harmonic: Tensor | None = None):
        self.n, self.r = block.histogram()
        self.cum_n = self.n.cumsum(1)
        self.cum_r = self.r.cumsum(1)
        self.harmonic = harmonic

    def group_sums(self) -> Tensor:
        """Expected contribution of every tie group to sum_k r_k * P@k over the full ranking (needs the
        harmonic numbers)."""
        return _expected_group_sum(self.harmonic, self.cum_n - self.n, self.cum_r - self.r, self.n, self.r)

    def boundary(self, ks: Tensor) -> tuple[Tensor, ...]:
        """For cut-offs ks (rows x m): index of the tie group holding rank k, and its before/size/relevant
        counts plus the number t of its slots that fall inside the top k."""
        group = torch.searchsorted(self.cum_n, ks, side="left").clamp_(max=self.n.shape[1] - 1)
        size = self.n.gather(1, group)
        relevant = self.r.gather(1, group)
        before = self.cum_n.gather(1, group) - size
        rel_before = self.cum_r.gather(1, group) - relevant
        return group, before, rel_before, size, relevant, ks - before


def _expected_hits(stats: _TieStats, ks: Tensor) -> Tensor:
    """E[n_k]: all relevant items of earlier groups plus the share t * r / n of the boundary group."""
    _, _, rel_before, size, relevant, inside = stats.boundary(ks)
    return rel_before + inside * relevant / size.clamp(min=1)


def _expected_ap_nk(stats: _TieStats, k: int) -> Tensor:
    """E[s_k / n_k] (variant standard at cut-off k) under random order inside tie groups.

    Groups before the boundary group lie wholly in the top k, so only the number h of relevant items in the
    boundary group's t top slots is random: h is hypergeometric, and given h the expected sum is
    _expected_group_sum over t slots with h hits.
    """
    rows = stats.n.shape[0]
    ks = torch.full((rows, 1), float(k), dtype=torch.float64, device=stats.n.device)
    group, before, rel_before, size, relevant, inside = stats.boundary(ks)
    groups = torch.arange(stats.n.shape[1], device=group.device)
    earlier = (stats.group_sums() * (groups[None, :] < group)).sum(1, keepdim=True)
    h_max = int(torch.minimum(relevant, inside).max().item())
    h = torch.arange(h_max + 1, dtype=torch.float64, device=group.device)[None, :]
    feasible = (h <= relevant) & (inside - h >= 0) & (inside - h <= size - relevant)
    log_p = (
        _log_comb(relevant, torch.minimum(h, relevant))
        + _log_comb(size - relevant, torch.minimum((inside - h).clamp(min=0), size - relevant))
        - _log_comb(size, inside)
    )
    prob = torch.where(feasible, log_p.exp(), torch.zeros_like(log_p))
    total = earlier + _expected_group_sum(stats.harmonic, before, rel_before, inside, h)
    found = rel_before + h
    value = torch.where(found > 0, total / found.clamp(min=1), torch.zeros_like(total))
    return (prob * value).sum(1)
