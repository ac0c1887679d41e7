"""The CLIP hashing baseline of kalenforn/clip-based-cross-modal-hash (``Baseline``), fixed so it runs.

CLIP towers, one tanh MLP per modality, a DPSH-style pairwise likelihood loss on the relaxed codes and a
small quantisation term. The committed reference routes text through the image MLP; we use separate MLPs
and offer ``share_hash_mlp: true`` to reproduce the committed behaviour.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.register import registry
from common.schema import NonNegativeFloat, PositiveInt
from models.base import HashModel
from models.heads import MLPHashHead
from models.losses import batch_similarity, sign_quantization


def likelihood_loss(a: torch.Tensor, b: torch.Tensor, sim: torch.Tensor) -> torch.Tensor:
    """-(1/B^2) sum[S theta - log(1 + e^theta)], theta = clamp(a_i . b_j / 2, -64, 64)."""
    theta = (a @ b.t() / 2).clamp(-64, 64)
    return -(sim * theta - F.softplus(theta)).mean()


@registry.register_model("CLIPBaseline")
class CLIPBaseline(HashModel):
    """CLIP + tanh MLP hash heads + pairwise likelihood and quantisation losses."""

    def __init__(self, backbone: nn.Module, bits: PositiveInt = 16, hidden: PositiveInt = 256,
                 dropout: NonNegativeFloat = 0.3, quan_alpha: NonNegativeFloat = 0.001, share_hash_mlp: bool = False):
        super().__init__(backbone, bits)
        dim = backbone.embed_dim
        self.image_hash = MLPHashHead(dim, bits, hidden, dropout)
        self.text_hash = self.image_hash if share_hash_mlp else MLPHashHead(dim, bits, hidden, dropout)
        self.quan_alpha = quan_alpha

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        hv, ht = outputs["image"].float(), outputs["text"].float()
        sim = batch_similarity(batch)
        pair = (likelihood_loss(hv, ht, sim) + likelihood_loss(ht, hv, sim.t())) / 2
        quant = (sign_quantization(hv) + sign_quantization(ht)) / 2
        return {"pair": pair, "quant": quant, "total": pair + self.quan_alpha * quant}
