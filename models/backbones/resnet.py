"""torchvision ResNets as image towers (BASELINE spec §B2): global average pool, no classifier.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (arXiv:1512.03385). The network is
torchvision's (``torchvision.models.resnet.ResNet``), and its ImageNet-1k release files (``resnet50-0676ba61.pth``
= ``IMAGENET1K_V1``, what ``pretrained=True`` gives) are plain state dicts, read with ``weights_only`` from a
local path; nothing is downloaded. The file's block type and depth are checked against the chosen variant
before it is loaded, and the classifier ``fc`` is dropped: the tower returns the 2048-d pooled features.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from torchvision.models import ResNet50_Weights, ResNet101_Weights
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from common.register import registry
from models.backbones.state_dicts import read_state_dict, strip_ddp_prefix
from utils.logging import get_logger
from utils.paths import resolve_path

logger = get_logger(__name__)

WEIGHTS_KEY = "model.image_backbone.weights"
ARCH_KEY = "model.image_backbone.arch"

ResNetArch = Literal["resnet50", "resnet101", "tiny"]


@dataclass(frozen=True)
class ResNetVariant:
    """Block type, blocks per stage and input size of one ResNet."""

    block: type[nn.Module]
    layers: tuple[int, int, int, int]
    image_size: int = 224
    weight_url: str | None = None  # torchvision's ImageNet-1k release, named in the missing-file error


RESNET_VARIANTS: dict[str, ResNetVariant] = {
    "resnet50": ResNetVariant(Bottleneck, (3, 4, 6, 3), weight_url=ResNet50_Weights.IMAGENET1K_V1.url),
    "resnet101": ResNetVariant(Bottleneck, (3, 4, 23, 3), weight_url=ResNet101_Weights.IMAGENET1K_V1.url),
    # Random-init only: unit tests and the synthetic demo (one basic block per stage, 512-d, 32-px inputs).
    "tiny": ResNetVariant(BasicBlock, (1, 1, 1, 1), image_size=32),
}


def _dims_of(state: dict[str, torch.Tensor], path) -> dict:
    """Block type and blocks per stage of a torchvision ResNet state dict, from its key names."""
    if "conv1.weight" not in state or "layer1.0.conv1.weight" not in state:
        raise ValueError(f"{path} is not a torchvision ResNet state dict: it lacks conv1.weight or "
                         f"layer1.0.conv1.weight (first keys found: {', '.join(list(state)[:4])})")
    block = Bottleneck if "layer1.0.conv3.weight" in state else BasicBlock
    layers = tuple(len({key.split(".")[1] for key in state if key.startswith(f"layer{stage}.")})
                   for stage in range(1, 5))
    return {"block": block, "layers": layers}


def _check_dims(found: dict, arch: str, path) -> None:
    variant = RESNET_VARIANTS[arch]
    if (found["block"], found["layers"]) == (variant.block, variant.layers):
        return
    match = next((name for name, other in RESNET_VARIANTS.items()
                  if (other.block, other.layers) == (found["block"], found["layers"])), None)
    hint = f"set {ARCH_KEY} to '{match}'" if match else f"no known variant matches; {ARCH_KEY} must fit the file"
    raise ValueError(f"{path} does not hold a ResNet {arch}: expected {variant.block.__name__} blocks "
                     f"{list(variant.layers)}, found {found['block'].__name__} blocks {list(found['layers'])}; {hint}")


def _missing_file_message(path, arch: str) -> str:
    url = RESNET_VARIANTS[arch].weight_url
    if url is None:
        return (f"ResNet weights file not found: {path}; the '{arch}' variant has no released weights, so set "
                f"{WEIGHTS_KEY} to a state dict saved from it, or to null for random initialisation")
    return (f"ResNet weights file not found: {path}; download {url} (torchvision's ImageNet-1k release) and set "
            f"{WEIGHTS_KEY} to its local path")


def _read_checked(path, arch: str) -> dict[str, torch.Tensor]:
    """The tensors of a torchvision ResNet file, checked against ``arch``, without the classifier ``fc``."""
    if not path.is_file():
        raise FileNotFoundError(_missing_file_message(path, arch))
    state = strip_ddp_prefix(read_state_dict(path, "a safetensors file (which must end in .safetensors)"))
    _check_dims(_dims_of(state, path), arch, path)
    return {key: value for key, value in state.items() if not key.startswith("fc.")}


@registry.register_backbone("ResNet")
class ResNetBackbone(ResNet):
    """torchvision's ResNet with the classifier replaced by the identity: (B, 3, H, W) -> (B, embed_dim).

    A subclass rather than a wrapper, so that its parameter names are torchvision's. Attributes read by the
    framework: ``embed_dim`` (2048 for the bottleneck variants), ``image_size``, ``mean`` and ``std``
    (ImageNet's, which torchvision's weights were trained with).

    Args:
        arch: a name in :data:`RESNET_VARIANTS`.
        weights: local torchvision state dict (``.pth`` / ``.pt`` / ``.safetensors``, possibly under
            ``state_dict`` / ``model`` and with a DDP ``module.`` prefix), loaded strictly but for the
            classifier ``fc``; None keeps torchvision's random init.

    Raises:
        FileNotFoundError: no such file; the message names the release URL and the config key.
        ValueError: the file is unreadable, not a ResNet state dict, or of another depth or block type.
    """

    def __init__(self, arch: ResNetArch = "resnet50", weights: str | None = None):
        path = None if weights is None else resolve_path(weights, WEIGHTS_KEY)
        # Read and check the file before building, so a wrong file fails fast even for ResNet-101.
        state = None if path is None else _read_checked(path, arch)
        variant = RESNET_VARIANTS[arch]
        super().__init__(variant.block, list(variant.layers))
        self.embed_dim = self.fc.in_features
        self.fc = nn.Identity()
        self.arch, self.image_size = arch, variant.image_size
        self.mean, self.std = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
        if state is not None:
            missing, unexpected = self.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ValueError(f"{path} does not fit ResNet {arch}: missing keys {missing[:5]}, "
                                 f"unexpected keys {unexpected[:5]}")
            logger.info("read ResNet %s weights from %s", arch, path)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Pooled image features (B, embed_dim): the global average of the last stage."""
        return self(image)

    def extra_repr(self) -> str:
        return f"arch={self.arch}"
