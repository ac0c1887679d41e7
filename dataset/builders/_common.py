"""Steps every builder shares: checking that images exist, and writing the triple with a report."""
from __future__ import annotations

import os

import numpy as np

from dataset.mat_triple import write_mat_triple
from dataset.records import DatasetError, PairedData

MISSING_IMAGES = ("error", "drop", "ignore")
_SHOW = 3


def read_lines(path: str) -> list[str]:
    """Lines of a UTF-8 text file without their line ends; FileNotFoundError names the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"raw dataset file not found: {path}")
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def first_existing(candidates: list[str], what: str) -> str:
    """The first existing path among the layouts the reference builders expect."""
    for path in candidates:
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"{what} not found; looked for {', '.join(candidates)} (pass its location explicitly)")


def check_images(data: PairedData, mode: str) -> PairedData:
    """Refuse (``error``), leave out (``drop``) or skip checking (``ignore``) rows whose image file is missing."""
    if mode not in MISSING_IMAGES:
        raise DatasetError(f"missing_images must be one of {', '.join(MISSING_IMAGES)}, got {mode!r}")
    if mode == "ignore":
        data.meta["report"].append("image files not checked")
        return data
    missing = [i for i, path in enumerate(data.images) if not os.path.isfile(path)]
    if not missing:
        data.meta["report"].append(f"all {len(data)} image files exist")
        return data
    first = ", ".join(data.images[i] for i in missing[:_SHOW])
    if mode == "error":
        raise DatasetError(f"{len(missing)} of {len(data)} image files do not exist (first: {first}); point the "
                           f"image folder option at the images or pass missing_images='drop' to leave them out")
    kept = data.subset(np.setdiff1d(np.arange(len(data)), missing))
    kept.meta["report"] = data.meta["report"] + [f"dropped {len(missing)} rows whose image file is missing "
                                                 f"(first: {first})"]
    return kept


def write_built(data: PairedData, out_dir: str, label_dtype, caption_format: str = "mat") -> PairedData:
    """Write the built rows as the triple and record the files and the final count in the report."""
    if len(data) == 0:
        raise DatasetError(f"no rows left to write to {out_dir}; see the report: {'; '.join(data.meta['report'])}")
    files = write_mat_triple(out_dir, data.images, data.captions, data.labels.astype(label_dtype), caption_format)
    data.meta["files"] = files
    data.meta["report"].append(f"wrote {len(data)} rows, {data.labels.shape[1]} label columns: "
                               + ", ".join(files.values()))
    return data
