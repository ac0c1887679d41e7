"""Single-modal image hashing data: CIFAR-10 (python or binary batches) and DeepHash-pytorch list files.

Both follow ``specs/methods/WCH.md`` §12 and Appendix A (the ``swuxyj/DeepHash-pytorch`` conventions). Each
reader returns the rows as :class:`PairedData` (labels one-hot or multi-hot, no captions) together with the
``query`` / ``train`` / ``retrieval`` index arrays of its protocol.
"""
from __future__ import annotations

import os
import pickle
from typing import Literal

import numpy as np

from dataset.paths import check_paths, resolve_path
from dataset.records import DatasetError, PairedData
from utils.io import write_files_atomically

CIFAR_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
# The folders of the two official archives (cifar-10-python.tar.gz and cifar-10-binary.tar.gz).
CIFAR_FOLDERS = {"python": "cifar-10-batches-py", "binary": "cifar-10-batches-bin"}
_PIXELS = 3 * 32 * 32
_BINARY_RECORD = 1 + _PIXELS  # one label byte, then the red, green and blue planes
CifarProtocol = Literal["cifar10", "cifar10-1", "cifar10-2"]
# (query per class, train per class, database) of DeepHash-pytorch's cifar_dataset.
CIFAR_PROTOCOLS = {
    "cifar10": (100, 500, "rest"),
    "cifar10-1": (100, 500, "train+rest"),
    "cifar10-2": (1000, 5000, "train"),
}
LIST_FILES = {"query": "test.txt", "train": "train.txt", "retrieval": "database.txt"}
# The classes the official CIFAR pickles need (plus the bytes helper of Python 3 protocol-2 writers);
# anything else in a pickle is refused.
_PICKLE_CLASSES = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles the official batches, which hold only dicts, lists, bytes and numpy arrays.

    The batches are trusted local files from the official archive; refusing every other class still keeps a
    swapped file from running code.
    """

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_CLASSES:
            raise pickle.UnpicklingError(f"class {module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module.replace("numpy.core", "numpy._core"), name)


def read_cifar10(root: str) -> PairedData:
    """The 60,000 CIFAR-10 images from whichever official archive ``root`` holds (python or binary batches).

    Args:
        root: a ``cifar-10-batches-py`` or ``cifar-10-batches-bin`` folder, or the folder holding one of them.
    """
    folder = next((f for f in CIFAR_FOLDERS.values() if os.path.isdir(os.path.join(root, f))), None)
    root = root if folder is None else os.path.join(root, folder)
    if os.path.isfile(os.path.join(root, "data_batch_1.bin")) or os.path.basename(root) == CIFAR_FOLDERS["binary"]:
        return read_cifar10_binary(root)
    if os.path.isfile(os.path.join(root, "data_batch_1")) or os.path.basename(root) == CIFAR_FOLDERS["python"]:
        return read_cifar10_batches(root)
    raise FileNotFoundError(f"no CIFAR-10 batches in {root}: expected {CIFAR_FOLDERS['python']}/ (from "
                            f"cifar-10-python.tar.gz) or {CIFAR_FOLDERS['binary']}/ (from cifar-10-binary.tar.gz); "
                            f"set dataset.root to the folder that holds one")


def read_cifar10_batches(root: str) -> PairedData:
    """The 60,000 CIFAR-10 images of the python archive, the five training batches followed by the test batch.

    Args:
        root: the ``cifar-10-batches-py`` folder of the official python archive, or its parent.

    Returns:
        Rows with ``images`` uint8 (60000, 32, 32, 3), one-hot ``labels`` (60000, 10), ``ids`` = row numbers
        and ``meta["label_names"]`` from ``batches.meta``.
    """
    if os.path.isdir(os.path.join(root, CIFAR_FOLDERS["python"])):
        root = os.path.join(root, CIFAR_FOLDERS["python"])
    pixels, classes = [], []
    for name in CIFAR_BATCHES:
        batch = _load_pickle(os.path.join(root, name))
        if b"data" not in batch or b"labels" not in batch:
            raise DatasetError(f"{os.path.join(root, name)}: lacks b'data' or b'labels'; expected an official "
                               f"CIFAR-10 python batch")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != _PIXELS:
            raise DatasetError(f"{os.path.join(root, name)}: data has shape {data.shape}; expected (N, 3072)")
        pixels.append(data)
        classes.append(np.asarray(batch[b"labels"], dtype=np.int64))
    meta_path = os.path.join(root, "batches.meta")
    names = ([n.decode() for n in _load_pickle(meta_path)[b"label_names"]] if os.path.isfile(meta_path)
             else [str(c) for c in range(10)])
    return _cifar_rows(pixels, classes, names, {"format": "cifar10_python", "root": root})


def read_cifar10_binary(root: str) -> PairedData:
    """The 60,000 CIFAR-10 images of the binary archive, in the same row order as :func:`read_cifar10_batches`.

    Each ``<batch>.bin`` is a run of 3,073-byte records: the label byte, then 1,024 red, 1,024 green and 1,024
    blue values (row-major 32 x 32), the layout of the python batches' rows. ``batches.meta.txt`` names the
    classes, one per line.

    Args:
        root: the ``cifar-10-batches-bin`` folder of the official binary archive, or its parent.
    """
    if os.path.isdir(os.path.join(root, CIFAR_FOLDERS["binary"])):
        root = os.path.join(root, CIFAR_FOLDERS["binary"])
    pixels, classes = [], []
    for name in CIFAR_BATCHES:
        path = os.path.join(root, f"{name}.bin")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"CIFAR-10 batch not found: {path} (extract cifar-10-binary.tar.gz there)")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % _BINARY_RECORD:
            raise DatasetError(f"{path}: {raw.size} bytes is not a whole number of {_BINARY_RECORD}-byte records; "
                               f"expected an official CIFAR-10 binary batch")
        records = raw.reshape(-1, _BINARY_RECORD)
        if records[:, 0].max() > 9:
            raise DatasetError(f"{path}: record {int(np.argmax(records[:, 0] > 9))} has label {records[:, 0].max()}; "
                               f"expected labels 0-9 of an official CIFAR-10 binary batch")
        classes.append(records[:, 0].astype(np.int64))
        pixels.append(records[:, 1:])
    meta_path = os.path.join(root, "batches.meta.txt")
    names = [str(c) for c in range(10)]
    if os.path.isfile(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    return _cifar_rows(pixels, classes, names, {"format": "cifar10_binary", "root": root})


def _cifar_rows(pixels: list[np.ndarray], classes: list[np.ndarray], names: list[str], meta: dict) -> PairedData:
    """Rows of the (N, 3072) channel-planar batches: HWC uint8 images and one-hot labels."""
    images = np.ascontiguousarray(np.concatenate(pixels).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    classes = np.concatenate(classes)
    labels = np.zeros((len(classes), 10), dtype=np.uint8)
    labels[np.arange(len(classes)), classes] = 1
    return PairedData(images=images, captions=[[] for _ in range(len(images))], labels=labels,
                      ids=list(range(len(images))), meta={**meta, "label_names": names})


def cifar_split(labels: np.ndarray, protocol: str = "cifar10", seed: int = 0) -> dict[str, np.ndarray]:
    """The query / train / retrieval indices of a DeepHash-pytorch CIFAR protocol.

    For each class in order 0..9 its indices are permuted, the first ``query`` per class become queries, the
    next ``train`` per class training images, the rest the database; lists are concatenated class by class
    (so the database is ordered by class). ``cifar10-1`` puts the training images in front of the database,
    ``cifar10-2`` uses them as the database. The official code draws from the unseeded global numpy RNG;
    here one ``RandomState(seed)`` serves the ten classes in turn, like ``np.random.seed(seed)`` would.
    """
    if protocol not in CIFAR_PROTOCOLS:
        raise DatasetError(f"unknown CIFAR protocol '{protocol}'; expected one of {', '.join(CIFAR_PROTOCOLS)}")
    query_size, train_size, database = CIFAR_PROTOCOLS[protocol]
    classes = np.asarray(labels).argmax(axis=1)
    rng = np.random.RandomState(seed)
    query, train, rest = [], [], []
    for label in range(labels.shape[1]):
        index = np.flatnonzero(classes == label)
        if len(index) < query_size + train_size:
            raise DatasetError(f"protocol '{protocol}' needs {query_size} + {train_size} images of class {label}, "
                               f"but the data has {len(index)}")
        index = index[rng.permutation(len(index))]
        query.append(index[:query_size])
        train.append(index[query_size:query_size + train_size])
        rest.append(index[query_size + train_size:])
    query, train, rest = (np.concatenate(x).astype(np.int64) for x in (query, train, rest))
    retrieval = {"rest": rest, "train+rest": np.concatenate([train, rest]), "train": train}[database]
    return {"query": query, "train": train, "retrieval": retrieval}


def load_cifar10(root: str, protocol: str = "cifar10", seed: int = 0) -> tuple[PairedData, dict[str, np.ndarray]]:
    """CIFAR-10 rows (python or binary batches) and the split of ``protocol`` (``cifar10``, ``cifar10-1`` or
    ``cifar10-2``)."""
    data = read_cifar10(root)
    return data, cifar_split(data.labels, protocol, seed)


def read_list_file(path: str) -> tuple[list[str], np.ndarray]:
    """A DeepHash-pytorch list file: ``<image path> <0/1> <0/1> ...`` per line; the stored paths as written and
    the (N, C) uint8 labels."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"list file not found: {path}")
    images, rows = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2 or any(v not in ("0", "1") for v in fields[1:]):
                raise DatasetError(f"{path}: line {number} is {line.strip()!r}; expected '<image path> <0/1> ...'")
            if rows and len(fields) - 1 != len(rows[0]):
                raise DatasetError(f"{path}: line {number} has {len(fields) - 1} labels, line 1 has {len(rows[0])}")
            images.append(fields[0])
            rows.append([int(v) for v in fields[1:]])
    if not rows:
        raise DatasetError(f"{path}: no samples; expected one '<image path> <labels>' line per image")
    return images, np.asarray(rows, dtype=np.uint8)


def read_list_split(list_dir: str, image_root: str | None = None, path_keep: int | None = None,
                    path_prefix_map: dict[str, str] | None = None, check_images: str = "sample",
                    num_classes: int | None = None) -> tuple[PairedData, dict[str, np.ndarray]]:
    """``test.txt``, ``train.txt`` and ``database.txt`` of one DeepHash-pytorch dataset as one set of rows.

    Rows are the three files concatenated in that order, so an image listed in both train and database
    appears twice; the split indexes the rows of each file. Stored paths are resolved as the ``.mat`` triple's
    (:func:`dataset.paths.resolve_path`): the reference forms ``data_path + path``, which is ``image_root``
    here; lists written on another machine with absolute paths are re-rooted by ``image_root`` and
    ``path_keep``.

    Args:
        list_dir: the folder of the three list files; relative paths (and a relative ``image_root``) are taken
            inside it.
        num_classes: the label width every file must have (NUS-WIDE 21, MS-COCO 80, MIRFlickr 24), or None.
    """
    images, labels, split, start = [], [], {}, 0
    for role, name in LIST_FILES.items():
        path = os.path.join(list_dir, name)
        stored, rows = read_list_file(path)
        expected = num_classes if num_classes is not None else (labels[0].shape[1] if labels else rows.shape[1])
        if rows.shape[1] != expected:
            what = "dataset.num_classes is" if num_classes is not None else f"{LIST_FILES['query']} has"
            raise DatasetError(f"{path}: lines have {rows.shape[1]} labels, {what} {expected}; expected one "
                               f"label column per class in every list file")
        resolved = [resolve_path(p, list_dir, image_root, path_keep, path_prefix_map, path) for p in stored]
        check_paths(resolved, check_images, path)
        images += resolved
        labels.append(rows)
        split[role] = np.arange(start, start + len(rows), dtype=np.int64)
        start += len(rows)
    files = [os.path.join(list_dir, name) for name in LIST_FILES.values()]
    return PairedData(images=images, captions=[[] for _ in range(start)], labels=np.concatenate(labels),
                      meta={"format": "deephash_list", "files": files, "image_root": image_root,
                            "path_keep": path_keep}), split


def write_list_files(out_dir: str, images: list[str], labels: np.ndarray, split: dict[str, np.ndarray]) -> list[str]:
    """Write ``test.txt`` / ``train.txt`` / ``database.txt`` of the rows ``split`` names (query, train,
    retrieval), in the layout :func:`read_list_file` reads; all three are renamed into place together.

    Returns:
        The written paths.
    """
    spaced = next((p for p in images if not p or any(c.isspace() for c in p)), None)
    if spaced is not None:
        raise DatasetError(f"image path {spaced!r} is empty or holds white space, which a list file cannot store")
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.isin(labels, (0, 1)).all() or len(labels) != len(images):
        raise DatasetError(f"labels must be a 0/1 matrix with one row per image ({len(images)}), got shape "
                           f"{labels.shape}")

    def writer(rows: np.ndarray):
        text = "".join(f"{images[i]} {' '.join(map(str, labels[i].tolist()))}\n" for i in rows)
        return lambda f: f.write(text.encode("utf-8"))

    written = {os.path.join(out_dir, name): writer(split[role]) for role, name in LIST_FILES.items()}
    write_files_atomically(written)
    return list(written)


def _load_pickle(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CIFAR-10 batch not found: {path} (extract cifar-10-python.tar.gz there)")
    with open(path, "rb") as f:
        try:
            return _CifarUnpickler(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise DatasetError(f"{path}: not a CIFAR-10 python batch ({err})") from None
