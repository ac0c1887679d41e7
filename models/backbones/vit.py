"""Vision Transformer (ViT) as the image backbone of the single-modal hashing methods (WCH).

Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale", ICLR 2021
(arXiv:2010.11929); weights and reference code: https://github.com/google-research/vision_transformer. The
transformer is timm's (``timm.models.vision_transformer.VisionTransformer``), and Google's ``.npz`` files
are read by timm's own loader (``_load_weights``). This module adds what the hashing methods need, as the
WCH spec (``specs/methods/WCH.md`` §3-§4) describes them:

* :data:`VIT_VARIANTS`, one dataclass per architecture: dims, dropout, preprocessing and the release file;
* a check of every weight file against the chosen variant before it is loaded, since timm's loader silently
  resamples a patch embedding of another size and ignores extra blocks;
* the spec's resize of a position table of another grid (the 384-px release file), done as the official
  code does it (``scipy.ndimage.zoom``, order 1), not with timm's default interpolation;
* every token after the final LayerNorm (:meth:`ViTBackbone.image_tokens`), the input of WCH's mutual
  attention.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from common.register import closest, registry
from models.backbones.state_dicts import read_state_dict, strip_ddp_prefix
from utils.logging import get_logger

logger = get_logger(__name__)

WEIGHTS_KEY = "model.backbone.weights"
ARCH_KEY = "model.backbone.arch"

ViTArch = Literal["vit_base_patch16_224", "tiny"]


@dataclass(frozen=True)
class ViTVariant:
    """Dims, dropout and preprocessing of one ViT (names as timm's entrypoints; dims as Google's configs)."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    patch_size: int
    image_size: int
    # Token dropout after the position embedding and dropout inside the MLP; the attention output has none
    # (WCH spec §3, the official code's ViT port; Google's own Flax model also drops the attention output).
    dropout: float = 0.0
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # Google's ViTs take [-1, 1] inputs
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    weight_file: str | None = None  # the local name the hashing repos give the release file
    weight_url: str | None = None  # where Google publishes it, named in the missing-file error


VIT_VARIANTS: dict[str, ViTVariant] = {
    "vit_base_patch16_224": ViTVariant(
        embed_dim=768, depth=12, num_heads=12, mlp_dim=3072, patch_size=16, image_size=224, dropout=0.1,
        weight_file="imagenet21k+imagenet2012_ViT-B_16-224.npz",
        weight_url="https://storage.googleapis.com/vit_models/imagenet21k+imagenet2012/ViT-B_16-224.npz"),
    # Random-init only: unit tests and the synthetic demo (4x4 patches of 8 px, 64 wide, 2 layers).
    "tiny": ViTVariant(embed_dim=64, depth=2, num_heads=4, mlp_dim=256, patch_size=8, image_size=32),
}

# Keys of Google's layout that the dims are read from (the rest are read by timm's loader).
_NPZ_EMBEDDING = "embedding/kernel"
_NPZ_POSITIONS = "Transformer/posembed_input/pos_embedding"
_NPZ_BLOCK = "Transformer/encoderblock_{}/"


def _npz_dims(weights: np.lib.npyio.NpzFile, path: Path) -> dict[str, int]:
    """The architecture a Google ``.npz`` holds, from its array shapes (spec §4 table)."""
    required = (_NPZ_EMBEDDING, _NPZ_POSITIONS, _NPZ_BLOCK.format(0) + "MultiHeadDotProductAttention_1/query/kernel",
                _NPZ_BLOCK.format(0) + "MlpBlock_3/Dense_0/kernel")
    missing = [key for key in required if key not in weights.files]
    if missing:
        raise ValueError(f"{path} is not a ViT checkpoint in Google's .npz layout: it lacks {', '.join(missing)} "
                         f"(first keys found: {', '.join(weights.files[:4])})")
    patch, _, _, width = weights[_NPZ_EMBEDDING].shape  # HWIO
    block = _NPZ_BLOCK.format(0)
    return {
        "embed_dim": width,
        "depth": len({key.split("/")[1] for key in weights.files if key.startswith("Transformer/encoderblock_")}),
        "num_heads": weights[block + "MultiHeadDotProductAttention_1/query/kernel"].shape[1],
        "mlp_dim": weights[block + "MlpBlock_3/Dense_0/kernel"].shape[1],
        "patch_size": patch,
    }


def _state_dims(state: dict[str, torch.Tensor], path: Path) -> dict[str, int]:
    """The architecture a timm state dict holds, from its tensor shapes (heads are not visible in them)."""
    required = ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight")
    missing = [key for key in required if key not in state]
    if missing:
        raise ValueError(f"{path} is not a timm ViT state dict: it lacks {', '.join(missing)} "
                         f"(first keys found: {', '.join(list(state)[:4])})")
    width, _, patch, _ = state["patch_embed.proj.weight"].shape  # OIHW
    return {
        "embed_dim": width,
        "depth": len({key.split(".")[1] for key in state if key.startswith("blocks.")}),
        "mlp_dim": state["blocks.0.mlp.fc1.weight"].shape[0],
        "patch_size": patch,
        "image_size": patch * math.isqrt(state["pos_embed"].shape[1] - 1),
    }


def _check_dims(found: dict[str, int], arch: str, path: Path) -> None:
    """A one-line ValueError naming what differs between the file and ``arch``, and the variant that fits."""
    variant = VIT_VARIANTS[arch]
    wrong = [name for name in found if found[name] != getattr(variant, name)]
    if not wrong:
        return
    match = next((name for name, other in VIT_VARIANTS.items()
                  if all(getattr(other, key) == value for key, value in found.items())), None)
    hint = f"set {ARCH_KEY} to '{match}'" if match else f"no known variant matches; {ARCH_KEY} must fit the file"
    raise ValueError(f"{path} does not hold a ViT {arch}: expected "
                     f"{', '.join(f'{n}={getattr(variant, n)}' for n in wrong)}, found "
                     f"{', '.join(f'{n}={found[n]}' for n in wrong)}; {hint}")


def _missing_file_message(path: Path, arch: str) -> str:
    variant = VIT_VARIANTS[arch]
    if variant.weight_url is None:
        return (f"ViT weights file not found: {path}; the '{arch}' variant has no released weights, so set "
                f"{WEIGHTS_KEY} to a checkpoint saved from it, or to null for random initialisation")
    return (f"ViT weights file not found: {path}; download {variant.weight_url} (Google's ImageNet-21k+1k "
            f"release, usually saved as {variant.weight_file}) and set {WEIGHTS_KEY} to its local path")


@registry.register_backbone("ViT")
class ViTBackbone(VisionTransformer):
    """timm's ViT with no classifier, the variant's dims and dropout, and local weights only.

    A subclass rather than a wrapper, so that its parameter names are timm's: a timm state dict, or this
    backbone's own, loads with no renaming. Attributes read by the framework: ``embed_dim``, ``image_size``,
    ``mean`` and ``std`` (input normalisation, read by the data pipeline).

    Args:
        arch: a name in :data:`VIT_VARIANTS`.
        weights: local file; None keeps timm's random init. A ``.npz`` is read as Google's release layout
            (through timm's loader; a position table of another grid is resized as in the spec), anything else
            as a timm state dict (``.pth`` / ``.pt`` / ``.bin`` with ``weights_only``, or ``.safetensors``,
            possibly under ``state_dict`` / ``model`` and with a DDP ``module.`` prefix), loaded strictly but
            for a classifier ``head``, which no hashing method uses.

    Raises:
        FileNotFoundError: no such file; the message names the release file, its URL and the config key.
        ValueError: the file is unreadable, not a ViT checkpoint, or of another architecture.
    """

    def __init__(self, arch: ViTArch = "vit_base_patch16_224", weights: str | None = None):
        if arch not in VIT_VARIANTS:  # the schema checks configs; this guards direct construction
            raise ValueError(f"unknown ViT arch '{arch}' in {ARCH_KEY}{closest(arch, VIT_VARIANTS)} "
                             f"(known: {', '.join(VIT_VARIANTS)})")
        path = None if weights is None else Path(weights)
        if path is not None and not path.is_file():  # before building, so a typo fails fast even for ViT-B
            raise FileNotFoundError(_missing_file_message(path, arch))
        variant = VIT_VARIANTS[arch]
        super().__init__(img_size=variant.image_size, patch_size=variant.patch_size, embed_dim=variant.embed_dim,
                         depth=variant.depth, num_heads=variant.num_heads,
                         mlp_ratio=variant.mlp_dim / variant.embed_dim, num_classes=0,
                         pos_drop_rate=variant.dropout, proj_drop_rate=variant.dropout)
        # timm's proj_drop_rate also drops the attention output, which the spec's ViT does not.
        for block in self.blocks:
            block.attn.proj_drop.p = 0.0
        self.arch = arch
        self.image_size = variant.image_size
        self.mean = variant.mean
        self.std = variant.std
        if path is not None and path.suffix == ".npz":
            self._load_npz(path)
        elif path is not None:
            self._load_state_dict_file(path)

    @torch.no_grad()
    def _load_npz(self, path: Path) -> None:
        """Google's layout through timm's loader, once the file's dims match (timm would resample or skip them)."""
        try:
            weights = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise ValueError(f"{path} is not a readable .npz archive: {err}") from err
        if not isinstance(weights, np.lib.npyio.NpzFile):
            raise ValueError(f"{path} holds a single array, not the named arrays of a Google .npz checkpoint")
        with weights:
            _check_dims(_npz_dims(weights, path), self.arch, path)
            table = torch.from_numpy(weights[_NPZ_POSITIONS])
        try:
            self.load_pretrained(str(path))
        except KeyError as err:  # a block lacking one of its arrays
            raise ValueError(f"{path} is not a complete ViT {self.arch} in Google's layout: {err.args[0]}") from err
        if table.shape[1] != self.pos_embed.shape[1]:
            # Bilinear with corners aligned is scipy.ndimage.zoom(order=1), the official code's resize (spec §4);
            # timm resizes with corners not aligned, so the table is redone from the file's rows.
            self.pos_embed.copy_(resample_abs_pos_embed(table, new_size=list(self.patch_embed.grid_size),
                                                        num_prefix_tokens=1, interpolation="bilinear",
                                                        antialias=False, align_corners=True))
            logger.info("resized the position table of %s from %d to %d tokens", path, table.shape[1],
                        self.pos_embed.shape[1])
        logger.info("read ViT %s weights from %s (Google .npz)", self.arch, path)

    def _load_state_dict_file(self, path: Path) -> None:
        """A timm state dict, checked against the variant, then loaded strictly."""
        state = strip_ddp_prefix(read_state_dict(path, "a Google .npz (which must end in .npz)"))
        head = [key for key in state if key.startswith("head.")]
        if head:
            logger.info("dropped the classifier of %s: %s", path, ", ".join(head))
        state = {key: value.float() for key, value in state.items() if key not in head}
        _check_dims(_state_dims(state, path), self.arch, path)
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path} does not fit ViT {self.arch}: missing keys {missing[:5]}, "
                             f"unexpected keys {unexpected[:5]}")
        logger.info("read ViT %s weights from %s (state dict)", self.arch, path)

    def image_tokens(self, image: torch.Tensor) -> torch.Tensor:
        """Every token after the final LayerNorm: (B, 1 + N, embed_dim), CLS first, patches in raster order.

        This is what WCH's mutual attention reads (spec §2-§3; WCH drops the CLS token itself).

        Args:
            image: (B, 3, image_size, image_size), normalised with ``mean`` / ``std``.
        """
        if image.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"ViT {self.arch} takes {self.image_size}x{self.image_size} images, got "
                             f"{tuple(image.shape[-2:])}; resize to the backbone's image_size")
        return self.forward_features(image)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Pooled image features (B, embed_dim): the CLS token after the final LayerNorm, as timm pools it."""
        return self.image_tokens(image)[:, 0]

    def extra_repr(self) -> str:
        return f"arch={self.arch}"
