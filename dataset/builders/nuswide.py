"""NUS-WIDE raw download -> ``.mat`` triple (captions in ``caption.txt``), as QinLab's ``make_nuswide.py``.

Rules (``specs/datasets.md`` §1.2): one row per line of ``ImageList/Imagelist.txt`` (backslashes turned into
``/``); the caption is the tag part of the matching ``NUS_WID_Tags/All_Tags.txt`` line joined by spaces, or
``123456`` when the image has no tag (blank lines of that file are skipped, as in the reference); label
column c = line i of ``Groundtruth/AllLabels/<used_label[c]>`` equals ``1``, with the 21 files of
``used_label.txt`` in its order; labels are written as int8.

Row filter: the rows listed in ``not_used_id.txt`` are dropped. QinLab's builder, the reference build here
(195,834 rows with QinLab's list), maps each value v to the 0-based row v - 2 (``not_used_offset=-2``);
DCHMT's builder uses the values as they are (``not_used_offset=0``). Do not mix a list and an offset from
different code bases. ``row_filter="unlabelled"`` instead drops the rows without any of the used labels, for
users without the list (its agreement with QinLab's list is unverified).
"""
from __future__ import annotations

import os

import numpy as np

from dataset.builders._common import check_images, first_existing, read_lines, write_built
from dataset.records import DatasetError, PairedData

USED_LABELS = ("animal", "beach", "buildings", "clouds", "flowers", "grass", "lake", "mountain", "ocean", "person",
               "plants", "reflection", "road", "rocks", "sky", "snow", "sunset", "tree", "vehicle", "water", "window")
NOT_USED_OFFSET = -2
ROW_FILTERS = ("not_used_ids", "unlabelled")
EMPTY_CAPTION = "123456"


def build_nuswide(raw_dir: str, out_dir: str, image_dir: str | None = None, used_labels: str | None = None,
                  not_used_ids: str | None = None, not_used_offset: int = NOT_USED_OFFSET,
                  row_filter: str = "not_used_ids", missing_images: str = "error") -> PairedData:
    """Build the triple from the official NUS-WIDE release.

    Args:
        raw_dir: folder holding ``ImageList/``, ``NUS_WID_Tags/`` and ``Groundtruth/AllLabels/``.
        out_dir: where ``index.mat``, ``caption.txt`` and ``label.mat`` are written.
        image_dir: the image root (``Flickr/`` with one folder per concept); default ``raw_dir/Flickr``.
        used_labels: the list of label file names; default ``used_label.txt`` in ``raw_dir`` or
            ``raw_dir/Groundtruth``, else the 21 concepts of QinLab's list.
        not_used_ids: the list of rows to drop; default ``not_used_id.txt`` (or ``not-used-id.txt``) in
            ``raw_dir`` or ``raw_dir/Groundtruth``.
        not_used_offset: added to each listed value to get the 0-based row (-2 QinLab, 0 DCHMT).
        row_filter: ``not_used_ids`` (the reference) or ``unlabelled``.
        missing_images: ``error``, ``drop`` or ``ignore`` for rows whose image file is absent.

    Returns:
        The written rows; ``meta["report"]`` says what was kept and dropped and why.
    """
    if row_filter not in ROW_FILTERS:
        raise DatasetError(f"row_filter must be one of {', '.join(ROW_FILTERS)}, got {row_filter!r}")
    image_dir = os.path.abspath(image_dir or os.path.join(raw_dir, "Flickr"))
    list_path = os.path.join(raw_dir, "ImageList", "Imagelist.txt")
    relative = [line.strip().replace("\\", "/") for line in read_lines(list_path)]
    num_rows = len(relative)
    report = [f"read {num_rows} rows from {list_path}"]

    tag_path = os.path.join(raw_dir, "NUS_WID_Tags", "All_Tags.txt")
    tag_lines = [line.split() for line in read_lines(tag_path) if line.strip()]
    if len(tag_lines) != num_rows:
        raise DatasetError(f"{tag_path}: {len(tag_lines)} non-blank lines but {list_path} has {num_rows}; "
                           f"expected one line per image")
    captions = [[" ".join(tokens[1:]) or EMPTY_CAPTION] for tokens in tag_lines]
    ids = [int(tokens[0]) if tokens[0].isdigit() else tokens[0] for tokens in tag_lines]

    label_files, label_source = _used_label_files(raw_dir, used_labels)
    labels = np.zeros((num_rows, len(label_files)), dtype=np.uint8)
    for column, name in enumerate(label_files):
        path = os.path.join(raw_dir, "Groundtruth", "AllLabels", name)
        values = read_lines(path)
        if len(values) != num_rows:
            raise DatasetError(f"{path}: {len(values)} lines but {list_path} has {num_rows}; expected one 0/1 "
                               f"per image")
        labels[:, column] = [value.strip() == "1" for value in values]
    label_names = [os.path.splitext(n)[0].removeprefix("Labels_") for n in label_files]
    report.insert(0, f"label columns ({len(label_files)}, {label_source} order): {', '.join(label_names)}")

    if row_filter == "not_used_ids":
        drop, note = _not_used_rows(raw_dir, not_used_ids, not_used_offset, num_rows)
    else:
        drop = np.flatnonzero(labels.sum(axis=1) == 0)
        note = f"dropped {len(drop)} rows without any of the {len(label_files)} labels"
    keep = np.setdiff1d(np.arange(num_rows), drop)
    report.append(note)
    data = PairedData(images=[os.path.join(image_dir, rel) for rel in relative], captions=captions,
                      labels=labels, ids=ids,
                      meta={"builder": "nuswide", "label_names": label_names, "report": report}).subset(keep)
    untagged = sum(1 for row in data.captions if row[0] == EMPTY_CAPTION)
    unlabelled = int((data.labels.sum(axis=1) == 0).sum())
    report.append(f"kept {len(data)} rows; {untagged} have no tags (caption '{EMPTY_CAPTION}'), {unlabelled} have "
                  f"none of the labels")
    return write_built(check_images(data, missing_images), out_dir, np.int8, caption_format="txt")


def _used_label_files(raw_dir: str, used_labels: str | None) -> tuple[list[str], str]:
    candidates = [used_labels] if used_labels else [os.path.join(raw_dir, "used_label.txt"),
                                                    os.path.join(raw_dir, "Groundtruth", "used_label.txt")]
    for path in candidates:
        if os.path.isfile(path):
            return [line.strip() for line in read_lines(path) if line.strip()], path
    if used_labels:
        raise FileNotFoundError(f"used-label list not found: {used_labels}")
    return [f"Labels_{name}.txt" for name in USED_LABELS], "built-in QinLab used_label.txt"


def _not_used_rows(raw_dir: str, not_used_ids: str | None, offset: int, num_rows: int) -> tuple[np.ndarray, str]:
    path = not_used_ids or first_existing(
        [os.path.join(raw_dir, name) for name in ("not_used_id.txt", "not-used-id.txt")]
        + [os.path.join(raw_dir, "Groundtruth", "not_used_id.txt")],
        "NUS-WIDE not_used_id list (QinLab-WFU/CLIP-based-Cross-Modal-Hashing: dataset/not-used-id.txt); "
        "or use row_filter='unlabelled'")
    values = []
    for number, line in enumerate(read_lines(path), start=1):
        if line.strip():
            try:
                values.append(int(line))
            except ValueError:
                raise DatasetError(f"{path}: line {number} is {line!r}; expected an integer id") from None
    rows = np.asarray(values, dtype=np.int64) + offset
    bad = np.flatnonzero((rows < 0) | (rows >= num_rows))
    if bad.size:
        raise DatasetError(f"{path}: value {values[bad[0]]} maps to row {rows[bad[0]]}, outside 0..{num_rows - 1} "
                           f"with not_used_offset {offset}; QinLab's list needs -2, DCHMT's builder uses 0")
    if len(np.unique(rows)) != len(rows):
        raise DatasetError(f"{path}: lists a row more than once")
    return rows, f"dropped {len(rows)} rows listed in {path} (row = value {offset:+d})"
