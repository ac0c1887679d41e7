"""The in-memory form every dataset reader produces, and the error they raise.

Readers of different on-disk formats (the DCMHT ``.mat`` triple, CIFAR batches, list files) all return a
:class:`PairedData`, so the torch ``Dataset``, the split code and the synthetic generator depend on one shape
only. See ``specs/datasets.md`` §0.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np


class DatasetError(ValueError):
    """A dataset file is malformed or inconsistent; the one-line message names the file and the fix."""


def one_line(err: BaseException) -> str:
    """A library error's message folded onto one line, to quote inside a DatasetError."""
    return " ".join(str(err).split())


def read_json(path: str, what: str):
    """A JSON annotation file; a missing one is named with ``what`` it should be, a broken one with the error."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{path}: not valid JSON ({err})") from None


@dataclass
class PairedData:
    """Aligned rows of images, captions and labels.

    Row ``i`` of every field describes the same image/text pair.

    Attributes:
        images: resolved image paths, or a uint8 (N, H, W, 3) RGB pixel array.
        captions: one or more stripped captions per row (a row may hold a single empty string).
        labels: uint8 (N, C) multi-hot labels, or None for label-free data.
        ids: optional original ids (MIRFlickr number, COCO image id, ...), for debugging and split files.
        meta: provenance: source files, label names, builder, image root, dropped rows.
    """

    images: list[str] | np.ndarray
    captions: list[list[str]]
    labels: np.ndarray | None
    ids: list | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        counts = {"images": len(self.images), "captions": len(self.captions)}
        if self.labels is not None:
            counts["labels"] = len(self.labels)
        if self.ids is not None:
            counts["ids"] = len(self.ids)
        if len(set(counts.values())) > 1:
            shown = ", ".join(f"{k} {v}" for k, v in counts.items())
            raise DatasetError(f"PairedData fields have different row counts ({shown}); every field needs one row "
                               f"per pair")

    def __len__(self) -> int:
        return len(self.captions)

    def subset(self, indices) -> PairedData:
        """The rows ``indices`` (in that order), sharing ``meta``; used to drop rows and to cut splits."""
        indices = np.asarray(indices, dtype=np.int64)
        if isinstance(self.images, np.ndarray):
            images = self.images[indices]
        else:
            images = [self.images[i] for i in indices]
        return PairedData(
            images=images,
            captions=[self.captions[i] for i in indices],
            labels=None if self.labels is None else self.labels[indices],
            ids=None if self.ids is None else [self.ids[i] for i in indices],
            meta=dict(self.meta),
        )
