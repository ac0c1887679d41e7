"""A trained model outside the runner: rebuilt from its checkpoint, ready to turn images and captions into codes.

:func:`load_trained` reads a checkpoint written by the runner, resolves the ``model`` section of the config
stored in it and builds backbones and model through the same registry path as the runner (no optimiser, no
dataset): the data sizes a model is built with (``num_classes``, ``num_train``) come from the checkpoint's
``model_context``. :class:`TrainedModel` then encodes PIL images and caption strings into {-1, +1} codes with
the model's own preprocessing, and carries the identity (method, bits, checkpoint sha256, config) that
indexes and results record.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from common import schema
from common.config import Config, build, nested_sections, resolve
from common.register import registry
from dataset.transforms import evaluation_transform
from models.base import MODEL_SECTION, HashModel, Preprocess, build_model
from utils.checkpoint import load
from utils.distributed import resolve_device

CONTEXT_KEYS = ("num_classes", "num_train")


@dataclass
class TrainedModel:
    """A model in eval mode on its device, with its preprocessing and what identifies it.

    Attributes:
        model: the rebuilt :class:`HashModel` with the checkpoint's weights.
        preprocess: image geometry and tokenizer (``tokenizer`` is None for image-only models).
        checkpoint: the file the weights came from.
        sha256: the checkpoint file's sha256 (an index refuses a model whose file differs).
        config: the resolved config stored in the checkpoint.
        device: where the model runs.
    """

    model: HashModel
    preprocess: Preprocess
    checkpoint: Path
    sha256: str
    config: dict
    device: torch.device

    @property
    def method(self) -> str:
        return self.config["model"]["name"]

    @property
    def bits(self) -> int:
        return self.model.bits

    @property
    def modalities(self) -> tuple[str, ...]:
        """What the model encodes: images always, captions when its preprocess has a tokenizer."""
        return ("image", "text") if self.preprocess.tokenizer is not None else ("image",)

    def identity(self) -> dict:
        """Plain data naming this model (written into index metadata and compared on load)."""
        return {"method": self.method, "bits": self.bits, "checkpoint": str(self.checkpoint),
                "checkpoint_sha256": self.sha256, "config": self.config}

    def image_transform(self):
        """The transform the run's query and retrieval images went through: the one its dataset registered
        (``evaluation_transform=``; image-text data by default), with that dataset's options from the config."""
        section = self.config["dataset"]
        make = registry.meta("dataset", section["name"]).get("evaluation_transform", evaluation_transform)
        options = {key: section[key] for key in schema.fields(make) if key in section}
        return make(self.preprocess, **options)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor | list[Image.Image]) -> torch.Tensor:
        """{-1, +1} codes (B, bits) on the CPU of transformed image tensors (B, 3, H, W) or PIL images."""
        if not torch.is_tensor(images):
            transform = self.image_transform()
            images = torch.stack([transform(image) for image in images])
        return self._binary(self.model.encode_image(images.to(self.device)))

    @torch.no_grad()
    def encode_texts(self, captions: list[str]) -> torch.Tensor:
        """{-1, +1} codes (B, bits) on the CPU of caption strings.

        This is the one place where captions meet the model: ``preprocess.tokenize`` gives the text inputs
        (the ids, and the attention mask of towers that read one) as the keyword arguments of ``encode_text``.
        """
        if self.preprocess.tokenizer is None:
            raise ValueError(f"model {self.method} of '{self.checkpoint}' encodes images only (it has no "
                             f"tokenizer); query or index it with images")
        inputs = self.preprocess.tokenize(list(captions))
        return self._binary(self.model.encode_text(**{key: value.to(self.device) for key, value in inputs.items()}))

    def encode(self, modality: str, inputs) -> torch.Tensor:
        """Codes of a batch of ``image`` inputs (tensors or PIL images) or ``text`` inputs (strings)."""
        return self.encode_images(inputs) if modality == "image" else self.encode_texts(inputs)

    def _binary(self, out: torch.Tensor) -> torch.Tensor:
        return self.model.binarize(out.float()).cpu()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, read in 1 MiB blocks (checkpoints may be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory standing for its ``checkpoints/best.pt``."""
    path = Path(path)
    return path / "checkpoints" / "best.pt" if path.is_dir() else path


def load_trained(checkpoint: str | os.PathLike, device: str = "auto") -> TrainedModel:
    """Rebuild the model of a checkpoint (or of a run directory's best checkpoint) on ``device``.

    Raises:
        FileNotFoundError / ValueError: one line naming the file: missing, not a checkpoint of this framework,
            without a config, with a config this code no longer accepts, or weights that do not fit.
    """
    import models  # noqa: F401  (registers every backbone and method)
    import dataset  # noqa: F401  (registers the tokenizers)

    path = checkpoint_path(checkpoint)
    target = resolve_device(device)
    state = load(path, map_location="cpu")
    if not isinstance(state.get("config"), dict) or "model" not in state["config"]:
        raise ValueError(f"checkpoint '{path}' holds no config: it was not written by the runner "
                         f"(tools need the config it was trained with)")
    config = state["config"]
    section = resolve(Config({"model": config["model"]}, {}, str(path)), {"model": MODEL_SECTION})["model"]
    backbones = {key: build(kind, sub) for key, (kind, sub) in nested_sections("model", section).items()}
    model = build_model(section, backbones, **_model_context(state, section["name"], path))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise ValueError(f"checkpoint '{path}': its weights do not fit the {section['name']} its config "
                         f"builds ({str(err).splitlines()[0]})") from None
    model.to(target).eval()
    return TrainedModel(model, HashModel.preprocess_of(backbones), path, file_sha256(path), config, target)


def _model_context(state: dict, name: str, path: Path) -> dict:
    """The data sizes the model was built with; checkpoints written before they were recorded have none,
    which only models that take such sizes need."""
    if "model_context" in state:
        return {key: state["model_context"][key] for key in CONTEXT_KEYS}
    needed = [key for key in CONTEXT_KEYS if key in schema.fields(registry.get("model", name))]
    if needed:
        raise ValueError(f"checkpoint '{path}' does not record {' and '.join(needed)}, which {name} is built "
                         f"with (it predates model_context); train it again to use it outside the runner")
    return {key: None for key in CONTEXT_KEYS}
