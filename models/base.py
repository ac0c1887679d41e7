"""The model contract every method implements.

A method is a :class:`HashModel` subclass registered with ``@registry.register_model(NAME)``. The runner
only ever calls the methods below, so a new method needs nothing else from the framework:

* ``forward(batch)`` -> dict of training outputs (first dimension = batch; the runner gathers them across
  processes before the loss, so pairwise losses see the global batch);
* ``loss(outputs, batch)`` -> dict of named terms plus ``total`` (every term is logged);
* ``encode_image`` / ``encode_text`` -> continuous codes, ``binarize`` -> {-1,+1} codes (B, bits); by
  default a model only defines ``image_hash`` / ``text_hash`` modules, applied to the backbone's pooled
  features (``image_features`` / ``text_features``), which also lets it train from cached features;
* ``param_groups()`` -> which parameters are backbone (small lr) and which are head (large lr);
* ``extra_optimizers()`` -> optimisers of auxiliary state that trains apart from the main optimiser
  (e.g. class proxies); the runner steps them and saves them with checkpoints;
* ``before_training(context)`` -> a hook run once before the first epoch (and after a resume), with what a
  method may need beyond a batch (:class:`TrainingContext`: the data with the training labels, the device,
  the run directory, the logger); MITH takes the training labels there, TwDH fits its transforms.

Auxiliary state (memory banks, proxies, centers) lives in parameters or buffers, so it is saved and
restored with the model's ``state_dict``.
"""
from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from common.config import Section, build
from common.register import registry
from common.schema import Field
from dataset.tokenizers import text_inputs


@dataclass
class Preprocess:
    """What the data pipeline needs to know about a model: image geometry and the tokenizer (None for a model
    without a text tower, which only single-modal data serves)."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    tokenizer: Callable[[list[str]], torch.Tensor | dict[str, torch.Tensor]] | None

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The text inputs of captions, as ``model.encode_text(**preprocess.tokenize(texts))`` takes them."""
        if self.tokenizer is None:
            raise ValueError("this model encodes images only; it has no tokenizer for captions")
        return text_inputs(self.tokenizer(texts))


@dataclass
class TrainingContext:
    """What :meth:`HashModel.before_training` receives.

    Attributes:
        data: the dataset's splits (``data.train.labels`` are the training labels, None for label-free data).
        device: where the model lives.
        run_dir: the run directory on the process that writes (rank 0), else None (also when nothing is
            saved).
        logger: the run's logger.
    """

    data: object
    device: torch.device
    run_dir: Path | None
    logger: logging.Logger

    @property
    def train_labels(self) -> torch.Tensor | None:
        return self.data.train.labels


class HashModel(nn.Module, metaclass=abc.ABCMeta):
    """Base class of every hashing model. Subclasses take ``bits`` and their backbone(s) as arguments."""

    def __init__(self, backbone: nn.Module, bits: int):
        super().__init__()
        if bits <= 0:
            raise ValueError(f"model.bits must be a positive integer, got {bits}")
        self.backbone = backbone
        self.bits = bits

    def before_training(self, context: TrainingContext) -> None:
        """Prepare what training needs beyond a batch; called before the first epoch and after a resume.

        Nothing by default. Under torchrun every process calls it; state it computes must come out the same
        on every rank (or be broadcast with ``utils.distributed.broadcast``).
        """

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Training outputs; a batch of cached backbone features (``run.feature_cache``) skips the backbone."""
        if "image_features" in batch:
            return {"image": self.hash_image(batch["image_features"]),
                    "text": self.hash_text(batch["text_features"])}
        return {"image": self.encode_image(batch["image"]), "text": self.encode_text(**text_inputs(batch))}

    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        """What the hash head reads from the image tower (the feature cache stores exactly this)."""
        return self.backbone.encode_image(image)

    def text_features(self, text: torch.Tensor) -> torch.Tensor:
        """What the hash head reads from the text tower (the feature cache stores exactly this)."""
        return self.backbone.encode_text(text)

    @property
    def supports_feature_cache(self) -> bool:
        """True for models split into ``*_features`` (backbone) and ``hash_image`` / ``hash_text`` (head)."""
        overridden = type(self).hash_image is not HashModel.hash_image
        return overridden or (isinstance(getattr(self, "image_hash", None), nn.Module)
                              and isinstance(getattr(self, "text_hash", None), nn.Module))

    def freeze_backbone(self) -> None:
        """Train only the heads: backbone weights get no gradient and the backbone stays in eval mode."""
        self.backbone.requires_grad_(False)
        self.backbone_frozen = True
        self.backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self, "backbone_frozen", False):
            self.backbone.eval()
        return self

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Continuous (training-form) image codes: the head on the backbone features."""
        return self.hash_image(self.image_features(image))

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        """Continuous (training-form) text codes: the head on the backbone features."""
        return self.hash_text(self.text_features(text))

    def hash_image(self, features: torch.Tensor) -> torch.Tensor:
        """The image head; by convention the ``image_hash`` module (models without one override encode_image)."""
        return self.image_hash(features)

    def hash_text(self, features: torch.Tensor) -> torch.Tensor:
        """The text head; by convention the ``text_hash`` module."""
        return self.text_hash(features)

    def binarize(self, out: torch.Tensor) -> torch.Tensor:
        """Default rule for tanh-like outputs: +1 where out >= 0, else -1 (never 0)."""
        return torch.where(out >= 0, 1.0, -1.0).to(out.dtype)

    @abc.abstractmethod
    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        """Named loss terms plus ``total``, from ``forward``'s outputs and the (global) batch."""

    def param_groups(self) -> list[dict]:
        """Backbone parameters in one group, everything else in the other (separate learning rates).

        Parameters that an extra optimiser owns (:meth:`build_extra_optimizers`) are in neither.
        """
        owned = {id(p) for opt in self.extra_optimizers().values() for g in opt.param_groups for p in g["params"]}
        backbone = {id(p) for p in self.backbone.parameters()}
        trainable = [p for p in self.parameters() if p.requires_grad and id(p) not in owned]
        groups = [
            {"group": "backbone", "params": [p for p in trainable if id(p) in backbone]},
            {"group": "head", "params": [p for p in trainable if id(p) not in backbone]},
        ]
        return [g for g in groups if g["params"]]

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimisers of :meth:`build_extra_optimizers`, built on the first call and the same objects after."""
        if getattr(self, "_extra_optimizers", None) is None:
            self._extra_optimizers = self.build_extra_optimizers()
        return self._extra_optimizers

    def build_extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimisers of auxiliary parameters trained apart from the main optimiser (none by default).

        Override it to give parameters their own update rule (DSPH's proxies take SGD); those parameters then
        leave :meth:`param_groups`, and the runner steps, checkpoints and restores these optimisers by name.
        """
        return {}

    @staticmethod
    def preprocess_of(backbones: dict[str, nn.Module]) -> Preprocess:
        """Image geometry from the image tower, tokenizer from the text tower.

        A single ``backbone`` (CLIP) serves both; two-tower models name ``image_backbone`` and
        ``text_backbone``. An image-only backbone (a ViT, which has no ``tokenizer``) gives no tokenizer.
        """
        image = backbones.get("image_backbone", backbones.get("backbone"))
        text = backbones.get("text_backbone", backbones.get("backbone"))
        if image is None:
            raise ValueError("model section needs 'backbone' or both 'image_backbone' and 'text_backbone'")
        tokenizer = text.tokenizer() if hasattr(text, "tokenizer") else None
        return Preprocess(image.image_size, tuple(image.mean), tuple(image.std), tokenizer)


MODEL_SECTION = Section(kind="model", context=("num_classes", "num_train"),
                        extra=(Field("freeze_backbone", bool, False),))
"""The ``model`` section: the registered model's arguments (its backbones are sub-sections), less what the
framework supplies (the dataset's number of classes and training-set size), plus ``freeze_backbone``, which
the framework applies to every model."""


def build_model(section: dict, backbones: dict[str, nn.Module], num_classes: int | None,
                num_train: int | None = None) -> HashModel:
    """Build a resolved ``model`` section around already built backbones.

    ``num_classes`` and ``num_train`` (training-set size, for memory banks) are passed to models whose
    constructor takes them. ``freeze_backbone: true`` is handled here for every model.
    """
    model = build("model", section, num_classes=num_classes, num_train=num_train, **backbones)
    if section["freeze_backbone"]:
        model.freeze_backbone()
    return model


registry.set_base("model", HashModel)
