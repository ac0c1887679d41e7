"""Single-modal image hashing data: CIFAR-10 python batches and DeepHash-pytorch list files.

Both follow ``specs/methods/WCH.md`` §12 and Appendix A (the ``swuxyj/DeepHash-pytorch`` conventions). Each
reader returns the rows as :class:`PairedData` (labels one-hot or multi-hot, no captions) together with the
``query`` / ``train`` / ``retrieval`` index arrays of its protocol.
"""
from __future__ import annotations

import os
import pickle

import numpy as np

from dataset.records import DatasetError, PairedData

CIFAR_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
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


def read_cifar10_batches(root: str) -> PairedData:
    """The 60,000 CIFAR-10 images, the five training batches followed by the test batch.

    Args:
        root: the ``cifar-10-batches-py`` folder of the official python archive, or its parent.

    Returns:
        Rows with ``images`` uint8 (60000, 32, 32, 3), one-hot ``labels`` (60000, 10), ``ids`` = row numbers
        and ``meta["label_names"]`` from ``batches.meta``.
    """
    if os.path.isdir(os.path.join(root, "cifar-10-batches-py")):
        root = os.path.join(root, "cifar-10-batches-py")
    pixels, classes = [], []
    for name in CIFAR_BATCHES:
        batch = _load_pickle(os.path.join(root, name))
        if b"data" not in batch or b"labels" not in batch:
            raise DatasetError(f"{os.path.join(root, name)}: lacks b'data' or b'labels'; expected an official "
                               f"CIFAR-10 python batch")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DatasetError(f"{os.path.join(root, name)}: data has shape {data.shape}; expected (N, 3072)")
        pixels.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        classes.append(np.asarray(batch[b"labels"], dtype=np.int64))
    images, classes = np.ascontiguousarray(np.concatenate(pixels)), np.concatenate(classes)
    meta_path = os.path.join(root, "batches.meta")
    names = ([n.decode() for n in _load_pickle(meta_path)[b"label_names"]] if os.path.isfile(meta_path)
             else [str(c) for c in range(10)])
    labels = np.zeros((len(classes), 10), dtype=np.uint8)
    labels[np.arange(len(classes)), classes] = 1
    return PairedData(images=images, captions=[[] for _ in range(len(images))], labels=labels,
                      ids=list(range(len(images))),
                      meta={"format": "cifar10_python", "root": root, "label_names": names})


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
    """CIFAR-10 rows and the split of ``protocol`` (``cifar10``, ``cifar10-1`` or ``cifar10-2``)."""
    data = read_cifar10_batches(root)
    return data, cifar_split(data.labels, protocol, seed)


def read_list_file(path: str, data_root: str) -> PairedData:
    """A DeepHash-pytorch list file: ``<relative image path> <0/1> <0/1> ...`` per line.

    The reference forms the image path as ``data_root + path`` (plain concatenation, so its ``data_root``
    ends with ``/``); joining with ``os.path.join`` gives the same file either way.
    """
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
            images.append(os.path.join(data_root, fields[0]))
            rows.append([int(v) for v in fields[1:]])
    if not rows:
        raise DatasetError(f"{path}: no samples; expected one '<image path> <labels>' line per image")
    return PairedData(images=images, captions=[[] for _ in images], labels=np.asarray(rows, dtype=np.uint8),
                      meta={"format": "deephash_list", "files": [path], "image_root": data_root})


def read_list_split(list_dir: str, data_root: str) -> tuple[PairedData, dict[str, np.ndarray]]:
    """``test.txt``, ``train.txt`` and ``database.txt`` of one DeepHash-pytorch dataset as one set of rows.

    Rows are the three files concatenated in that order, so an image listed in both train and database
    appears twice; the split indexes the rows of each file.
    """
    parts = {role: read_list_file(os.path.join(list_dir, name), data_root) for role, name in LIST_FILES.items()}
    widths = {role: part.labels.shape[1] for role, part in parts.items()}
    if len(set(widths.values())) > 1:
        raise DatasetError(f"{list_dir}: label widths differ between list files ({widths}); expected one class set")
    split, start = {}, 0
    for role, part in parts.items():
        split[role] = np.arange(start, start + len(part), dtype=np.int64)
        start += len(part)
    data = PairedData(images=[p for part in parts.values() for p in part.images],
                      captions=[[] for _ in range(start)],
                      labels=np.concatenate([part.labels for part in parts.values()]),
                      meta={"format": "deephash_list", "files": [f for p in parts.values() for f in p.meta["files"]],
                            "image_root": data_root})
    return data, split


def _load_pickle(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CIFAR-10 batch not found: {path} (extract cifar-10-python.tar.gz there)")
    with open(path, "rb") as f:
        try:
            return _CifarUnpickler(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise DatasetError(f"{path}: not a CIFAR-10 python batch ({err})") from None
