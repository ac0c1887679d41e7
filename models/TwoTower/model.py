"""TwoTower: the classic two-tower contrastive hashing baseline (BASELINE spec Part B).

Not a published method: a non-CLIP baseline whose towers, activation and supervision can be swapped. Each
modality has its own pretrained encoder (a transformers text model such as BERT; a torchvision ResNet or the
timm ViT), projection MLP, alignment projection and hash layer; the relaxed codes of the two modalities are
pulled together by a multi-positive InfoNCE, a quantisation term pushes them to +-1 and a bit-balance term keeps
each bit half +1, half -1 over a batch. Defaults follow the README and config of the reference project
zzzck/MyCMH (commit 4849a80); the spec states where this design departs from its code (§B8):

* positives are the items that share a label (multi-hot labels, not the reference's 1-D class ids), or, without
  labels, the items of the same instance (``models.losses.batch_similarity``); an item always is its own
  positive, so an unlabelled row of a labelled set behaves as in pairs-only training;
* the code InfoNCE is symmetric unless ``symmetric: false`` (the reference computes text -> image only);
* frozen towers stay in eval mode unless ``frozen_dropout: true`` (the reference only stops their gradients);
* binary codes are sign(z) with 0 -> +1.
"""
from __future__ import annotations

import torch
from torch import nn

from common.register import registry
from common.schema import NonNegativeFloat, PositiveFloat, PositiveInt
from models.base import HashModel
from models.heads import HashActivation, HashActivationKind
from models.losses import batch_similarity, bit_balance, multi_positive_infonce, sign_quantization

TOWERS = ("image", "text")


class TowerHead(nn.Module):
    """One modality's layers on top of its encoder (spec §B2): projection, alignment projection, hash layer.

    ``projection``: Linear(d, F) -> ReLU -> Dropout -> Linear(F, F) -> LayerNorm(F); ``align``: Linear(F, F),
    whose output f is the feature of the feature-level InfoNCE; ``hash``: Linear(F, 2K) -> ReLU -> Dropout ->
    Linear(2K, K) -> BatchNorm1d(K) gives z, and the activation the relaxed code h. PyTorch's default init.
    """

    def __init__(self, in_dim: int, feature_dim: int, bits: int, dropout: float, activation: HashActivation):
        super().__init__()
        self.projection = nn.Sequential(nn.Linear(in_dim, feature_dim), nn.ReLU(), nn.Dropout(dropout),
                                        nn.Linear(feature_dim, feature_dim), nn.LayerNorm(feature_dim))
        self.align = nn.Linear(feature_dim, feature_dim)
        self.hash = nn.Sequential(nn.Linear(feature_dim, 2 * bits), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(2 * bits, bits), nn.BatchNorm1d(bits))
        self.activation = activation

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature f, relaxed code h) of encoder outputs x."""
        feature = self.align(self.projection(x))
        return feature, self.activation(self.hash(feature))


@registry.register_model("TwoTower")
class TwoTower(HashModel):
    """A text tower and an image tower, each with its own projection and hash layer, trained with InfoNCE.

    Loss (spec §B3, in fp32): ``L = nce(h_t, h_v) + feature_weight * nce(f_t, f_v)
    + quantization_weight * (Q(h_t) + Q(h_v)) / 2 + balance_weight * (Bal(h_t) + Bal(h_v)) / 2``.

    Args:
        image_backbone: the image tower (``ResNet``, or ``ViT``): ``encode_image`` -> (B, embed_dim).
        text_backbone: the text tower (``TransformersText``): ``encode_text(text, text_mask)`` -> (B, embed_dim).
        bits: code length K.
        feature_dim: width F of the projections.
        activation: ``tanh``, ``sigmoid`` (2 sigmoid - 1) or ``gumbel`` (soft Gumbel-softmax in training).
        gumbel_temperature: the Gumbel-softmax temperature.
        temperature: tau of both InfoNCE terms.
        symmetric: code InfoNCE in both directions (false: text -> image only, as the reference).
        feature_weight: weight of the feature-level InfoNCE (0 switches it off).
        quantization_weight: weight of the quantisation term.
        balance_weight: weight of the bit-balance term.
        dropout: dropout in the projections and hash layers.
        freeze_image_encoder: the image tower gets no gradient (``model.freeze_backbone`` freezes both).
        freeze_text_encoder: the text tower gets no gradient.
        frozen_dropout: keep frozen towers in training mode, as the reference does (their dropout stays on and
            BatchNorm statistics move); by default they run in eval mode.
    """

    def __init__(self, image_backbone: nn.Module, text_backbone: nn.Module, bits: PositiveInt = 64,
                 feature_dim: PositiveInt = 512, activation: HashActivationKind = "tanh",
                 gumbel_temperature: PositiveFloat = 1.0, temperature: PositiveFloat = 0.07, symmetric: bool = True,
                 feature_weight: NonNegativeFloat = 1.0, quantization_weight: NonNegativeFloat = 0.1,
                 balance_weight: NonNegativeFloat = 0.01, dropout: NonNegativeFloat = 0.1,
                 freeze_image_encoder: bool = False, freeze_text_encoder: bool = False, frozen_dropout: bool = False):
        super().__init__(nn.ModuleDict({"image": image_backbone, "text": text_backbone}), bits)
        self.image_head = TowerHead(image_backbone.embed_dim, feature_dim, bits, dropout,
                                    HashActivation(activation, gumbel_temperature))
        self.text_head = TowerHead(text_backbone.embed_dim, feature_dim, bits, dropout,
                                   HashActivation(activation, gumbel_temperature))
        self.temperature, self.symmetric = temperature, symmetric
        self.term_weights = {"features": feature_weight, "quantization": quantization_weight, "balance": balance_weight}
        self.frozen_dropout = frozen_dropout
        self.frozen: set[str] = set()
        for tower, frozen in zip(TOWERS, (freeze_image_encoder, freeze_text_encoder)):
            if frozen:
                self.freeze_tower(tower)

    def freeze_tower(self, tower: str) -> None:
        """Stop the gradients of one tower (``image`` or ``text``); it runs in eval mode unless frozen_dropout."""
        self.backbone[tower].requires_grad_(False)
        self.frozen.add(tower)
        self.train(self.training)

    def freeze_backbone(self) -> None:
        """Both towers frozen (``model.freeze_backbone: true``, which the feature cache needs)."""
        super().freeze_backbone()
        for tower in TOWERS:
            self.freeze_tower(tower)

    def train(self, mode: bool = True):
        nn.Module.train(self, mode)  # HashModel.train would always put a frozen backbone in eval mode
        if not self.frozen_dropout:
            for tower in self.frozen:
                self.backbone[tower].eval()
        return self

    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone["image"].encode_image(image)

    def text_features(self, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        return self.backbone["text"].encode_text(text, text_mask)

    def encode_text(self, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        return self.hash_text(self.text_features(text, text_mask))

    def hash_image(self, features: torch.Tensor) -> torch.Tensor:
        return self.image_head(features)[1]

    def hash_text(self, features: torch.Tensor) -> torch.Tensor:
        return self.text_head(features)[1]

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Codes and alignment features of both modalities (from cached tower features when the batch has them)."""
        if "image_features" in batch:
            image, text = batch["image_features"], batch["text_features"]
        else:
            image, text = self.image_features(batch["image"]), self.text_features(batch["text"], batch["text_mask"])
        image_feature, image_code = self.image_head(image)
        text_feature, text_code = self.text_head(text)
        return {"image": image_code, "text": text_code, "image_feature": image_feature, "text_feature": text_feature}

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        with torch.autocast(outputs["image"].device.type, enabled=False):
            h_v, h_t, f_v, f_t = (outputs[k].float() for k in ("image", "text", "image_feature", "text_feature"))
            positives = batch_similarity(batch).bool() | torch.eye(len(h_v), dtype=torch.bool, device=h_v.device)
            terms = {
                "codes": multi_positive_infonce(h_t, h_v, positives, self.temperature, self.symmetric),
                "features": multi_positive_infonce(f_t, f_v, positives, self.temperature, self.symmetric),
                "quantization": 0.5 * (sign_quantization(h_t) + sign_quantization(h_v)),
                "balance": 0.5 * (bit_balance(h_t) + bit_balance(h_v)),
            }
            terms["total"] = terms["codes"] + sum(self.term_weights[k] * terms[k] for k in self.term_weights)
        return terms

    def extra_repr(self) -> str:
        head = self.image_head.activation
        return (f"bits={self.bits}, activation={head.kind}, temperature={self.temperature:g}, "
                f"symmetric={self.symmetric}, frozen={sorted(self.frozen) or 'none'}")
