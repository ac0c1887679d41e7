"""Image transforms of the CLIP-based hashing methods (DCMHT spec §4.3)."""
from __future__ import annotations

from torchvision import transforms as T

TRAIN_TRANSFORMS = ("original", "augment")


def image_transform(size: int, mean, std, train: bool, kind: str = "original") -> T.Compose:
    """CLIP preprocessing.

    Evaluation: bicubic resize to size x size (aspect ratio not kept, as the reference code does).
    Training, ``original`` (paper code): bicubic resize of the short side, centre crop. ``augment``
    (kalenforn framework): horizontal flip + RandomResizedCrop with torchvision's defaults.
    """
    if kind not in TRAIN_TRANSFORMS:
        raise ValueError(f"dataset.train_transform must be one of {TRAIN_TRANSFORMS}, got '{kind}'")
    bicubic = T.InterpolationMode.BICUBIC
    if not train:
        geometry = [T.Resize((size, size), interpolation=bicubic)]
    elif kind == "original":
        geometry = [T.Resize(size, interpolation=bicubic), T.CenterCrop(size)]
    else:
        geometry = [T.RandomHorizontalFlip(), T.RandomResizedCrop(size)]
    return T.Compose([*geometry, T.Lambda(_rgb), T.ToTensor(), T.Normalize(mean, std)])


def _rgb(image):
    return image.convert("RGB") if image.mode != "RGB" else image
