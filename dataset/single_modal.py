"""The torch side of single-modal image hashing: CIFAR-10, DeepHash-pytorch list files and synthetic images.

Each builder is registered with the ``image_retrieval`` evaluator (image -> image). Training items hold two
independent augmented views of their image (``image``, ``image2``; WCH spec §10); query and retrieval items
one deterministic view. Images are normalised with ImageNet statistics by default, as DeepHash-pytorch and
WCH do whatever the backbone was trained on (``normalize: backbone`` takes the backbone's own).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from common.register import registry
from common.schema import PositiveInt
from dataset.cifar import CifarProtocol, load_cifar10, read_list_split
from dataset.cross_modal import CrossModalDataset, DatasetSplits
from dataset.images import open_images
from dataset.paths import CheckImages
from dataset.records import PairedData
from dataset.synthetic import generate_images
from dataset.transforms import contrastive_transform

Normalize = Literal["imagenet", "backbone"]


def view_transform(preprocess, train: bool, normalize: Normalize = "imagenet"):
    """WCH's transforms (spec §10) at the backbone's size, normalised with ImageNet statistics or the backbone's."""
    mean, std = ((IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD) if normalize == "imagenet"
                 else (preprocess.mean, preprocess.std))
    return contrastive_transform(preprocess.image_size, mean, std, train=train)


def evaluation_transform(preprocess, normalize: Normalize = "imagenet"):
    """The one deterministic view of query and retrieval images (registered beside each dataset, so that tools
    encoding images outside the runner encode them as the evaluation did)."""
    return view_transform(preprocess, train=False, normalize=normalize)


def make_image_datasets(data: PairedData, split: dict[str, np.ndarray], preprocess,
                        normalize: Normalize = "imagenet") -> DatasetSplits:
    """Train (two views per item), query and retrieval datasets of images only, sharing one image source."""
    images = open_images(data.images)

    def part(name: str, train: bool) -> CrossModalDataset:
        return CrossModalDataset(data, split[name], images, view_transform(preprocess, train, normalize), None,
                                 modalities=("image",), views=2 if train else 1)

    return DatasetSplits(part("train", True), part("query", False), part("retrieval", False), split,
                         int(data.labels.shape[1]), dict(data.meta))


@registry.register_dataset("cifar10", evaluator="image_retrieval",
                            evaluation_transform=evaluation_transform)
def cifar10(preprocess, root: str = "data/cifar10", protocol: CifarProtocol = "cifar10", split_seed: int = 0,
            normalize: Normalize = "imagenet") -> DatasetSplits:
    """CIFAR-10 from the official python or binary batches under ``root``, split by a DeepHash-pytorch protocol
    (WCH spec §12): ``cifar10`` 1,000 / 5,000 / 54,000 (query / train / database), ``cifar10-1`` 1,000 / 5,000
    / 59,000 (train inside the database), ``cifar10-2`` 10,000 / 50,000 / 50,000 (database = train). The
    reference draws the split unseeded; ``split_seed`` fixes it and the run directory keeps it."""
    data, split = load_cifar10(root, protocol, split_seed)
    data.meta["protocol"] = protocol
    return make_image_datasets(data, split, preprocess, normalize)


@registry.register_dataset("image_list", evaluator="image_retrieval",
                            evaluation_transform=evaluation_transform)
def image_list(preprocess, root: str, image_root: str | None = None, path_keep: PositiveInt | None = None,
               path_prefix_map: dict | None = None, check_images: CheckImages = "sample",
               num_classes: PositiveInt | None = None, normalize: Normalize = "imagenet") -> DatasetSplits:
    """DeepHash-pytorch list files (``test.txt`` = queries, ``train.txt``, ``database.txt``) under ``root``.

    ``image_root`` is the reference's ``data_path`` (stored paths are relative to it); lists written with
    absolute paths on another machine are re-rooted by ``image_root`` + ``path_keep``, as the ``.mat`` triple's
    paths are. ``num_classes`` checks the label width (NUS-WIDE 21, MS-COCO 80, MIRFlickr 24).
    """
    data, split = read_list_split(root, image_root, path_keep, path_prefix_map, check_images, num_classes)
    return make_image_datasets(data, split, preprocess, normalize)


@registry.register_dataset("synthetic_images", evaluator="image_retrieval",
                            evaluation_transform=evaluation_transform)
def synthetic_images(preprocess, root: str = "data/synthetic_images", num_samples: PositiveInt = 600,
                     num_classes: PositiveInt = 10, image_size: PositiveInt = 32, data_seed: int = 0,
                     query_num: PositiveInt = 100, train_num: PositiveInt = 400,
                     normalize: Normalize = "imagenet") -> DatasetSplits:
    """Generate single-concept images with their list files under ``root`` (once per parameter set) and read
    them with the ``image_list`` reader, as real data."""
    params = dict(num_samples=num_samples, num_classes=num_classes, image_size=image_size, query_num=query_num,
                  train_num=train_num, seed=data_seed)
    folder = Path(root) / hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    if not (folder / "database.txt").is_file():
        generate_images(folder, **params)
    data, split = read_list_split(str(folder), check_images="all", num_classes=num_classes)
    return make_image_datasets(data, split, preprocess, normalize)
