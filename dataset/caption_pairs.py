"""Label-free image-caption retrieval sets (Flickr30K, COCO Karpathy splits) for Recall@K evaluation.

There are no class labels: an image's positives are its own captions (``specs/datasets.md`` §4). Readers
for the three common layouts (Karpathy JSON, ALBEF/BLIP JSON, VSE "precomp" caption files) produce one
:class:`CaptionRetrievalSet` with a flat caption list and the ``img2txt`` / ``txt2img`` maps.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from dataset.records import DatasetError, read_json

CAPTION_POLICIES = ("all", "first5")
KARPATHY_SPLITS = {"train": ("train", "restval"), "val": ("val",), "test": ("test",), "restval": ("restval",)}
KARPATHY_TEXT = ("raw", "tokens")


@dataclass
class CaptionRetrievalSet:
    """Images, their captions flattened, and the maps between them.

    Attributes:
        images: image paths (or identifiers when only features exist, as in precomp sets).
        captions: every caption, grouped by image in image order.
        img2txt: for each image, the indices of its captions in ``captions``.
        txt2img: for each caption, the index of its image.
        split: the split name the set was read for.
        meta: source file and options.
    """

    images: list[str]
    captions: list[str]
    img2txt: list[list[int]]
    txt2img: np.ndarray
    split: str
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, image_indices) -> CaptionRetrievalSet:
        """The given images with their captions, re-indexed (e.g. one 1K fold of COCO 5K test)."""
        groups = [[self.captions[t] for t in self.img2txt[i]] for i in image_indices]
        return from_groups([self.images[i] for i in image_indices], groups, self.split, dict(self.meta))


def from_groups(images: list[str], groups: list[list[str]], split: str, meta: dict,
                captions_per_image: str = "all") -> CaptionRetrievalSet:
    """Build the flat caption list and both maps from one caption list per image."""
    if captions_per_image not in CAPTION_POLICIES:
        raise DatasetError(f"captions_per_image must be one of {', '.join(CAPTION_POLICIES)}, "
                           f"got {captions_per_image!r}")
    if captions_per_image == "first5":
        short = [i for i, g in enumerate(groups) if len(g) < 5]
        if short:
            raise DatasetError(f"captions_per_image 'first5' needs 5 captions per image; {len(short)} images have "
                               f"fewer (first: {images[short[0]]}); use 'all'")
        groups = [g[:5] for g in groups]
    captions, img2txt, txt2img = [], [], []
    for image_index, group in enumerate(groups):
        img2txt.append(list(range(len(captions), len(captions) + len(group))))
        captions.extend(group)
        txt2img.extend([image_index] * len(group))
    meta = dict(meta, captions_per_image=captions_per_image)
    return CaptionRetrievalSet(images=list(images), captions=captions, img2txt=img2txt,
                               txt2img=np.asarray(txt2img, dtype=np.int64), split=split, meta=meta)


def read_karpathy(path: str, image_root: str, split: str = "test", captions_per_image: str = "all",
                  text: str = "raw") -> CaptionRetrievalSet:
    """Karpathy's ``dataset_coco.json`` / ``dataset_flickr30k.json``.

    Args:
        path: the JSON file.
        image_root: folder of the images; COCO entries add their ``filepath`` (``train2014``/``val2014``).
        split: ``train`` (with COCO's ``restval``: 113,287 images), ``val``, ``test`` or ``restval``.
        captions_per_image: ``all`` or ``first5`` (VSE-style comparability).
        text: ``raw`` (original caption) or ``tokens`` (lower-cased tokens joined by spaces).
    """
    if split not in KARPATHY_SPLITS:
        raise DatasetError(f"Karpathy split must be one of {', '.join(KARPATHY_SPLITS)}, got {split!r}")
    if text not in KARPATHY_TEXT:
        raise DatasetError(f"text must be one of {', '.join(KARPATHY_TEXT)}, got {text!r}")
    entries = read_json(path, "caption file")
    if not isinstance(entries, dict) or "images" not in entries:
        raise DatasetError(f"{path}: expected a Karpathy split file with a top-level 'images' list")
    images, groups = [], []
    for entry in entries["images"]:
        if entry["split"] not in KARPATHY_SPLITS[split]:
            continue
        images.append(os.path.join(image_root, entry.get("filepath", ""), entry["filename"]))
        groups.append([s["raw"].strip() if text == "raw" else " ".join(s["tokens"]) for s in entry["sentences"]])
    if not images:
        raise DatasetError(f"{path}: no images in split '{split}'")
    return from_groups(images, groups, split, {"format": "karpathy", "file": path}, captions_per_image)


def read_albef(path: str, image_root: str, split: str = "test",
               captions_per_image: str = "all") -> CaptionRetrievalSet:
    """An ALBEF/BLIP JSON list of ``{"image": relative path, "caption": str or [str]}``.

    Training files repeat an image once per caption and evaluation files list all captions of an image
    at once; both are grouped by image in order of first appearance.
    """
    entries = read_json(path, "caption file")
    if not isinstance(entries, list):
        raise DatasetError(f"{path}: expected a JSON list of {{'image': ..., 'caption': ...}} entries")
    groups: dict[str, list[str]] = {}
    for number, entry in enumerate(entries):
        if "image" not in entry or "caption" not in entry:
            raise DatasetError(f"{path}: entry {number} lacks 'image' or 'caption'")
        caption = entry["caption"]
        groups.setdefault(entry["image"], []).extend([caption] if isinstance(caption, str) else caption)
    images = [os.path.join(image_root, name) for name in groups]
    return from_groups(images, list(groups.values()), split, {"format": "albef", "file": path}, captions_per_image)


def read_precomp(caption_file: str, per_image: int = 5, image_ids: list[str] | None = None,
                 split: str = "test") -> CaptionRetrievalSet:
    """A VSE/SCAN ``{split}_caps.txt``: one caption per line, ``per_image`` consecutive lines per image.

    Images only exist as precomputed features there, so ``images`` holds ``image_ids`` when given (e.g. from
    ``{split}_ids.txt``), else the image's position as a string.
    """
    if not os.path.isfile(caption_file):
        raise FileNotFoundError(f"caption file not found: {caption_file}")
    with open(caption_file, encoding="utf-8") as f:
        lines = [line.strip() for line in f.read().split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % per_image:
        raise DatasetError(f"{caption_file}: {len(lines)} captions is not a multiple of {per_image} per image")
    count = len(lines) // per_image
    if image_ids is not None and len(image_ids) != count:
        raise DatasetError(f"{caption_file}: {count} images of {per_image} captions but {len(image_ids)} image ids")
    images = list(image_ids) if image_ids is not None else [str(i) for i in range(count)]
    groups = [lines[i * per_image:(i + 1) * per_image] for i in range(count)]
    return from_groups(images, groups, split, {"format": "precomp", "file": caption_file})


def folds(data: CaptionRetrievalSet, fold_size: int = 1000) -> list[CaptionRetrievalSet]:
    """Consecutive folds of ``fold_size`` images (COCO 5K test -> five 1K folds, results then averaged)."""
    if len(data) % fold_size:
        raise DatasetError(f"{len(data)} images do not split into folds of {fold_size}")
    return [data.subset(range(start, start + fold_size)) for start in range(0, len(data), fold_size)]
