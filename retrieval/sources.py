"""What gets indexed or queried: items from an image folder, a caption file, or a split of the configured
dataset, and their encoding into packed codes in batches.

An :class:`Item` is the record kept for it (path or text, labels when known) and its input: a caption string,
or a function that decodes the image (so nothing is decoded before its batch). Sources are iterators, and
:func:`encode_batches` yields the codes of one batch at a time, so memory does not grow with the collection.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from common.config import Config, build, resolve
from dataset.images import load_rgb
from dataset.records import DatasetError
from models.trained import TrainedModel
from retrieval.backends import pack
from utils.logging import get_logger

logger = get_logger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
MODALITIES = ("image", "text")


@dataclass
class Item:
    """One thing to encode: ``record`` is what the index keeps, ``input`` the caption or the image's decoder."""

    modality: str
    record: dict
    input: str | Callable[[], Image.Image]

    @property
    def labels(self) -> set[int] | None:
        return set(self.record["labels"]) if "labels" in self.record else None

    @property
    def shown(self) -> str:
        """How the item is named in tables and figures."""
        return self.record.get("text") or self.record.get("path") or f"row {self.record.get('row')}"


def image_file(path: str | os.PathLike) -> Item:
    path = os.path.abspath(path)
    return Item("image", {"path": path}, lambda: load_rgb(path))


def image_folder(folder: str | os.PathLike) -> Iterator[Item]:
    """Every image under ``folder`` (recursively, by suffix), in sorted path order; a missing folder is an
    error at once, before anything is encoded."""
    if not os.path.isdir(folder):
        raise DatasetError(f"image folder '{folder}' not found (expected a folder of images)")
    return _walk(folder)


def _walk(folder: str | os.PathLike) -> Iterator[Item]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_SUFFIXES):
                yield image_file(os.path.join(root, name))


def images(paths: Iterable[str]) -> Iterator[Item]:
    """Image files and folders of images, in the given order."""
    for path in paths:
        if os.path.isdir(path):
            yield from image_folder(path)
        else:
            yield image_file(path)


def texts(captions: Iterable[str]) -> Iterator[Item]:
    """Caption strings; an empty one is refused (it would match everything equally badly)."""
    for caption in captions:
        if not caption.strip():
            raise ValueError("empty text query: give words to search for")
        yield Item("text", {"text": caption.strip()}, caption.strip())


def caption_file(path: str | os.PathLike) -> Iterator[Item]:
    """Captions of a text file (one per non-empty line) or of a ``.jsonl`` file (an object per line with
    ``text`` and, optionally, ``labels``: class indices)."""
    if not os.path.isfile(path):
        raise DatasetError(f"caption file '{path}' not found (expected a text file or .jsonl of captions)")
    return _caption_lines(path)


def _caption_lines(path: str | os.PathLike) -> Iterator[Item]:
    jsonl = str(path).endswith(".jsonl")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            if not jsonl:
                yield Item("text", {"text": line.strip()}, line.strip())
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
                raise DatasetError(f"{path}:{number}: expected a JSON object with a 'text' string")
            record = {"text": entry["text"], **({"labels": entry["labels"]} if "labels" in entry else {})}
            yield Item("text", record, entry["text"])


def dataset_split(trained: TrainedModel, split: str, modality: str, count: int | None = None) -> Iterator[Item]:
    """The first ``count`` (default all) items of a split (``train``, ``query``, ``retrieval``) of the
    dataset the model was trained on, with their labels: images (with their first caption) or captions."""
    from runners.base import config_sections

    config = trained.config
    section = resolve(Config({"dataset": config["dataset"]}, {}, str(trained.checkpoint)),
                      {"dataset": config_sections()["dataset"]})["dataset"]
    data = build("dataset", section, preprocess=trained.preprocess, seed=config["run"]["seed"])
    part = getattr(data, split, None)
    if part is None:
        raise ValueError(f"the dataset {section['name']} of '{trained.checkpoint}' has no {split} split "
                         f"(splits: train, query, retrieval)")
    paths = None if isinstance(part.data.images, np.ndarray) else part.data.images
    for position, row in enumerate(islice(part.indices, count)):
        row = int(row)
        record = {"row": row}
        if part.data.labels is not None:
            record["labels"] = np.flatnonzero(part.data.labels[row]).tolist()
        if modality == "text":
            record["text"] = part.caption(row)
            yield Item("text", record, record["text"])
            continue
        if paths is not None:
            record["path"] = os.path.abspath(paths[row])
        if part.data.captions[row]:  # single-modal data has no captions
            record["caption"] = part.data.captions[row][0]
        yield Item("image", record, lambda row=row: part.images[row])


def encode_batches(trained: TrainedModel, items: Iterable[Item], batch_size: int = 64, workers: int = 4,
                   skip_bad_files: bool = False, progress: bool = True) -> Iterator[tuple[np.ndarray, list[Item]]]:
    """Packed codes (B, bits/8) of consecutive batches of ``items`` (all of one modality) with their items.

    Images are decoded and transformed by ``workers`` threads (PIL releases the GIL). A file that cannot be
    read stops with a one-line error naming it, unless ``skip_bad_files``: then it is logged and left out.
    """
    transform = trained.image_transform()

    def prepare(item: Item):
        if item.modality == "text":
            return item.input
        try:
            return transform(item.input())
        except DatasetError as err:
            if not skip_bad_files:
                raise
            logger.warning(f"skipped: {err}")
            return None

    stream = iter(tqdm(items, unit="item", desc="encoding", disable=not progress, dynamic_ncols=True))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while batch := list(islice(stream, batch_size)):
            inputs = list(pool.map(prepare, batch))
            kept = [(item, x) for item, x in zip(batch, inputs) if x is not None]
            if not kept:
                continue
            modality = kept[0][0].modality
            inputs = [x for _, x in kept]
            encoded = trained.encode(modality, inputs if modality == "text" else torch.stack(inputs))
            yield pack(encoded.numpy()), [item for item, _ in kept]
