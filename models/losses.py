"""Loss pieces shared by several methods."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def label_similarity(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """S_ij = 1 if rows i of ``a`` and j of ``b`` share at least one label, else 0 (float)."""
    b = a if b is None else b
    return (a.float() @ b.float().t() > 0).float()


def shared_label_counts(batch: dict) -> torch.Tensor:
    """N = Y Y^T, the number of labels two items of a batch share; pair-only data (no ``label``) counts one
    shared label between an item and itself and none otherwise (the references' identity-label fallback)."""
    if "label" in batch:
        labels = batch["label"].float()
        return labels @ labels.t()
    index = batch["index"]
    return (index[:, None] == index[None, :]).float()


def batch_similarity(batch: dict) -> torch.Tensor:
    """Label similarity of a batch: 1 where two items share a label (or are the same pair-only item), else 0."""
    return (shared_label_counts(batch) > 0).float()


def sign_quantization(h: torch.Tensor) -> torch.Tensor:
    """mean((h - sign(h))^2) with the sign target detached: pulls relaxed codes toward +-1."""
    target = torch.where(h >= 0, 1.0, -1.0).to(h.dtype).detach()
    return (h - target).pow(2).mean()


def pair_quantization(pairs: torch.Tensor) -> torch.Tensor:
    """Q(P) = 1 - mean((2P - 1)^2) over two-way softmax outputs: 0 when every pair is one-hot."""
    return 1 - (2 * pairs - 1).pow(2).mean()


def ranking_gains(shared: torch.Tensor) -> torch.Tensor:
    """G_ij = (2^N_ij - 1) / Z_i with Z_i the ideal DCG of row i, discount log2(r + 1) at rank r (DIMCH spec §3.1).

    An anchor with no relevant item (Z_i = 0, NaN in the references) gets gain 0: it forms no triplet.
    """
    ideal = shared.sort(dim=1, descending=True).values
    discount = torch.log2(torch.arange(shared.shape[1], device=shared.device, dtype=shared.dtype) + 2)
    z = ((2 ** ideal - 1) / discount).sum(dim=1, keepdim=True)
    return (2 ** shared - 1) / torch.where(z > 0, z, torch.ones_like(z))


def weighted_triplet(distance: torch.Tensor, shared: torch.Tensor, margin: float) -> torch.Tensor:
    """DIMCH's label-weighted triplet loss (also UMoED's), averaged over the active triplets only.

    ``l_ijk = max(0, G_ij S_ij (1 - S_ik) (D_ij - D_ik + margin))`` with ``S = [N > 0]``, summed and divided by
    the number of triplets with ``l > 1e-16`` (plus 1e-16), as the reference code does.

    The reference builds the (B, B, B) tensor of all triplets, which does not fit for the global batch of many
    GPUs. Since ``G_ij >= 0``, ``l_ijk = G_ij max(0, D_ij + margin - D_ik)``: with each anchor's negatives sorted
    by distance, the sum over k is ``n_ij (D_ij + margin) - (sum of the n_ij nearest negatives)``, n_ij being the
    number of negatives closer than ``D_ij + margin``. That takes O(B^2) memory and gives the same value and
    gradient.

    Args:
        distance: (B, B'), row i an anchor of one modality, column j a candidate of the other.
        shared: (B, B') number of labels anchor i and candidate j share (N = Y Y^T).
        margin: the hinge margin.
    """
    relevant = shared > 0
    gain = ranking_gains(shared.to(distance.dtype)) * relevant
    negatives = distance.masked_fill(relevant, float("inf")).sort(dim=1).values  # non-negatives sort last
    nearest_sums = negatives.masked_fill(negatives.isinf(), 0.0).cumsum(dim=1)
    prefix = torch.cat([nearest_sums.new_zeros(len(nearest_sums), 1), nearest_sums], dim=1)  # [i, n]: n nearest
    reach = distance + margin  # l_ijk > 0 exactly where D_ik < reach_ij
    closer = torch.searchsorted(negatives.detach(), reach.detach())  # negatives strictly below reach_ij
    total = (gain * (closer * reach - prefix.gather(1, closer))).sum()
    # l_ijk > 1e-16 exactly where D_ik < reach_ij - 1e-16 / G_ij (anchors' non-relevant j have no triplet)
    strict = torch.where(relevant, reach.detach() - 1e-16 / gain.detach().clamp(min=1e-30), -float("inf"))
    active = torch.searchsorted(negatives.detach(), strict).sum()
    return total / (active + 1e-16)


def multi_positive_infonce(queries: torch.Tensor, keys: torch.Tensor, positives: torch.Tensor,
                           temperature: float, symmetric: bool = True) -> torch.Tensor:
    """InfoNCE with several positives per row (BASELINE spec §B3), on cosine logits s_ij = cos(q_i, k_j) / tau.

    ``L_q->k = -(1/B) sum_i log(sum_{j in P(i)} e^s_ij / sum_j e^s_ij)``; ``symmetric`` averages it with the
    same loss on s^T and P^T (keys as queries).

    Args:
        queries: (B, D), e.g. the text codes.
        keys: (B, D), e.g. the image codes.
        positives: (B, B) bool, True where key j is a positive of query i; every row needs one.
        temperature: tau.
        symmetric: both directions (else only queries -> keys, as the reference computes).
    """
    logits = F.normalize(queries, dim=1) @ F.normalize(keys, dim=1).t() / temperature

    def one_way(s: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return (torch.logsumexp(s, dim=1) - torch.logsumexp(s.masked_fill(~p, -torch.inf), dim=1)).mean()

    forward = one_way(logits, positives)
    return 0.5 * (forward + one_way(logits.t(), positives.t())) if symmetric else forward


def bit_balance(h: torch.Tensor) -> torch.Tensor:
    """(1/K) sum_k (mean_i h_ik)^2: 0 when every bit is +1 for half of the batch and -1 for the other half."""
    return h.mean(dim=0).pow(2).mean()
