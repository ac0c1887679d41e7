"""The torch side of cross-modal data: one ``Dataset`` class for every split, and the ``mat_triple`` builder.

A dataset builder (registered under ``dataset``) turns its config section into :class:`DatasetSplits`:
train, query and retrieval datasets over the same rows, yielding the batch dict of docs/design.md
(``image``, ``text``, ``text_mask`` where the tokenizer makes one, ``label``, ``index``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from torch.utils.data import Dataset

from common.register import registry
from common.schema import PositiveInt
from dataset.images import open_images
from dataset.mat_triple import read_mat_triple
from dataset.records import DatasetError, PairedData
from dataset.splits import make_split
from dataset.tokenizers import text_inputs
from dataset.transforms import evaluation_transform, image_transform

CaptionMode = Literal["random", "first"]
CAPTION_MODES = get_args(CaptionMode)


class CrossModalDataset(Dataset):
    """Rows ``indices`` of a :class:`PairedData` as image/text/label items.

    ``index`` in an item is its position in this split (memory banks and gathered batches use it);
    ``modalities`` limits an item to the image or the text (evaluation sets of caption data, single-modal
    data); ``views = 2`` adds ``image2``, a second independent draw of the transform from the same image
    (methods that contrast two augmentations, WCH). With
    several captions per row, ``caption_mode='random'`` draws one per load from an RNG keyed by
    (seed, epoch, row), so the choice is the same whatever the number of workers or processes and a resumed
    run sees the captions the uninterrupted run saw; ``first`` always takes the first caption.
    """

    def __init__(self, data: PairedData, indices: np.ndarray, images, transform, tokenizer,
                 caption_mode: str = "first", seed: int = 0, modalities=("image", "text"), views: int = 1):
        if caption_mode not in CAPTION_MODES:
            raise ValueError(f"caption mode must be one of {CAPTION_MODES}, got '{caption_mode}'")
        if views not in (1, 2):
            raise ValueError(f"an item holds one or two views of its image, got views={views}")
        if "text" in modalities and tokenizer is None:
            raise DatasetError("this dataset pairs images with captions, but the model has no text tower (its "
                               "backbone has no tokenizer); train an image-only model on a single-modal dataset "
                               "(cifar10, image_list, synthetic_images)")
        self.data, self.indices, self.images = data, np.asarray(indices, dtype=np.int64), images
        self.transform, self.tokenizer = transform, tokenizer
        self.caption_mode, self.seed, self.epoch = caption_mode, seed, 0
        self.modalities, self.views = tuple(modalities), views

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def caption_index(self, row: int) -> int:
        """Which of the row's captions this load uses (0 unless drawn at random)."""
        count = len(self.data.captions[row])
        if self.caption_mode == "first" or count == 1:
            return 0
        return int(np.random.default_rng((self.seed, self.epoch, row)).integers(count))

    def caption(self, row: int) -> str:
        return self.data.captions[row][self.caption_index(row)]

    def __getitem__(self, position: int) -> dict:
        row = int(self.indices[position])
        item = {"index": torch.tensor(position, dtype=torch.long)}
        if "image" in self.modalities:
            image = self.images[row]
            item["image"] = self.transform(image)
            if self.views == 2:
                item["image2"] = self.transform(image)
        if "text" in self.modalities:
            item.update({key: ids[0] for key, ids in text_inputs(self.tokenizer([self.caption(row)])).items()})
        if self.data.labels is not None:
            item["label"] = torch.from_numpy(self.data.labels[row].astype(np.float32))
        return item

    @property
    def labels(self) -> torch.Tensor | None:
        """All labels of this split in item order (for evaluation), or None for label-free data."""
        if self.data.labels is None:
            return None
        return torch.from_numpy(self.data.labels[self.indices].astype(np.float32))


@dataclass
class DatasetSplits:
    """What a dataset builder returns."""

    train: Dataset
    query: Dataset | None
    retrieval: Dataset | None
    split: dict[str, np.ndarray]
    num_classes: int | None
    meta: dict = field(default_factory=dict)
    caption_eval: object | None = None  # label-free data: a CaptionEval (dataset/caption_retrieval.py)


def make_datasets(data: PairedData, split: dict[str, np.ndarray], preprocess, image_cache: str | None = None,
                  train_transform: str = "original", train_caption: str = "random",
                  eval_caption: str = "first", seed: int = 0) -> DatasetSplits:
    """Wrap the rows of ``data`` into train / query / retrieval datasets sharing one image source."""
    images = open_images(data.images, cache_dir=image_cache, resolution=preprocess.image_size if image_cache else None)
    size, mean, std = preprocess.image_size, preprocess.mean, preprocess.std
    train_tf = image_transform(size, mean, std, train=True, kind=train_transform)
    eval_tf = evaluation_transform(preprocess)

    def part(name, transform, caption_mode):
        return CrossModalDataset(data, split[name], images, transform, preprocess.tokenizer, caption_mode, seed)

    num_classes = None if data.labels is None else int(data.labels.shape[1])
    return DatasetSplits(part("train", train_tf, train_caption), part("query", eval_tf, eval_caption),
                         part("retrieval", eval_tf, eval_caption), split, num_classes, dict(data.meta))


@registry.register_dataset("mat_triple", evaluator="cross_modal", evaluation_transform=evaluation_transform)
def mat_triple(preprocess, seed: int, root: str, index_file: str = "index.mat", caption_file: str = "caption.mat",
               label_file: str = "label.mat", image_root: str | None = None, path_keep: PositiveInt | None = None,
               path_prefix_map: dict | None = None, check_images: str = "sample", zero_label_rows: str = "warn",
               dataset: str | None = None, split: str = "clip_hash", query_num: PositiveInt | None = None,
               train_num: PositiveInt | None = None, split_seed: int | None = None, split_file: str | None = None,
               image_cache: bool = False, train_transform: str = "original", train_caption: CaptionMode = "random",
               eval_caption: CaptionMode = "first") -> DatasetSplits:
    """The DCMHT-style ``.mat`` triple (index/caption/label) split by a preset (datasets.md §1-2).

    ``image_cache: true`` decodes every image once into ``<root>/cache/`` (uint8 memmap per resolution).
    """
    data = read_mat_triple(root, index_file=index_file, caption_file=caption_file, label_file=label_file,
                           image_root=image_root, path_keep=path_keep, path_prefix_map=path_prefix_map,
                           check_images=check_images, zero_label_rows=zero_label_rows)
    indices = make_split(len(data), preset=split, dataset=dataset, query_num=query_num, train_num=train_num,
                         seed=split_seed, split_file=split_file)
    cache = str(Path(root) / "cache") if image_cache else None
    return make_datasets(data, indices, preprocess, cache, train_transform, train_caption, eval_caption, seed)

