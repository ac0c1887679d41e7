"""WCH: Weighted Contrastive Hashing (Yu, Qiu, Chen, Zhang, ACCV 2022, arXiv 2209.14099).

Unsupervised single-modal image hashing. Two augmentations of each image go through one ViT; their patch
tokens attend to each other without parameters (mutual attention), the batch's patch-level similarities
become soft targets, and a straight-through hash head is trained with a contrastive cross-entropy against
those targets plus a bit regulariser. Facts: ``specs/methods/WCH.md``; reference code: ``RosieYuu/WCH``
(official), ``DimpleCrq/WCH`` and ``Huenao/DPCHash_Baselines`` (third-party copies).

Where the official code and the copies or a natural reading differ (spec §15), each choice is an option
with the official code as default: ``weight_norm`` (column-wise division of the weights), ``detach_weights``
(the weights carry gradients), ``alpha_distill`` (a weight on the off-diagonal targets, 1 in the code), and
the three temperatures. The inert ``alpha = 0.1`` of every WCH repository is not a key: nothing reads it.
"""
from __future__ import annotations

import torch
from torch import nn

from common.register import registry
from common.schema import NonNegativeFloat, PositiveFloat, PositiveInt
from models.base import HashModel
from models.heads import kaiming_fan_out_
from models.WCH.losses import (WeightNorm, bit_regularizer, mutual_attention, patch_similarity, similarity_weights,
                               straight_through_sign, weighted_contrastive)


class WCHHead(nn.Module):
    """Global descriptor to relaxed code: LayerNorm (eps 1e-6), Linear, ReLU, Linear, tanh (spec §7).

    The two Linear layers get Kaiming-uniform fan-out weights and standard-normal biases, as the official
    code initialises them.
    """

    def __init__(self, dim: int, bits: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc = kaiming_fan_out_(nn.Linear(dim, hidden))
        self.hash = kaiming_fan_out_(nn.Linear(hidden, bits))
        nn.init.normal_(self.fc.bias)
        nn.init.normal_(self.hash.bias)

    def forward(self, descriptor: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.hash(torch.relu(self.fc(self.norm(descriptor)))))


@registry.register_model("WCH")
class WCH(HashModel):
    """ViT patch tokens -> mutual attention -> mean -> hash head; codes are the sign of the head's output.

    Args:
        backbone: a ViT with ``image_tokens`` (every token after the final LayerNorm; the CLS token is dropped).
        bits: code length K.
        hidden: width of the head's hidden layer.
        tau_m: temperature of the mutual attention.
        tau_w: temperature of the similarity weights.
        tau_c: temperature of the code logits.
        weight_norm: ``column`` (official: W[n, m] = p[n, m] / p[m, m]) or ``row`` (p[n, m] / p[n, n]).
        detach_weights: stop the gradient through the weights (the official code lets it reach the backbone).
        alpha_distill: multiplier on the off-diagonal (patch-similarity) targets; 1 is the official code.
    """

    def __init__(self, backbone: nn.Module, bits: PositiveInt = 64, hidden: PositiveInt = 1024,
                 tau_m: PositiveFloat = 1.0, tau_w: PositiveFloat = 0.2, tau_c: PositiveFloat = 0.3,
                 weight_norm: WeightNorm = "column", detach_weights: bool = False,
                 alpha_distill: NonNegativeFloat = 1.0):
        super().__init__(backbone, bits)
        self.head = WCHHead(backbone.embed_dim, bits, hidden)
        self.tau_m, self.tau_w, self.tau_c = tau_m, tau_w, tau_c
        self.weight_norm, self.detach_weights, self.alpha_distill = weight_norm, detach_weights, alpha_distill

    def patch_tokens(self, image: torch.Tensor) -> torch.Tensor:
        """(B, N, D) patch tokens after the ViT's final LayerNorm, CLS dropped."""
        return self.backbone.image_tokens(image)[:, 1:]

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Both views through the ViT in one pass, mutual attention, then codes of the attended tokens' means."""
        z1, z2 = self.patch_tokens(torch.cat([batch["image"], batch["image2"]])).chunk(2)
        z1, z2 = mutual_attention(z1, z2, self.tau_m)
        return {"patches1": z1, "patches2": z2,
                "codes1": straight_through_sign(self.head(z1.mean(dim=1))),
                "codes2": straight_through_sign(self.head(z2.mean(dim=1)))}

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        weights = similarity_weights(patch_similarity(outputs["patches1"], outputs["patches2"]), self.tau_w,
                                     self.weight_norm)
        if self.detach_weights:
            weights = weights.detach()
        h1, h2 = outputs["codes1"].float(), outputs["codes2"].float()
        terms = {"contrastive": weighted_contrastive(h1, h2, weights, self.tau_c, self.alpha_distill),
                 "bits": bit_regularizer(h1)}
        terms["total"] = terms["contrastive"] + terms["bits"]
        return terms

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Relaxed codes of single images: the plain mean of the patch tokens (no mutual attention, which needs
        two views) through the head (spec §9)."""
        return self.head(self.patch_tokens(image).mean(dim=1))
