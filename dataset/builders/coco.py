"""MS-COCO raw download -> ``.mat`` triple, as ``make_coco.py`` of DCHMT and QinLab builds it.

Rules (``specs/datasets.md`` §1.2): for each split (train2017, then val2017) read ``captions_<split>.json`` and
``instances_<split>.json``; keep the images that have at least one instance annotation (crowd regions
count); rows are sorted by integer image id within a split, splits concatenated; captions are all captions
of the image in annotation order; label column = position of the category in the instances file's
``categories`` list (80 columns); labels are written as int64. Expected N for COCO 2017: 122,218.

Where the reference would crash or misalign rows (a missing image file, an annotated image without
captions), this builder reports and leaves the row out or raises, as configured.
"""
from __future__ import annotations

import os

import numpy as np

from dataset.builders._common import check_images, write_built
from dataset.records import DatasetError, PairedData, read_json

DEFAULT_SPLITS = ("train2017", "val2017")
ANNOTATIONS = "COCO annotation file (of the official annotations/ folder)"


def build_coco(raw_dir: str, out_dir: str, splits: tuple[str, ...] = DEFAULT_SPLITS,
               missing_images: str = "error") -> PairedData:
    """Build the triple from the raw COCO download.

    Args:
        raw_dir: the COCO folder holding ``annotations/`` and one image folder per split.
        out_dir: where ``index.mat``, ``caption.mat`` and ``label.mat`` are written.
        splits: image splits in row order (``train2014 val2014`` builds the same set from COCO 2014).
        missing_images: ``error``, ``drop`` or ``ignore`` for rows whose image file is absent.

    Returns:
        The written rows; ``meta["report"]`` says what was kept and dropped and why.
    """
    raw_dir = os.path.abspath(raw_dir)
    images, captions, label_rows, ids, report = [], [], [], [], []
    categories = None
    for split in splits:
        caption_json = read_json(os.path.join(raw_dir, "annotations", f"captions_{split}.json"), ANNOTATIONS)
        instance_path = os.path.join(raw_dir, "annotations", f"instances_{split}.json")
        instance_json = read_json(instance_path, ANNOTATIONS)
        split_categories = [(c["id"], c["name"]) for c in instance_json["categories"]]
        if categories is None:
            categories = split_categories
        elif split_categories != categories:
            raise DatasetError(f"{instance_path}: its categories list differs from the first split's; label "
                               f"columns would not line up")
        column = {cat_id: i for i, (cat_id, _) in enumerate(categories)}
        file_names = {im["id"]: im["file_name"] for im in caption_json["images"]}
        texts: dict[int, list[str]] = {}
        for ann in caption_json["annotations"]:
            texts.setdefault(ann["image_id"], []).append(ann["caption"])
        objects: dict[int, set[int]] = {}
        for ann in instance_json["annotations"]:
            if ann["category_id"] not in column:
                raise DatasetError(f"{instance_path}: annotation {ann.get('id')} has category_id "
                                   f"{ann['category_id']}, which is not in the categories list")
            objects.setdefault(ann["image_id"], set()).add(column[ann["category_id"]])

        kept = sorted(i for i in file_names if i in objects and i in texts)
        unlabelled = sum(1 for i in file_names if i not in objects)
        uncaptioned = sum(1 for i in file_names if i in objects and i not in texts)
        report.append(f"{split}: {len(file_names)} images, kept {len(kept)}, dropped {unlabelled} without instance "
                      f"annotations" + (f" and {uncaptioned} without captions" if uncaptioned else ""))
        for image_id in kept:
            images.append(os.path.join(raw_dir, split, file_names[image_id]))
            captions.append(texts[image_id])
            row = np.zeros(len(categories), dtype=np.uint8)
            row[sorted(objects[image_id])] = 1
            label_rows.append(row)
            ids.append(image_id)
    if categories is None:
        raise DatasetError("no COCO splits given; pass e.g. train2017 val2017")
    report.insert(0, f"label columns ({len(categories)}, instances-file order): "
                  + ", ".join(name for _, name in categories))
    labels = np.stack(label_rows) if label_rows else np.zeros((0, len(categories)), dtype=np.uint8)
    data = PairedData(images=images, captions=captions, labels=labels, ids=ids,
                      meta={"builder": "coco", "label_names": [n for _, n in categories], "report": report})
    return write_built(check_images(data, missing_images), out_dir, np.int64)
