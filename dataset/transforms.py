"""Image transforms of the hashing methods (DCMHT spec §4.3; BASELINE spec §B4 for ``crop_flip_jitter``)."""
from __future__ import annotations

from torchvision import transforms as T

TRAIN_TRANSFORMS = ("original", "augment", "crop_flip_jitter")


def image_transform(size: int, mean, std, train: bool, kind: str = "original") -> T.Compose:
    """CLIP preprocessing.

    Evaluation: bicubic resize to size x size (aspect ratio not kept, as the reference code does).
    Training, ``original`` (paper code): bicubic resize of the short side, centre crop. ``augment``
    (kalenforn framework): horizontal flip + RandomResizedCrop with torchvision's defaults.
    ``crop_flip_jitter`` (the two-tower reference): resize to 256/224 of the size (square), random crop,
    horizontal flip, ColorJitter(0.2, 0.2, 0.2, 0.1).
    """
    if kind not in TRAIN_TRANSFORMS:
        raise ValueError(f"dataset.train_transform must be one of {TRAIN_TRANSFORMS}, got '{kind}'")
    bicubic = T.InterpolationMode.BICUBIC
    if not train:
        geometry = [T.Resize((size, size), interpolation=bicubic)]
    elif kind == "original":
        geometry = [T.Resize(size, interpolation=bicubic), T.CenterCrop(size)]
    elif kind == "augment":
        geometry = [T.RandomHorizontalFlip(), T.RandomResizedCrop(size)]
    else:
        enlarged = round(size * 256 / 224)
        geometry = [T.Resize((enlarged, enlarged)), T.RandomCrop(size), T.RandomHorizontalFlip(),
                    T.ColorJitter(0.2, 0.2, 0.2, 0.1)]
    return T.Compose([*geometry, T.Lambda(_rgb), T.ToTensor(), T.Normalize(mean, std)])


def _rgb(image):
    return image.convert("RGB") if image.mode != "RGB" else image
