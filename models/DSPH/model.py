"""DSPH: Deep Semantic-Aware Proxy Hashing for Multi-Label Cross-Modal Retrieval (Huo et al., IEEE TCSVT 34(1),
576-589, 2024, doi:10.1109/TCSVT.2023.3285266).

Reference code: QinLab-WFU/DSPH (original) and kalenforn/clip-based-cross-modal-hash ``models/DSPH``
(framework re-implementation). CLIP towers with one ``tanh(Dropout(Linear))`` hash head per modality and C
learnable class proxies shared by both modalities (trained by their own SGD). The HyP^2 loss pulls every
continuous code toward the proxies of its labels, pushes its cosine to the other proxies below a threshold
delta, and pushes apart, below the same delta, the codes of multi-label samples that share no label (within and
across modalities). delta is read from a coding-theory table: the cosine between the two closest of 2^j
optimally spread K-bit codewords, with 2^j >= C.

Deviations (none changes a result of the reference in normal use):

* C is the dataset's class count (``num_classes``, passed by the runner), not a config value defaulting to 24
  (original) or 80 (framework), spec §7.1.5.
* The proxies are drawn from a local generator seeded with ``proxy_seed`` (the reference's ``hypseed``)
  instead of resetting the global RNG (spec §7.1.1); they equal the framework's proxies, while the
  original's come from the CUDA generator (same distribution, other values).
* The code table ships as ``codetable.csv``: the minimum distances d behind the reference's ``codetable.xlsx``
  (entry = 1 - 2d/K) for K = 1..256 and 2^1..2^16 codewords. The column ceil(log2 C) is computed in integers;
  it equals the reference's floating-point ``math.ceil(math.log(C, 2))`` for every C below 70000.
  ``threshold`` overrides the table (the framework's ``HyP`` takes it as an argument too).
* A batch with no positive (or no negative) label entry gives 0 for that proxy term instead of NaN.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.register import registry
from common.schema import NonNegativeFloat, PositiveFloat, PositiveInt
from models.base import HashModel
from models.heads import TanhHashHead

CODE_TABLE = Path(__file__).with_name("codetable.csv")


@functools.lru_cache(maxsize=None)
def _min_distances() -> dict[int, tuple[int, ...]]:
    """bits -> (d for 2^1, 2^2, ... codewords), read once from ``codetable.csv``."""
    rows = [line for line in CODE_TABLE.read_text().splitlines() if line and not line.startswith("#")]
    return {int(row.split(",")[0]): tuple(int(d) for d in row.split(",")[1:]) for row in rows[1:]}


def code_threshold(bits: int, num_classes: int) -> float:
    """delta = 1 - 2d/K, d the best minimum distance of 2^ceil(log2 C) codewords of length K (spec §3.3)."""
    column = (num_classes - 1).bit_length()  # ceil(log2 C) for C >= 2
    distances = _min_distances().get(bits, ())
    if not 1 <= column <= len(distances):
        raise ValueError(f"DSPH's code table has no threshold for model.bits={bits} with {num_classes} classes "
                         f"(2^{column} codewords; it covers 1-256 bits, 2^1..2^min(bits,16) codewords); set "
                         f"model.threshold to a cosine in [-1, 1]")
    return 1.0 - 2.0 * distances[column - 1] / bits


def init_proxies(num_classes: int, bits: int, seed: int) -> torch.Tensor:
    """(C, K) proxies ~ N(0, 2/C): ``randn`` then ``kaiming_normal_(fan_out)`` on one generator, as the framework."""
    gen = torch.Generator().manual_seed(seed)
    proxies = torch.randn(num_classes, bits, generator=gen)
    return nn.init.kaiming_normal_(proxies, mode="fan_out", generator=gen)


def proxy_terms(codes: torch.Tensor, proxies: torch.Tensor, labels: torch.Tensor,
                threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(Lpos, Lneg) of one modality (spec §3.2), each averaged over its label entries of the whole batch."""
    cos = F.normalize(codes, dim=1) @ F.normalize(proxies, dim=1).t()
    pos, neg = labels == 1, labels == 0
    pos_term = (1 - cos)[pos].sum() / pos.sum().clamp(min=1)
    neg_term = torch.relu(cos - threshold)[neg].sum() / neg.sum().clamp(min=1)
    return pos_term, neg_term


def irrelevant_terms(image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, threshold: float,
                     alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Rvv, Rtt, Rvt) of spec §3.2 over ordered pairs of samples with >= 2 labels and no shared label."""
    multi = labels.sum(dim=1) > 1
    y = labels[multi]
    unrelated = y @ y.t() == 0
    if not unrelated.any():
        zero = image.new_zeros(())
        return zero, zero, zero
    x, t = F.normalize(image[multi], dim=1), F.normalize(text[multi], dim=1)
    count = unrelated.sum()
    return tuple(alpha * torch.relu(a @ b.t() - threshold)[unrelated].sum() / count
                 for a, b in ((x, x), (t, t), (x, t)))


@registry.register_model("DSPH")
class DSPH(HashModel):
    """CLIP + per-modality tanh hash heads, trained against C learnable class proxies with the HyP^2 loss.

    Args:
        backbone: the CLIP backbone (projected CLS / EOT embeddings are hashed).
        bits: code length K.
        num_classes: C, the number of proxies (passed by the runner).
        alpha: weight of the three irrelevant-pair terms (0 switches them off).
        dropout: dropout rate on the hash heads' pre-activations.
        threshold: cosine margin delta; None reads it from the code table for (bits, num_classes).
        proxy_seed: seed of the proxies' initialisation (the reference's ``hypseed``).
        proxy_lr: learning rate of the proxies' SGD (constant).
        proxy_momentum: momentum of that SGD.
        proxy_weight_decay: weight decay of that SGD.
    """

    def __init__(self, backbone: nn.Module, bits: PositiveInt = 16, num_classes: int | None = None,
                 alpha: NonNegativeFloat = 0.8, dropout: NonNegativeFloat = 0.2, threshold: float | None = None,
                 proxy_seed: int = 0, proxy_lr: PositiveFloat = 0.02, proxy_momentum: NonNegativeFloat = 0.9,
                 proxy_weight_decay: NonNegativeFloat = 0.0005):
        super().__init__(backbone, bits)
        if num_classes is None or num_classes < 2:
            raise ValueError(f"DSPH needs labelled data with at least 2 classes (num_classes), got {num_classes}")
        if threshold is not None and not -1 <= threshold <= 1:
            raise ValueError(f"model.threshold must be a cosine in [-1, 1] or null (code table), got {threshold}")
        dim = backbone.embed_dim
        self.image_hash, self.text_hash = TanhHashHead(dim, bits, dropout), TanhHashHead(dim, bits, dropout)
        self.proxies = nn.Parameter(init_proxies(num_classes, bits, proxy_seed))
        self.threshold = code_threshold(bits, num_classes) if threshold is None else float(threshold)
        self.alpha = alpha
        self.proxy_lr, self.proxy_momentum, self.proxy_weight_decay = proxy_lr, proxy_momentum, proxy_weight_decay

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        if "label" not in batch:
            raise ValueError("DSPH needs class labels: the dataset gives none (pair-only data)")
        x, t = outputs["image"].float(), outputs["text"].float()
        labels = batch["label"].float()
        terms = {}
        terms["image_pos"], terms["image_neg"] = proxy_terms(x, self.proxies, labels, self.threshold)
        terms["text_pos"], terms["text_neg"] = proxy_terms(t, self.proxies, labels, self.threshold)
        terms["irrelevant_ii"], terms["irrelevant_tt"], terms["irrelevant_it"] = irrelevant_terms(
            x, t, labels, self.threshold, self.alpha)
        terms["total"] = sum(terms.values())
        return terms

    def build_extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """SGD on the proxies (spec §4.1), apart from the optimiser of the rest."""
        return {"proxies": torch.optim.SGD([self.proxies], lr=self.proxy_lr, momentum=self.proxy_momentum,
                                           weight_decay=self.proxy_weight_decay)}

    def extra_repr(self) -> str:
        return f"bits={self.bits}, classes={self.proxies.shape[0]}, threshold={self.threshold:g}, alpha={self.alpha}"
