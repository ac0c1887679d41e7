"""MITH: Multi-Granularity Interactive Transformer Hashing for Cross-modal Retrieval.

Liu, Wu, Zhang, Zhang and Lu, ACM MM 2023 (DOI 10.1145/3581783.3612411). Reference code:
DarrenZZhang/MM23-MITH (``hash_model.py``, ``train_asym.py``), followed where the copies differ; the
framework re-implementation kalenforn/clip-based-cross-modal-hash ``models/MITH`` was read for comparison.

Every CLIP token is used: the global token (image CLS, text EOT) goes through a teacher shared by both
modalities whose K concept scores are the global hash; the local tokens are grouped by those scores into K
concept tokens, refined by a small transformer and hashed one bit per concept (the student, one per
modality). The code of an item is ``sign(global hash + local hash)``. Training combines likelihood terms
against four memory banks of the whole training set, a quantisation term toward a shared binary target,
instance- and token-level contrast, and two-way teacher-student distillation (spec §3).

Deviations from the reference code (single-process results are unchanged):

* the memory banks are buffers saved in checkpoints (the reference keeps them in the trainer and loses
  them on restart), and under torchrun every process writes the rows of the whole global batch, so the
  banks stay identical across processes (the multi-GPU reference refreshes only its own rows);
* the K per-bit ``Linear(D, 1)`` layers are fused into one (K, D) weight (same init), which also works for a
  batch of one, where the reference's squeeze breaks;
* the likelihood's ``log(1 + exp(theta))`` is computed as ``softplus``, the same value without overflow;
* the training-set labels reach the model through its ``before_training`` hook; for data without labels
  an item is similar only to itself.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from common.register import registry
from common.schema import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from models.base import HashModel, TrainingContext
from models.losses import label_similarity
from models.MITH.head import GlobalConceptLearning, LocalConceptTransforming
from models.MITH.losses import bank_likelihood, distillation, instance_contrast, quantization, token_contrast

PAD_ID = 0  # the reference masks text ids equal to 0 (the tokenizer's padding) inside CLIP and in LTA
BANKS = ("image_local", "image_global", "text_local", "text_global")  # the reference draws them in this order


@registry.register_model("MITH")
class MITH(HashModel):
    """CLIP tokens -> shared teacher (global hash) + per-modality students (local hash); codes sign(sum).

    Args (paper symbols from the reference's argparse help in brackets):
        backbone: the CLIP backbone; all projected tokens are used.
        num_train: training-set size N, the rows of the memory banks (given by the runner).
        bits: code length K, also the number of concepts; at least ``top_k_label``.
        num_classes: label width (given by the runner); None for data without labels.
        top_k_label: concepts each local token may vote for in LTA.
        res_mlp_layers: residual blocks of the teacher's MLP (0 = none).
        transformer_layers: blocks of each student's transformer encoder.
        dropout: dropout inside the teacher's MLP.
        activation: ``gelu`` or ``relu`` inside the teacher's MLP.
        intra_weight: weight of the intra-modal likelihood on local codes.
        inter_weight: [beta] weight of the inter-modal likelihood on global codes.
        quant_weight: [gamma] weight of the quantisation term.
        contrast_weight: [delta] weight of the contrastive alignment.
        token_contrast_factor: [alpha] share of the token-level contrast inside it.
        distill_weight: [mu] weight of the distillation.
        teacher_share: [lambda] weight of the global codes in the binary target.
        temperature: InfoNCE temperature.
    """

    def __init__(self, backbone: nn.Module, num_train: int, bits: PositiveInt = 16, num_classes: int | None = None,
                 top_k_label: PositiveInt = 8, res_mlp_layers: NonNegativeInt = 2, transformer_layers: PositiveInt = 2,
                 dropout: NonNegativeFloat = 0.0, activation: Literal["gelu", "relu"] = "gelu",
                 intra_weight: NonNegativeFloat = 1.0, inter_weight: NonNegativeFloat = 10.0,
                 quant_weight: NonNegativeFloat = 8.0, contrast_weight: NonNegativeFloat = 50.0,
                 token_contrast_factor: NonNegativeFloat = 0.01, distill_weight: NonNegativeFloat = 1.0,
                 teacher_share: NonNegativeFloat = 0.99, temperature: PositiveFloat = 0.07):
        super().__init__(backbone, bits)
        if not 1 <= top_k_label <= bits:
            raise ValueError(f"model.top_k_label must be between 1 and model.bits={bits}, got {top_k_label}")
        if num_train < 1:
            raise ValueError(f"MITH needs the training-set size num_train >= 1 for its memory banks, got {num_train}")
        dim = backbone.embed_dim
        self.gcl = GlobalConceptLearning(dim, bits, res_mlp_layers, dropout, activation)
        self.image_lct = LocalConceptTransforming(dim, bits, transformer_layers, top_k_label)
        self.text_lct = LocalConceptTransforming(dim, bits, transformer_layers, top_k_label)
        self.image_proj = nn.Linear(dim, dim)
        self.text_proj = nn.Linear(dim, dim)
        for name in BANKS:  # four independent N(0, 1) draws, as the reference initialises them
            self.register_buffer(f"{name}_bank", torch.randn(num_train, bits))
        labels = None if num_classes is None else torch.zeros(num_train, num_classes)
        self.register_buffer("train_labels", labels, persistent=False)
        self._labels_ready = num_classes is None
        self.weights = {"intra": intra_weight, "inter": inter_weight, "quant": quant_weight,
                        "contrast": contrast_weight, "distill": distill_weight}
        self.token_contrast_factor = token_contrast_factor
        self.teacher_share = teacher_share
        self.temperature = temperature

    def before_training(self, context: TrainingContext) -> None:
        """Take the training labels, which every batch is compared with (after a resume too: they are data,
        not saved state)."""
        self.set_train_labels(context.train_labels)

    def set_train_labels(self, labels: torch.Tensor | None) -> None:
        """Store the (N, C) multi-hot labels of the training set, against which every batch is compared."""
        if self.train_labels is None:
            if labels is not None:
                raise ValueError("MITH was built without num_classes but received training labels")
            return
        if labels is None or tuple(labels.shape) != tuple(self.train_labels.shape):
            shape = None if labels is None else tuple(labels.shape)
            raise ValueError(f"MITH expects training labels of shape {tuple(self.train_labels.shape)} "
                             f"(num_train, num_classes), got {shape}")
        self.train_labels.copy_(labels)
        self._labels_ready = True

    # ------------------------------------------------------------------ encoding
    def _head(self, global_token: torch.Tensor, local_tokens: torch.Tensor, mask: torch.Tensor | None,
              lct: LocalConceptTransforming, proj: nn.Linear) -> dict[str, torch.Tensor]:
        feature, global_hash = self.gcl(global_token)
        with torch.no_grad():  # LTA's weights are constants; the reference detaches these scores
            scores = self.gcl(local_tokens)[1]
        concepts, local_hash = lct(local_tokens, scores, mask)
        return {"global": global_hash, "local": local_hash, "feature": F.normalize(feature, dim=-1),
                "concepts": F.normalize(proj(concepts), dim=-1)}

    def image_parts(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Global hash, local hash (B, K), instance feature (B, D) and concept tokens (B, K, D) of images."""
        cls, tokens = self.backbone.encode_image(image, return_tokens=True)
        return self._head(cls, tokens[:, 1:], None, self.image_lct, self.image_proj)

    def text_parts(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """As :meth:`image_parts` for texts. Padding is hidden inside CLIP; padding and EOT take no part in LTA."""
        pad = text == PAD_ID
        eot, tokens = self.backbone.encode_text(text, return_tokens=True, key_padding_mask=pad)
        eot_position = F.one_hot(text.argmax(dim=-1), text.shape[1]).bool()
        return self._head(eot, tokens, pad | eot_position, self.text_lct, self.text_proj)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        image, text = self.image_parts(batch["image"]), self.text_parts(batch["text"])
        return {**{f"image_{k}": v for k, v in image.items()}, **{f"text_{k}": v for k, v in text.items()}}

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        parts = self.image_parts(image)
        return parts["global"] + parts["local"]

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        parts = self.text_parts(text)
        return parts["global"] + parts["local"]

    # ------------------------------------------------------------------ loss
    def similarity(self, batch: dict) -> torch.Tensor:
        """(N, B): 1 where a training item shares a label with a batch item (for unlabelled data: is it)."""
        if self.train_labels is None:
            rows = torch.arange(len(self.image_local_bank), device=batch["index"].device)
            return (rows[:, None] == batch["index"][None, :]).float()
        if not self._labels_ready:
            raise RuntimeError("MITH compares each batch with the whole training set and has not been given its "
                               "labels: call before_training (the runner does) or set_train_labels first")
        return label_similarity(self.train_labels, batch["label"])

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        """The five weighted terms of spec §3.2 and their sum; first writes the batch rows of the banks."""
        out = {k: v.float() for k, v in outputs.items()}
        bank = {name: getattr(self, f"{name}_bank") for name in BANKS}
        with torch.no_grad():
            for name in BANKS:
                bank[name][batch["index"]] = out[name].detach()
        sim = self.similarity(batch)
        hvg, hvl, htg, htl = out["image_global"], out["image_local"], out["text_global"], out["text_local"]
        share = self.teacher_share
        target = torch.sign(share * hvg + (1 - share) * hvl + share * htg + (1 - share) * htl).detach()
        tau = self.temperature
        terms = {
            "intra": bank_likelihood(bank["image_local"], hvl, sim) + bank_likelihood(bank["text_local"], htl, sim),
            "inter": bank_likelihood(bank["image_global"], htg, sim) + bank_likelihood(bank["text_global"], hvg, sim),
            "quant": quantization(0.5 * hvg + 0.5 * hvl, target) + quantization(0.5 * htg + 0.5 * htl, target),
            "contrast": instance_contrast(out["image_feature"], out["text_feature"], tau)
            + self.token_contrast_factor * token_contrast(out["image_concepts"], out["text_concepts"], tau),
            "distill": (distillation(hvg, hvl) + distillation(htg, htl)) / len(hvg),
        }
        terms = {name: self.weights[name] * value for name, value in terms.items()}
        terms["total"] = sum(terms.values())
        return terms
