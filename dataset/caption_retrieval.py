"""Label-free image-caption data as a dataset builder: train on pairs, evaluate with Recall@K.

Training items are (image, one of its captions drawn per epoch); with no labels, each item's only positive
is itself (``models.losses.batch_similarity``). Evaluation encodes the evaluation split's images and all
its captions once and reports caption Recall@K both ways (evaluation.md §9), optionally averaged over folds
of ``fold_size`` images (COCO 1K).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from common import metrics
from common.register import registry
from common.schema import PositiveInt
from dataset.caption_pairs import CaptionRetrievalSet, folds, read_albef, read_karpathy
from dataset.cross_modal import CrossModalDataset, DatasetSplits
from dataset.images import open_images
from dataset.records import DatasetError, PairedData
from dataset.transforms import evaluation_transform, image_transform


@dataclass
class CaptionEval:
    """The evaluation side of caption data: image and caption datasets plus the maps between them."""

    images: CrossModalDataset
    captions: CrossModalDataset
    data: CaptionRetrievalSet
    fold_size: int | None = None

    def recall(self, image_codes, text_codes, ks=(1, 5, 10)) -> dict[str, dict[str, float]]:
        """R@K per direction (percent) and their mean ``R@mean``; averaged over folds when set."""
        parts = folds(self.data, self.fold_size) if self.fold_size else [self.data]
        per_fold = []
        for number, fold in enumerate(parts):
            image_rows = np.arange(len(fold)) + number * len(fold)
            text_rows = [t for i in image_rows for t in self.data.img2txt[i]]
            per_fold.append(metrics.caption_recall_at_k(image_codes[image_rows], text_codes[text_rows],
                                                        img2txt=fold.img2txt, txt2img=fold.txt2img, ks=ks))
        flat = {k: float(np.mean([f[k] for f in per_fold])) for k in per_fold[0]}
        out = {}
        for direction in ("i2t", "t2i"):
            values = {k[len(direction) + 1:]: v for k, v in flat.items() if k.startswith(direction + "_")}
            values["R@mean"] = float(np.mean([values[f"R@{k}"] for k in ks]))
            out[direction] = values
        out["all"] = {"rsum": flat["rsum"], "R@mean": flat["R@mean"]}
        return out


def _read(fmt: str, split: str, annotation_file: str | None, train_file: str | None, eval_file: str | None,
          image_root: str, captions_per_image: str, text: str, role: str) -> CaptionRetrievalSet:
    if fmt == "karpathy":
        if annotation_file is None:
            raise DatasetError("dataset.annotation_file must name the Karpathy JSON (dataset_coco.json, ...)")
        return read_karpathy(annotation_file, image_root, split=split, captions_per_image=captions_per_image,
                             text=text)
    path = train_file if role == "train" else eval_file
    if path is None:
        raise DatasetError(f"dataset.{role}_file must name the ALBEF-style JSON of the {role} split")
    return read_albef(path, image_root, split=split, captions_per_image=captions_per_image)


def _paired(data: CaptionRetrievalSet) -> PairedData:
    groups = [[data.captions[t] for t in rows] for rows in data.img2txt]
    return PairedData(images=list(data.images), captions=groups, labels=None, meta=dict(data.meta))


@registry.register_dataset("caption_pairs", evaluator="caption_recall", evaluation_transform=evaluation_transform)
def caption_pairs(preprocess, seed: int, image_root: str, format: Literal["karpathy", "albef"] = "karpathy",
                  annotation_file: str | None = None, train_file: str | None = None, eval_file: str | None = None,
                  train_split: str = "train", eval_split: str = "test", captions_per_image: str = "all",
                  text: str = "raw", fold_size: PositiveInt | None = None, image_cache: bool = False,
                  train_transform: str = "original") -> DatasetSplits:
    """Karpathy or ALBEF caption files: pairs for training, Recall@K on ``eval_split`` for evaluation (precomp
    sets hold image features only, which the image towers cannot read)."""
    read = dict(annotation_file=annotation_file, train_file=train_file, eval_file=eval_file, image_root=image_root,
                captions_per_image=captions_per_image, text=text)
    train_set = _read(format, train_split, **read, role="train")
    eval_set = _read(format, eval_split, **read, role="eval")
    size, mean, std = preprocess.image_size, preprocess.mean, preprocess.std
    cache = f"{image_root}/cache" if image_cache else None
    train_data, eval_data = _paired(train_set), _paired(eval_set)
    train = CrossModalDataset(train_data, np.arange(len(train_data)),
                              open_images(train_data.images, cache_dir=cache, resolution=size if cache else None),
                              image_transform(size, mean, std, train=True, kind=train_transform),
                              preprocess.tokenizer, caption_mode="random", seed=seed)
    eval_tf = evaluation_transform(preprocess)
    eval_images = open_images(eval_data.images, cache_dir=cache, resolution=size if cache else None)
    images = CrossModalDataset(eval_data, np.arange(len(eval_data)), eval_images, eval_tf, preprocess.tokenizer,
                               modalities=("image",))
    flat = PairedData(images=[eval_data.images[i] for i in eval_set.txt2img],
                      captions=[[c] for c in eval_set.captions], labels=None)
    captions = CrossModalDataset(flat, np.arange(len(flat)), None, eval_tf, preprocess.tokenizer,
                                 modalities=("text",))
    split = {"train": np.arange(len(train_data)), "query": np.arange(len(eval_data)),
             "retrieval": np.arange(len(flat))}
    return DatasetSplits(train, None, None, split, None, dict(eval_set.meta),
                         caption_eval=CaptionEval(images, captions, eval_set, fold_size))
