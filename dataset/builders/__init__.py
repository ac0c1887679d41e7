"""Builders that turn the raw public downloads into the DCMHT-style ``.mat`` triple.

Each follows the reference ``make_*.py`` of its dataset (``specs/datasets.md`` §1.2), writes through
:func:`dataset.mat_triple.write_mat_triple`, and returns the rows with a report of what it kept and dropped.
"""
from dataset.builders._common import MISSING_IMAGES
from dataset.builders.coco import build_coco
from dataset.builders.mirflickr import build_mirflickr
from dataset.builders.nuswide import build_nuswide

__all__ = ["MISSING_IMAGES", "build_coco", "build_mirflickr", "build_nuswide"]
