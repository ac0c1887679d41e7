"""Image transforms: those of the CLIP-based hashing methods (DCMHT spec §4.3), the two-view augmentation of
contrastive single-modal hashing (WCH spec §10) and the two-tower baseline's ``crop_flip_jitter`` (BASELINE §B4)."""
from __future__ import annotations

import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

TRAIN_TRANSFORMS = ("original", "augment", "crop_flip_jitter")


def evaluation_transform(preprocess) -> T.Compose:
    """The deterministic transform of query and retrieval images of image-text data; a dataset registers the
    transform of its evaluation images (``evaluation_transform=``), so tools that encode images outside the
    runner (``models/trained.py``) encode them as its evaluation did."""
    return image_transform(preprocess.image_size, preprocess.mean, preprocess.std, train=False)


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


class RandomGaussianBlur:
    """PIL's Gaussian blur with a radius drawn uniformly from ``sigma``, as WCH's ``utils/tools.py`` blurs.

    The radius comes from torch's RNG (the reference draws from Python's ``random``), so a seeded run, and a
    resumed one, sees the same augmentations.
    """

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, image: Image.Image) -> Image.Image:
        low, high = self.sigma
        return image.filter(ImageFilter.GaussianBlur(low + (high - low) * float(torch.rand(()))))


def contrastive_transform(size: int, mean, std, train: bool) -> T.Compose:
    """WCH's transforms (spec §10), identical in the official code and both third-party copies.

    Both start with a bilinear resize of the short side and a centre crop to ``size`` (CIFAR's 32-pixel
    images are upsampled first). Training then applies a RandomResizedCrop of area 0.2-1, colour jitter
    (0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale with p 0.2, a PIL Gaussian blur of radius U(0.1, 2) with p 0.5
    and a horizontal flip; every call draws anew, so two calls give two independent views.
    """
    geometry = [T.Resize(size), T.CenterCrop(size)]
    if train:
        geometry += [T.RandomResizedCrop(size, scale=(0.2, 1.0)),
                     T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
                     T.RandomApply([RandomGaussianBlur()], p=0.5), T.RandomHorizontalFlip()]
    return T.Compose([*geometry, T.ToTensor(), T.Normalize(mean, std)])
