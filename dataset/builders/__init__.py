"""Builders that turn the raw public downloads into the DCMHT-style ``.mat`` triple, and a triple into the
DeepHash-pytorch list files of single-modal hashing.

Each raw builder follows the reference ``make_*.py`` of its dataset (``specs/datasets.md`` §1.2), writes through
:func:`dataset.mat_triple.write_mat_triple`, and returns the rows with a report of what it kept and dropped.
"""
from dataset.builders._common import MISSING_IMAGES
from dataset.builders.coco import build_coco
from dataset.builders.image_lists import build_image_lists
from dataset.builders.mirflickr import build_mirflickr
from dataset.builders.nuswide import build_nuswide

__all__ = ["MISSING_IMAGES", "build_coco", "build_image_lists", "build_mirflickr", "build_nuswide"]
