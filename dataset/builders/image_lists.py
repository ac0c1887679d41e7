"""A prepared ``.mat`` triple -> DeepHash-pytorch list files, so the cross-modal packs serve single-modal runs.

The rows are split by one of the presets of :mod:`dataset.splits` (``classic`` by default: MIRFlickr 2,000 /
10,000, NUS-WIDE 2,100 / 10,500, MS-COCO 5,000 / 10,000 query / train, as the single-modal hashing papers
use); ``test.txt`` holds the queries, ``train.txt`` the training images and ``database.txt`` every other row
(train inside the database, as DeepHash-pytorch's NUS-WIDE and MS-COCO lists have it). Captions are not
written: list files carry images and labels only.
"""
from __future__ import annotations

import os

from dataset.cifar import write_list_files
from dataset.mat_triple import read_mat_triple
from dataset.records import PairedData
from dataset.splits import make_split


def build_image_lists(triple_dir: str, out_dir: str, caption_file: str = "caption.mat", image_root: str | None = None,
                      path_keep: int | None = None, split: str = "classic", dataset: str | None = None,
                      query_num: int | None = None, train_num: int | None = None, seed: int | None = None,
                      relative_to: str | None = None) -> PairedData:
    """Write ``test.txt`` / ``train.txt`` / ``database.txt`` of a triple's rows into ``out_dir``.

    Args:
        triple_dir: the folder of ``index.mat``, the caption file and ``label.mat``.
        caption_file: ``caption.mat``, or ``caption.txt`` for NUS-WIDE packs (read only because the triple
            reader checks the rows line up).
        image_root, path_keep: re-root the triple's stored paths, as ``mat_triple`` does.
        split, dataset, query_num, train_num, seed: the split (:func:`dataset.splits.make_split`).
        relative_to: write image paths relative to this folder (then ``dataset.image_root``); absolute otherwise.

    Returns:
        The triple's rows; ``meta["report"]`` says what was written.
    """
    data = read_mat_triple(triple_dir, caption_file=caption_file, image_root=image_root, path_keep=path_keep,
                           check_images="all")
    rows = make_split(len(data), preset=split, dataset=dataset, query_num=query_num, train_num=train_num, seed=seed)
    paths = [os.path.abspath(p) for p in data.images]
    if relative_to is not None:
        paths = [os.path.relpath(p, os.path.abspath(relative_to)) for p in paths]
    files = write_list_files(out_dir, paths, data.labels, rows)
    data.meta["report"] = [f"split '{split}': {len(rows['query'])} query, {len(rows['train'])} train, "
                           f"{len(rows['retrieval'])} database rows of {len(data)}, {data.labels.shape[1]} label "
                           f"columns", "wrote " + ", ".join(files)]
    return data
