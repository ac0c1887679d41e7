"""Query / train / retrieval splits, reproducing the published code bases exactly when asked.

Every permutation protocol here follows ``specs/datasets.md`` §2.1: ``perm`` is a permutation of the rows from
the legacy numpy RNG (``np.random.RandomState(seed).permutation(n)``, identical to ``np.random.seed(seed)``
then ``np.random.permutation(n)``), ``query = perm[:Q]``, ``train = perm[Q:Q+T]`` and ``retrieval = perm[Q:]``,
so train is inside retrieval and query is disjoint from it. The split is computed on the rows in file order;
reproducing a published split also needs the same builder (same N and row order).
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field

import numpy as np

from dataset.records import DatasetError
from utils.io import write_files_atomically

DATASETS = ("mirflickr", "nuswide", "coco")
SPLIT_KEYS = ("query", "train", "retrieval")


def _same(query: int, train: int) -> dict[str, tuple[int, int]]:
    return {name: (query, train) for name in DATASETS}


_CLASSIC_SIZES = {"mirflickr": (2000, 10000), "nuswide": (2100, 10500), "coco": (5000, 10000)}


@dataclass(frozen=True)
class SplitPreset:
    """One published split protocol.

    Attributes:
        sizes: (query, train) per dataset name.
        seed: legacy numpy seed, one for all datasets or one per dataset; None means the caller must give one.
        shuffle: False takes the rows in file order (no permutation).
        source: where the protocol comes from.
    """

    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    seed: int | dict[str, int] | None = None
    shuffle: bool = True
    source: str = ""


SPLIT_PRESETS: dict[str, SplitPreset] = {
    "clip_hash": SplitPreset(_same(5000, 10000), 1814, source="kalenforn/clip-based-cross-modal-hash, QinLab"),
    "dchmt": SplitPreset(_same(5120, 10240), 1814, source="kalenforn/DCHMT (original DCMHT code)"),
    "mith": SplitPreset(dict(_CLASSIC_SIZES), 1, source="DarrenZZhang/MM23-MITH load_data.py (seed fixed to 1)"),
    "classic": SplitPreset(dict(_CLASSIC_SIZES), 0, source="the older papers' protocol; seed configurable"),
    "torchcmh": SplitPreset(dict(_CLASSIC_SIZES), {"mirflickr": 6, "nuswide": 7, "coco": 8},
                            source="WangGodder/deep-cross-modal-hashing torchcmh/dataset/*.py default seeds"),
    "dcmh_tf": SplitPreset({"mirflickr": (2000, 10000)}, shuffle=False,
                           source="jiangqy/DCMH-CVPR2017 TF demo: rows in file order, no shuffle"),
    "custom": SplitPreset(source="sizes and seed given explicitly"),
}


def make_split(num_rows: int, preset: str = "clip_hash", dataset: str | None = None, query_num: int | None = None,
               train_num: int | None = None, seed: int | None = None,
               split_file: str | None = None) -> dict[str, np.ndarray]:
    """Index arrays ``query``, ``train``, ``retrieval`` (int64) into rows ``0 .. num_rows-1``.

    Args:
        num_rows: number of rows of the data, in file order.
        preset: a name of :data:`SPLIT_PRESETS`.
        dataset: ``mirflickr``, ``nuswide`` or ``coco``; picks the preset's sizes and seed. None is allowed when
            the preset uses the same values for every dataset or sizes and seed are given.
        query_num, train_num, seed: override the preset's values.
        split_file: a split saved by :func:`save_split`; when given, it is loaded (and checked against
            ``num_rows``) instead of computing one.
    """
    if split_file is not None:
        return load_split(split_file, num_rows)
    if preset not in SPLIT_PRESETS:
        match = difflib.get_close_matches(str(preset), SPLIT_PRESETS, n=1)
        hint = f"; did you mean '{match[0]}'?" if match else ""
        raise DatasetError(f"unknown split preset '{preset}'{hint} (presets: {', '.join(SPLIT_PRESETS)})")
    if dataset is not None and dataset not in DATASETS:
        raise DatasetError(f"unknown dataset '{dataset}' for split sizes; expected one of {', '.join(DATASETS)} "
                           f"or null with explicit query_num and train_num")
    spec = SPLIT_PRESETS[preset]
    if query_num is None or train_num is None:
        preset_query, preset_train = _preset_value(spec.sizes, dataset, preset, "query_num and train_num")
        query_num = preset_query if query_num is None else query_num
        train_num = preset_train if train_num is None else train_num
    if query_num < 1 or train_num < 0:
        raise DatasetError(f"split sizes must be query_num >= 1 and train_num >= 0, got {query_num} and {train_num}")
    if query_num + train_num > num_rows or query_num >= num_rows:
        raise DatasetError(f"split preset '{preset}' needs query {query_num} + train {train_num} = "
                           f"{query_num + train_num} rows and a non-empty retrieval set, but the data has "
                           f"{num_rows} rows; lower query_num/train_num")
    if spec.shuffle:
        if seed is None:
            seed = _preset_value(spec.seed, dataset, preset, "seed")
        perm = np.random.RandomState(seed).permutation(num_rows).astype(np.int64)
    else:
        if seed is not None:
            raise DatasetError(f"split preset '{preset}' takes the rows in file order and has no seed; "
                               f"set split_seed to null")
        perm = np.arange(num_rows, dtype=np.int64)
    return {"query": perm[:query_num], "train": perm[query_num:query_num + train_num], "retrieval": perm[query_num:]}


def save_split(path: str, split: dict[str, np.ndarray]) -> None:
    """Write a split as ``.npz`` (via a temporary file and a rename, so a crash never leaves half a file)."""
    missing = [k for k in SPLIT_KEYS if k not in split]
    if missing:
        raise DatasetError(f"split to save lacks {', '.join(missing)}; expected keys {', '.join(SPLIT_KEYS)}")
    arrays = {k: np.asarray(split[k], dtype=np.int64) for k in SPLIT_KEYS}
    write_files_atomically({path: lambda f: np.savez(f, **arrays)})


def load_split(path: str, num_rows: int | None = None) -> dict[str, np.ndarray]:
    """Read a split written by :func:`save_split` and check it fits ``num_rows`` rows."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"split file not found: {path} (check dataset.split_file)")
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in SPLIT_KEYS if k not in f.files]
        if missing:
            raise DatasetError(f"{path}: lacks {', '.join(missing)}; expected arrays {', '.join(SPLIT_KEYS)}")
        split = {k: np.asarray(f[k]) for k in SPLIT_KEYS}
    for key, indices in split.items():
        if indices.ndim != 1 or indices.dtype.kind not in "iu":
            raise DatasetError(f"{path}: '{key}' is a {indices.dtype} array of shape {indices.shape}; expected 1-D "
                               f"integer row indices")
        if num_rows is not None and indices.size and (indices.min() < 0 or indices.max() >= num_rows):
            raise DatasetError(f"{path}: '{key}' indexes rows up to {int(indices.max())} but the data has {num_rows} "
                               f"rows; the split was made for other data")
        if len(np.unique(indices)) != len(indices):
            raise DatasetError(f"{path}: '{key}' lists a row more than once")
        split[key] = indices.astype(np.int64)
    if np.intersect1d(split["query"], split["retrieval"]).size:
        raise DatasetError(f"{path}: query and retrieval share rows; a query must never retrieve itself")
    return split


def _preset_value(values, dataset: str | None, preset: str, what: str):
    """The per-dataset value of a preset (sizes or seed), or a one-line error saying what to set."""
    if values is None or values == {}:
        raise DatasetError(f"split preset '{preset}' needs {what} given explicitly")
    if isinstance(values, dict):
        if dataset in values:
            return values[dataset]
        if dataset is None and values and len(set(values.values())) == 1:
            return next(iter(values.values()))
        if dataset is None:
            raise DatasetError(f"split preset '{preset}' depends on the dataset; set dataset to one of "
                               f"{', '.join(values)} or give {what}")
        raise DatasetError(f"split preset '{preset}' defines no {what} for dataset '{dataset}' (it covers "
                           f"{', '.join(values)}); give {what} explicitly")
    return values
