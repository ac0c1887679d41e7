"""DNPH: Deep Neighborhood-aware Proxy Hashing with Uniform Distribution Constraint for Cross-modal Retrieval
(Huo et al., ACM TOMM 20(6), 2024, doi:10.1145/3643639).

Reference code: QinLab-WFU/OUR-DNPH (original) and kalenforn/clip-based-cross-modal-hash ``models/DNPH``
(framework re-implementation). CLIP towers with one ``tanh(Dropout(Linear))`` hash head and one linear
classifier per modality. The loss has three parts: a softmax over negative squared distances from each
L2-normalised code to C shared class proxies, with a margin on the code's own classes; cross-entropy of both
classifiers on the lowest-index label; and a uniform-distribution term that matches the batch codes to fresh
random hypercube vertices with the Hungarian algorithm and maximises their inner products.

Deviations and options:

* The classifiers have ``num_classes`` outputs (the framework always builds 80, spec §7.1.2).
* Proxies stay at their random initialisation as in the original, whose optimiser is never stepped;
  ``update_proxies: true`` trains them by SGD (``proxy_lr``) like the framework.
* ``head_init: kaiming`` gives the framework's Kaiming-uniform fan_out init of hash heads and classifiers
  (the original uses PyTorch's default).
* The squared distance is computed as ``2 - 2 cos`` (equal to the reference's ``cdist ** 2`` for unit
  vectors, without its square root).
* The random vertices come from numpy's global RNG as in the reference; the runner seeds it identically on
  every rank and checkpoints it, so all ranks draw the same vertices for the gathered batch and a resumed run
  continues the same stream.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from torch import nn

from common.register import registry
from common.schema import NonNegativeFloat, PositiveFloat, PositiveInt
from models.base import HashModel
from models.heads import TanhHashHead, kaiming_fan_out_


def proxy_loss(codes: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, margin: float) -> torch.Tensor:
    """Neighborhood-aware proxy term (spec §3.2): summed over a row's positive classes, averaged over rows."""
    dist = 2 - 2 * F.normalize(codes, dim=-1) @ F.normalize(proxies, dim=-1).t()
    log_prob = F.log_softmax(-(dist + margin * labels), dim=1)
    return -(labels * log_prob).sum(1).mean()


def classification_loss(image_logits: torch.Tensor, text_logits: torch.Tensor,
                        labels: torch.Tensor) -> torch.Tensor:
    """CE of both classifiers on the lowest-index positive class (the reference's ``argmax`` of the labels)."""
    target = labels.argmax(dim=1)
    return F.cross_entropy(image_logits, target) + F.cross_entropy(text_logits, target)


def random_vertices(batch: int, bits: int) -> np.ndarray:
    """``batch`` vertices of the {-1,+1}^bits cube, drawn from numpy's global RNG exactly as the reference."""
    vertices = np.random.randint(0, 2, size=(batch, bits))
    vertices[vertices == 0] = -1
    return vertices


def matched_vertices(codes: torch.Tensor, vertices: np.ndarray) -> torch.Tensor:
    """Row i gets the vertex assigned to code i by the minimum-total-Euclidean-distance matching."""
    cost = cdist(codes.detach().cpu().double().numpy(), vertices.astype(np.float64))
    _, columns = linear_sum_assignment(cost)
    return torch.from_numpy(vertices[columns]).to(device=codes.device, dtype=codes.dtype)


def uniform_term(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """L_u of spec §3.4: one vertex set per step, matched to each modality independently (targets constant)."""
    vertices = random_vertices(*image.shape)
    return ((image * matched_vertices(image, vertices)).sum(1).mean()
            + (text * matched_vertices(text, vertices)).sum(1).mean())


@registry.register_model("DNPH")
class DNPH(HashModel):
    """CLIP + per-modality tanh hash heads and classifiers, trained against shared class proxies.

    Args:
        backbone: the CLIP backbone (projected CLS / EOT embeddings are hashed and classified).
        bits: code length K.
        num_classes: C, the size of the proxies and classifiers (passed by the runner).
        margin: additive margin on a code's distances to its own classes' proxies.
        noise_alpha: weight eta of the uniform-distribution term (subtracted).
        dropout: dropout rate on the hash heads' pre-activations.
        update_proxies: train the proxies by SGD (framework) instead of keeping them fixed (original).
        proxy_lr: learning rate of that SGD.
        head_init: ``default`` (PyTorch's Linear init, original) or ``kaiming`` (fan_out, framework).
    """

    def __init__(self, backbone: nn.Module, bits: PositiveInt = 16, num_classes: int | None = None,
                 margin: NonNegativeFloat = 1.0, noise_alpha: NonNegativeFloat = 0.1, dropout: NonNegativeFloat = 0.2,
                 update_proxies: bool = False, proxy_lr: PositiveFloat = 0.0001,
                 head_init: Literal["default", "kaiming"] = "default"):
        super().__init__(backbone, bits)
        if num_classes is None or num_classes < 2:
            raise ValueError(f"DNPH needs num_classes >= 2 (a dataset with class labels), got {num_classes}")
        dim = backbone.embed_dim
        self.image_hash, self.text_hash = TanhHashHead(dim, bits, dropout), TanhHashHead(dim, bits, dropout)
        self.image_classifier, self.text_classifier = nn.Linear(dim, num_classes), nn.Linear(dim, num_classes)
        if head_init == "kaiming":
            for layer in (self.image_hash.fc, self.text_hash.fc, self.image_classifier, self.text_classifier):
                kaiming_fan_out_(layer)
        self.proxies = nn.Parameter(torch.randn(num_classes, bits) / 8, requires_grad=update_proxies)
        self.margin, self.noise_alpha, self.proxy_lr = margin, noise_alpha, proxy_lr

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        image = self.backbone.encode_image(batch["image"])
        text = self.backbone.encode_text(batch["text"])
        return {"image": self.image_hash(image), "text": self.text_hash(text),
                "image_logits": self.image_classifier(image), "text_logits": self.text_classifier(text)}

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_hash(self.backbone.encode_image(image))

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        return self.text_hash(self.backbone.encode_text(text))

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        if "label" not in batch:
            raise ValueError("DNPH needs class labels: the dataset gives none (pair-only data)")
        x, t = outputs["image"].float(), outputs["text"].float()
        labels = batch["label"].float()
        terms = {
            "proxy": proxy_loss(torch.cat([x, t]), torch.cat([labels, labels]), self.proxies, self.margin),
            "cls": classification_loss(outputs["image_logits"].float(), outputs["text_logits"].float(), labels),
            "uniform": uniform_term(x, t),
        }
        terms["total"] = terms["proxy"] + terms["cls"] - self.noise_alpha * terms["uniform"]
        return terms

    def build_extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """SGD on the proxies when ``update_proxies``; fixed proxies (the original's behaviour) need none."""
        return {"proxies": torch.optim.SGD([self.proxies], lr=self.proxy_lr)} if self.proxies.requires_grad else {}
