"""OpenAI CLIP (ViT image tower + causal text transformer) as the backbone of the cross-modal hashing methods.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021
(arXiv:2103.00020); weights and reference code: https://github.com/openai/CLIP. The towers are open_clip's
(``open_clip.model.CLIP``). This module adds what the hashing methods need on top of them:

* :data:`CLIP_VARIANTS`, one dataclass per architecture: dims, preprocessing and the release file name;
* :func:`load_clip_state_dict`, the one loader for OpenAI's TorchScript release files, plain state dicts and
  open_clip checkpoints, which checks the file against the chosen variant before anything is built;
* a text context shorter than CLIP's 77 positions (DCMHT and its successors keep the first 32 rows);
* every token after ``ln_post`` / ``ln_final`` and the projections (MITH, DIMCH, UMoED), and MITH's
  key-padding mask inside the text transformer.
"""
from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from torch import nn

from common.register import closest, registry
from common.schema import PositiveInt
from dataset.tokenizers import CLIPTokenizer
from models.backbones.state_dicts import read_state_dict, strip_ddp_prefix
from utils.logging import get_logger

logger = get_logger(__name__)

WEIGHTS_KEY = "model.backbone.weights"
ARCH_KEY = "model.backbone.arch"


@dataclass(frozen=True)
class CLIPVariant:
    """Dims and preprocessing of one CLIP architecture (names as in OpenAI's and open_clip's releases)."""

    embed_dim: int
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    text_width: int
    text_layers: int
    text_heads: int
    vocab_size: int = 49408
    context_length: int = 77  # text positions the released weights hold; the backbone may keep fewer
    quick_gelu: bool = True  # OpenAI trained with x * sigmoid(1.702 x); nn.GELU would shift the features
    mean: tuple[float, float, float] = OPENAI_DATASET_MEAN
    std: tuple[float, float, float] = OPENAI_DATASET_STD
    weight_file: str | None = None  # OpenAI's release file, named in the missing-file error


CLIP_VARIANTS: dict[str, CLIPVariant] = {
    "ViT-B-32": CLIPVariant(embed_dim=512, image_size=224, patch_size=32, vision_width=768, vision_layers=12,
                            vision_heads=12, text_width=512, text_layers=12, text_heads=8, weight_file="ViT-B-32.pt"),
    "ViT-B-16": CLIPVariant(embed_dim=512, image_size=224, patch_size=16, vision_width=768, vision_layers=12,
                            vision_heads=12, text_width=512, text_layers=12, text_heads=8, weight_file="ViT-B-16.pt"),
    "ViT-L-14": CLIPVariant(embed_dim=768, image_size=224, patch_size=14, vision_width=1024, vision_layers=24,
                            vision_heads=16, text_width=768, text_layers=12, text_heads=12, weight_file="ViT-L-14.pt"),
    "ViT-L-14-336": CLIPVariant(embed_dim=768, image_size=336, patch_size=14, vision_width=1024, vision_layers=24,
                                vision_heads=16, text_width=768, text_layers=12, text_heads=12,
                                weight_file="ViT-L-14-336px.pt"),
    # Random-init only: unit tests and the synthetic demo (4x4 patches of 8 px, 64 wide, 2 layers per tower).
    "tiny": CLIPVariant(embed_dim=64, image_size=32, patch_size=8, vision_width=64, vision_layers=2, vision_heads=2,
                        text_width=64, text_layers=2, text_heads=2),
}

# Entries of OpenAI's archives that are not parameters, and the contrastive temperature no hashing head uses.
_DROPPED_KEYS = ("input_resolution", "context_length", "vocab_size", "logit_scale", "logit_bias")
# Fields that shapes determine; compared between a file and the chosen variant.
_CHECKED_DIMS = ("embed_dim", "image_size", "patch_size", "vision_width", "vision_layers", "text_width",
                 "text_layers", "vocab_size")
_REQUIRED_KEYS = ("visual.conv1.weight", "visual.positional_embedding", "visual.proj", "token_embedding.weight",
                  "positional_embedding", "ln_final.weight", "text_projection")


def get_clip_variant(arch: str) -> CLIPVariant:
    """The variant named ``arch``; an unknown name lists the known ones and the closest match."""
    if arch not in CLIP_VARIANTS:
        raise ValueError(f"unknown CLIP arch '{arch}' in {ARCH_KEY}{closest(arch, CLIP_VARIANTS)} "
                         f"(known: {', '.join(CLIP_VARIANTS)})")
    return CLIP_VARIANTS[arch]


def _missing_file_message(path: Path, arch: str) -> str:
    variant = CLIP_VARIANTS[arch]
    if variant.weight_file is None:
        return (f"CLIP weights file not found: {path}; the '{arch}' variant has no released weights, so set "
                f"{WEIGHTS_KEY} to a checkpoint saved from it, or to null for random initialisation")
    url = open_clip.get_pretrained_url(arch, "openai")
    return (f"CLIP weights file not found: {path}; download {variant.weight_file} from OpenAI's CLIP release "
            f"({url}) and set {WEIGHTS_KEY} to its local path")


def _is_torchscript_archive(path: Path) -> bool:
    """TorchScript archives are zip files with a top-level ``<name>/constants.pkl``; torch.save files are not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.count("/") == 1 and name.endswith("/constants.pkl") for name in archive.namelist())


def _read_torchscript_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a TorchScript archive, the format of OpenAI's CLIP release files (``ViT-B-32.pt``).

    ``torch.jit.load`` can run code stored in the archive: use it on trusted local files only. This is the
    only place in the framework that opens such an archive, and only its state dict is kept.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates TorchScript; the release files remain
        module = torch.jit.load(str(path), map_location="cpu")
    return dict(module.state_dict())


def _to_openai_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI key names (those of ``open_clip.model.CLIP``), fp32, without DDP prefixes or non-parameters."""
    state = strip_ddp_prefix(state)
    if "text.positional_embedding" in state:  # open_clip's CustomTextCLIP keeps the text tower under "text."
        state = {key[len("text."):] if key.startswith("text.") else key: value for key, value in state.items()}
    return {key: value.float() if value.is_floating_point() else value
            for key, value in state.items() if key not in _DROPPED_KEYS}


def _dims_of(state: dict[str, torch.Tensor], path: Path) -> dict[str, int]:
    """The architecture a state dict holds, inferred from tensor shapes (as open_clip does for OpenAI files)."""
    if "visual.layer1.0.conv1.weight" in state:
        raise ValueError(f"{path} holds a ResNet CLIP (e.g. RN50); {ARCH_KEY} supports the ViT variants "
                         f"{', '.join(CLIP_VARIANTS)}")
    missing = [key for key in _REQUIRED_KEYS if key not in state]
    if missing:
        raise ValueError(f"{path} is not a CLIP ViT checkpoint in OpenAI or open_clip layout: it lacks "
                         f"{', '.join(missing)} (first keys found: {', '.join(list(state)[:4])})")
    conv = state["visual.conv1.weight"]
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    return {
        "embed_dim": state["text_projection"].shape[1],
        "image_size": conv.shape[-1] * grid,
        "patch_size": conv.shape[-1],
        "vision_width": conv.shape[0],
        "vision_layers": len({key.split(".")[3] for key in state if key.startswith("visual.transformer.resblocks.")}),
        "text_width": state["ln_final.weight"].shape[0],
        "text_layers": len({key.split(".")[2] for key in state if key.startswith("transformer.resblocks.")}),
        "vocab_size": state["token_embedding.weight"].shape[0],
    }


def _check_arch(state: dict[str, torch.Tensor], arch: str, context_length: int, path: Path) -> None:
    found = _dims_of(state, path)
    expected = {name: getattr(CLIP_VARIANTS[arch], name) for name in _CHECKED_DIMS}
    wrong = [name for name in _CHECKED_DIMS if found[name] != expected[name]]
    if wrong:
        match = next((name for name, variant in CLIP_VARIANTS.items()
                      if all(getattr(variant, f) == found[f] for f in _CHECKED_DIMS)), None)
        hint = f"set {ARCH_KEY} to '{match}'" if match else f"no known variant matches; {ARCH_KEY} must fit the file"
        raise ValueError(
            f"{path} does not hold a CLIP {arch}: expected {', '.join(f'{n}={expected[n]}' for n in wrong)}, "
            f"found {', '.join(f'{n}={found[n]}' for n in wrong)}; {hint}")
    rows = state["positional_embedding"].shape[0]
    if rows < context_length:
        raise ValueError(f"{path} holds {rows} text positions, fewer than model.backbone.context_length="
                         f"{context_length}; lower the context length to at most {rows}")


def load_clip_state_dict(path: str | Path, arch: str = "ViT-B-32", context_length: int = 32
                         ) -> dict[str, torch.Tensor]:
    """Read CLIP weights from a local file into a state dict that :class:`CLIPBackbone` loads strictly.

    Accepted files: OpenAI's release archives exactly as distributed (TorchScript, e.g. ``ViT-B-32.pt``; fp16
    weights are cast to fp32), ``torch.save`` state dicts with OpenAI or open_clip key names (possibly under
    ``state_dict`` / ``model`` and with a DDP ``module.`` prefix, read with ``weights_only=True``), open_clip
    training checkpoints and ``.safetensors`` files. The file's dims are checked against ``arch`` and the text
    positional embedding keeps its first ``context_length`` rows.

    Args:
        path: local file; nothing is downloaded.
        arch: name in :data:`CLIP_VARIANTS` the file must match (also names the release file in errors).
        context_length: text positions kept.

    Raises:
        FileNotFoundError: no such file; the message says what to download and which config key to set.
        ValueError: the file is unreadable, not a CLIP ViT checkpoint, or of another architecture.
    """
    get_clip_variant(arch)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(_missing_file_message(path, arch))
    torchscript = _is_torchscript_archive(path)
    state = _to_openai_names(_read_torchscript_state_dict(path) if torchscript
                             else read_state_dict(path, "a TorchScript archive"))
    _check_arch(state, arch, context_length, path)
    rows = state["positional_embedding"].shape[0]
    state["positional_embedding"] = state["positional_embedding"][:context_length]
    logger.info("read CLIP %s weights from %s (%s); text positions %d -> %d", arch, path,
                "TorchScript archive" if torchscript else "state dict", rows, context_length)
    return state


@registry.register_backbone("CLIP")
class CLIPBackbone(nn.Module):
    """Both CLIP towers, fp32, with the OpenAI parameter names (``visual.*``, ``transformer.*``, ...).

    Attributes read by the framework: ``embed_dim`` (width of the projected features), ``vision_width``,
    ``text_width``, ``image_size``, ``mean``, ``std`` (input normalisation) and ``context_length``.

    Args:
        arch: a name in :data:`CLIP_VARIANTS`.
        weights: local checkpoint read by :func:`load_clip_state_dict`; None keeps open_clip's random init.
        context_length: text length; the first rows of the released 77 positional embeddings are kept.
    """

    def __init__(self, arch: str = "ViT-B-32", weights: str | None = None, context_length: PositiveInt = 32):
        super().__init__()
        variant = get_clip_variant(arch)
        if not 2 <= context_length <= variant.context_length:
            raise ValueError(f"model.backbone.context_length must be in [2, {variant.context_length}] for CLIP "
                             f"{arch}, got {context_length}")
        # Read and check the file before building, so a wrong file fails fast even for large variants.
        state = None if weights is None else load_clip_state_dict(weights, arch, context_length)
        clip = CLIP(
            embed_dim=variant.embed_dim,
            vision_cfg=CLIPVisionCfg(layers=variant.vision_layers, width=variant.vision_width,
                                     head_width=variant.vision_width // variant.vision_heads,
                                     patch_size=variant.patch_size, image_size=variant.image_size,
                                     output_tokens=True),
            text_cfg=CLIPTextCfg(context_length=context_length, vocab_size=variant.vocab_size,
                                 width=variant.text_width, heads=variant.text_heads, layers=variant.text_layers),
            quick_gelu=variant.quick_gelu,
        )
        # Adopt the towers but not logit_scale, which no hashing loss uses and which would get no gradient.
        self.visual = clip.visual
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)

        self.arch = arch
        self.embed_dim = variant.embed_dim
        self.vision_width = variant.vision_width
        self.text_width = variant.text_width
        self.text_heads = variant.text_heads
        self.image_size = variant.image_size
        self.mean = variant.mean
        self.std = variant.std
        self.context_length = context_length
        if state is not None:
            missing, unexpected = self.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ValueError(f"{weights} does not fit CLIP {arch}: missing keys {missing[:5]}, "
                                 f"unexpected keys {unexpected[:5]}")

    def tokenizer(self) -> CLIPTokenizer:
        """The tokenizer whose ids this backbone reads (CLIP BPE, this backbone's context length)."""
        return CLIPTokenizer(context_length=self.context_length)

    def encode_image(self, image: torch.Tensor, return_tokens: bool = False):
        """Image features: the CLS token after ``ln_post`` and the visual projection (not normalised).

        Args:
            image: (B, 3, image_size, image_size), normalised with ``mean`` / ``std``.
            return_tokens: also return every token (CLS first, then the patches in raster order), each after
                ``ln_post`` and the projection, as MITH, DIMCH and UMoED use them.

        Returns:
            (B, embed_dim), or that and (B, 1 + P, embed_dim) with P = (image_size / patch_size)^2.
        """
        if image.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"CLIP {self.arch} takes {self.image_size}x{self.image_size} images, got "
                             f"{tuple(image.shape[-2:])}; resize to the backbone's image_size")
        pooled, patches = self.visual(image)
        if not return_tokens:
            return pooled
        return pooled, torch.cat([pooled.unsqueeze(1), patches @ self.visual.proj], dim=1)

    def encode_text(self, text: torch.Tensor, return_tokens: bool = False,
                    key_padding_mask: torch.Tensor | None = None):
        """Text features: the EOT-position state after ``ln_final`` and ``text_projection`` (not normalised).

        The EOT position is the argmax of each row (EOT has the largest id). Attention is causal, so the zero
        padding after EOT cannot reach it.

        Args:
            text: (B, context_length) token ids from :meth:`tokenizer`.
            return_tokens: also return every position after ``ln_final`` and ``text_projection``.
            key_padding_mask: (B, context_length) bool, True where a key is hidden from every query in every
                layer (MITH masks ``text == 0``; vanilla CLIP and the other methods pass None). Keep position 0
                (SOT) visible, or rows with no visible key become NaN.

        Returns:
            (B, embed_dim), or that and (B, context_length, embed_dim).
        """
        if text.shape[-1] != self.context_length:
            raise ValueError(f"text has length {text.shape[-1]} but the CLIP backbone's context_length is "
                             f"{self.context_length}; give the tokenizer the same context_length")
        x = self.token_embedding(text) + self.positional_embedding
        x = self.transformer(x, attn_mask=self._attention_mask(key_padding_mask, x.dtype))
        x = self.ln_final(x)
        rows = torch.arange(x.shape[0], device=x.device)
        eot = text.argmax(dim=-1)
        if not return_tokens:
            return x[rows, eot] @ self.text_projection
        tokens = x @ self.text_projection
        return tokens[rows, eot], tokens

    def _attention_mask(self, key_padding_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """The additive causal mask, combined per sample with the key-padding mask when one is given."""
        causal = self.attn_mask.to(dtype)
        if key_padding_mask is None:
            return causal
        padding = torch.zeros(key_padding_mask.shape, dtype=dtype, device=causal.device)
        padding.masked_fill_(key_padding_mask.to(torch.bool), float("-inf"))
        # nn.MultiheadAttention wants (B * heads, L, L), batch-major.
        return (causal + padding[:, None, :]).repeat_interleave(self.text_heads, dim=0)

    def extra_repr(self) -> str:
        return f"arch={self.arch}, context_length={self.context_length}"

