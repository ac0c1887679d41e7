"""MIRFlickr-25K raw download -> ``.mat`` triple, as ``make_mirflickr25k.py`` of DCHMT and QinLab builds it.

Rules (``specs/datasets.md`` §1.2): labels come from the 24 annotation files of
``mirflickr25k_annotations_v080`` whose names contain neither ``_r1`` nor ``README``; an image gets a row only
if it is listed in at least one of them (no filter on tags); rows are ordered by image number sorted *as
strings* ("1", "10", "100", ...); the caption is the image's tag lines joined by single spaces (empty when it
has no tags); labels are written as float64.

Deviation made explicit: the reference orders label columns by ``os.listdir``, which depends on the file
system. The default here is sorted names; ``label_order="listdir"`` reproduces the reference on the machine
at hand. Relevance (shared labels) does not depend on the column order.
"""
from __future__ import annotations

import os

import numpy as np

from dataset.builders._common import check_images, first_existing, read_lines, write_built
from dataset.records import DatasetError, PairedData

LABEL_ORDERS = ("sorted", "listdir")


def build_mirflickr(raw_dir: str, out_dir: str, image_dir: str | None = None, annotation_dir: str | None = None,
                    label_order: str = "sorted", missing_images: str = "error") -> PairedData:
    """Build the triple from the raw MIRFlickr-25K download.

    Args:
        raw_dir: folder holding ``mirflickr25k_annotations_v080/`` and the image folder ``mirflickr/`` (DCHMT
            layout) or ``mirflickr25k/mirflickr/`` (QinLab layout).
        out_dir: where ``index.mat``, ``caption.mat`` and ``label.mat`` are written.
        image_dir: the ``mirflickr`` folder (``im<k>.jpg`` and ``meta/tags/tags<k>.txt``), if not found above.
        annotation_dir: the annotation folder, if not found above.
        label_order: ``sorted`` (default) or ``listdir`` (the reference's file-system order).
        missing_images: ``error``, ``drop`` or ``ignore`` for rows whose image file is absent.

    Returns:
        The written rows; ``meta["report"]`` says what was kept and dropped and why.
    """
    if label_order not in LABEL_ORDERS:
        raise DatasetError(f"label_order must be one of {', '.join(LABEL_ORDERS)}, got {label_order!r}")
    annotation_dir = annotation_dir or first_existing(
        [os.path.join(raw_dir, "mirflickr25k_annotations_v080")], "MIRFlickr annotation folder")
    image_dir = os.path.abspath(image_dir or first_existing(
        [os.path.join(raw_dir, "mirflickr25k", "mirflickr"), os.path.join(raw_dir, "mirflickr")],
        "MIRFlickr image folder"))
    tag_dir = os.path.join(image_dir, "meta", "tags")

    names = [n for n in os.listdir(annotation_dir)
             if "_r1" not in n and "README" not in n and os.path.isfile(os.path.join(annotation_dir, n))]
    if label_order == "sorted":
        names.sort()
    if not names:
        raise DatasetError(f"{annotation_dir}: no label files (expected the 24 concept files such as animals.txt)")
    members: dict[str, set[int]] = {}
    for column, name in enumerate(names):
        path = os.path.join(annotation_dir, name)
        for number, line in enumerate(read_lines(path), start=1):
            image = line.strip()
            if not image:
                continue
            if not image.isdigit():
                raise DatasetError(f"{path}: line {number} is {line!r}; expected a 1-based image number")
            members.setdefault(image, set()).add(column)

    keys = sorted(members)
    labels = np.zeros((len(keys), len(names)), dtype=np.uint8)
    for row, key in enumerate(keys):
        labels[row, sorted(members[key])] = 1
    missing_tags = [k for k in keys if not os.path.isfile(os.path.join(tag_dir, f"tags{k}.txt"))]
    if missing_tags:
        raise DatasetError(f"{tag_dir}: {len(missing_tags)} labelled images have no tag file (first: "
                           + ", ".join(f"tags{k}.txt" for k in missing_tags[:3]) + "); expected one per image")
    captions = [[" ".join(line.strip() for line in read_lines(os.path.join(tag_dir, f"tags{k}.txt"))).strip()]
                for k in keys]

    image_files = sum(1 for n in os.listdir(image_dir) if n.startswith("im") and n.endswith(".jpg"))
    untagged = sum(1 for row in captions if not row[0])
    label_names = [os.path.splitext(n)[0] for n in names]
    report = [
        f"label columns ({len(names)}, {label_order} order): {', '.join(label_names)}",
        f"kept {len(keys)} images listed in at least one label file; {max(image_files - len(keys), 0)} of the "
        f"{image_files} image files in {image_dir} have no label and were dropped",
        f"{untagged} kept images have no tags (empty caption, kept)",
    ]
    data = PairedData(images=[os.path.join(image_dir, f"im{k}.jpg") for k in keys], captions=captions,
                      labels=labels, ids=[int(k) for k in keys],
                      meta={"builder": "mirflickr", "label_names": label_names, "report": report})
    return write_built(check_images(data, missing_images), out_dir, np.float64)
