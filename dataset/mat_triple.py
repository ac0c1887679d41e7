"""Reader and writer of the DCMHT-style ``.mat`` triple (``index.mat``, ``caption.mat``/``caption.txt``, ``label.mat``).

This is the format of the prepared MIRFlickr-25K, NUS-WIDE and MS-COCO packs used by ``kalenforn/DCHMT``,
``kalenforn/clip-based-cross-modal-hash``, ``QinLab-WFU/CLIP-based-Cross-Modal-Hashing`` and MITH
(``specs/datasets.md`` §1). The reader accepts every variant those code bases write or read: MATLAB v5 and
v7.3 (HDF5) files, the key aliases of CLIP-hash's ``dataset/builder.py`` plus MITH's ``label``, (N, 1) and
(1, N) caption layouts, ragged COCO caption cells, and NUS-WIDE's ``caption.txt``. Stored absolute image paths
are rewritten at read time (``image_root``/``path_keep``/``path_prefix_map``) instead of editing user files.
"""
from __future__ import annotations

import codecs
import os
import re
import struct
from typing import Any

import h5py
import numpy as np
import scipy.io

from dataset.paths import CHECK_IMAGES, check_paths, resolve_path
from dataset.records import DatasetError, PairedData, one_line
from utils.checks import check_choice
from utils.io import write_files_atomically
from utils.logging import get_logger

logger = get_logger(__name__)

INDEX_KEYS = ("index", "imgs", "FAll")
CAPTION_KEYS = ("caption", "tags", "YAll")
LABEL_KEYS = ("category", "label", "LAll", "labels")
ZERO_LABEL_ROWS = ("warn", "error", "drop", "keep")
CAPTION_FORMATS = ("mat", "txt")
_SHOW_MISSING = 3
# Top-level HDF5 entries MATLAB v7.3 uses for its own bookkeeping, never user variables.
_H5_INTERNAL = ("#refs#", "#subsystem#")
_MI_COMPRESSED = 15  # MATLAB v5 data type of a zlib-compressed variable
# MATLAB's 512-byte header block plus the largest HDF5 superblock (version 0, 8-byte addresses): a v7.3 file
# that h5py cannot open and that ends before this was cut short.
_MAT73_MIN_SIZE = 512 + 96


def read_mat_triple(root: str, index_file: str = "index.mat", caption_file: str = "caption.mat",
                    label_file: str = "label.mat", image_root: str | None = None, path_keep: int | None = None,
                    path_prefix_map: dict[str, str] | None = None, check_images: str = "sample",
                    zero_label_rows: str = "warn") -> PairedData:
    """Read one prepared dataset folder into aligned rows.

    Args:
        root: folder holding the three files; relative file names are taken inside it.
        index_file: image paths (``.mat``) or raw images (``.npy``, uint8 (N, H, W, 3)).
        caption_file: ``.mat`` with captions, or a ``.txt`` with one caption per line (NUS-WIDE).
        label_file: ``.mat`` with the (N, C) 0/1 label matrix.
        image_root: local image folder replacing the builder's stored directory; a relative value is taken
            inside ``root`` (as mmdetection joins ``data_prefix`` to ``data_root``).
        path_keep: with ``image_root``, how many trailing components of each stored path to keep
            (MIRFlickr 1, COCO 2, NUS-WIDE 2 for DCHMT/QinLab builds and 1 for MITH builds). None keeps the
            whole stored path, which must then be relative.
        path_prefix_map: ``{old_prefix: new_prefix}`` applied to stored paths first (longest prefix wins).
        check_images: ``"none"``, ``"sample"`` (a few paths spread over the file) or ``"all"``.
        zero_label_rows: what to do with rows that have no label (never relevant to any query, so a query
            among them scores 0):

            - ``"warn"`` (default): keep them and log their count; a matrix in which every row is zero is refused
              (a DatasetError), since it trains on nothing and evaluates to mAP 0.
            - ``"error"``: refuse the data if any row has no label.
            - ``"drop"``: remove those rows and log it, because a published split then no longer reproduces
              (``ids`` then hold the original row numbers); an all-zero matrix is refused, nothing would remain.
            - ``"keep"``: keep them without a word, even when every row is zero (e.g. a deliberately unlabelled
              set used for a smoke run).

    Returns:
        The rows; ``meta`` records the files, keys and the image root used.
    """
    check_choice("check_images", check_images, CHECK_IMAGES, DatasetError)
    check_choice("zero_label_rows", zero_label_rows, ZERO_LABEL_ROWS, DatasetError)
    if path_keep is not None and (not isinstance(path_keep, int) or path_keep < 1):
        raise DatasetError(f"path_keep must be a positive integer or null, got {path_keep!r}")
    index_path = os.path.join(root, index_file)
    caption_path = os.path.join(root, caption_file)
    label_path = os.path.join(root, label_file)
    for path in (index_path, caption_path, label_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"dataset file not found: {path} (check dataset.root and the file names)")

    label_key, raw_labels = load_mat_key(label_path, LABEL_KEYS)
    labels = _labels(raw_labels, label_path, label_key)
    if index_path.endswith(".npy"):
        index_key, raw_index = None, load_npy_images(index_path)
    else:
        index_key, raw_index = load_mat_key(index_path, INDEX_KEYS)
    images = _images(raw_index, index_path)
    if caption_path.endswith(".txt"):
        caption_key, captions = None, read_caption_txt(caption_path)
    else:
        caption_key, raw_captions = load_mat_key(caption_path, CAPTION_KEYS)
        captions = _captions(raw_captions, len(labels), caption_path, caption_key)

    counts = (len(images), len(captions), len(labels))
    if len(set(counts)) > 1:
        raise DatasetError(
            f"row counts differ: {index_path} has {counts[0]} rows, {caption_path} {counts[1]}, {label_path} "
            f"{counts[2]}; the three files must describe the same pairs (rebuild them together)")

    if isinstance(images, list):
        images = [resolve_path(p, root, image_root, path_keep, path_prefix_map, index_path) for p in images]
        check_paths(images, check_images, index_path)

    empty = sum(1 for row in captions if not any(row))
    if empty:
        logger.warning("%s: %d of %d rows have an empty caption", caption_path, empty, len(captions))

    data = PairedData(images=images, captions=captions, labels=labels, meta={
        "format": "mat_triple",
        "files": {"index": index_path, "caption": caption_path, "label": label_path},
        "keys": {"index": index_key, "caption": caption_key, "label": label_key},
        "image_root": image_root,
        "path_keep": path_keep,
    })
    return _handle_zero_labels(data, zero_label_rows, label_path)


def load_mat_key(path: str, keys: tuple[str, ...]) -> tuple[str, Any]:
    """The first of ``keys`` present in a MATLAB v5 or v7.3 file, as scipy's ``loadmat`` would return it.

    v7.3 files are HDF5 and store every array with its dimensions reversed; they are transposed back here,
    char arrays become fixed-width strings and cell arrays object arrays, so callers see one layout. A file the
    libraries cannot read raises a DatasetError naming it and saying whether it is empty, truncated (with the
    size it should have), not a MATLAB file or corrupt.
    """
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                found = [k for k in f.keys() if k not in _H5_INTERNAL]
                key = _first_key(path, keys, found)
                return key, _h5_value(f, f[key], path)
        found = [name for name, _, _ in scipy.io.whosmat(path)]
        key = _first_key(path, keys, found)
        return key, scipy.io.loadmat(path, variable_names=[key])[key]
    except DatasetError:
        raise
    except Exception as err:  # scipy and h5py raise many types (OSError, ValueError, IndexError, zlib.error, ...)
        raise _mat_error(path, err) from None


def read_caption_txt(path: str) -> list[list[str]]:
    """NUS-WIDE's ``caption.txt``: one UTF-8 caption per line (a leading byte-order mark is skipped), each
    stripped and wrapped in a one-element list."""
    with open(path, "rb") as f:
        raw = f.read()
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        text = raw[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        at = bom + err.start
        line_no = raw.count(b"\n", 0, at) + 1
        raise DatasetError(f"{path}: not UTF-8 text at byte {at} (line {line_no}, byte "
                           f"{raw[at:at + 1]!r}); expected one UTF-8 caption per line, convert the file (e.g. "
                           f"iconv -f latin1 -t utf-8)") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [[line.strip()] for line in lines]


def load_npy_images(path: str) -> np.ndarray:
    """The ``.npy`` index variant (raw uint8 images); a file numpy cannot read raises a DatasetError naming it."""
    try:
        return np.load(path, allow_pickle=False)
    except Exception as err:  # numpy raises ValueError, EOFError or UnpicklingError for a damaged file
        expected = _npy_size(path)
        size = os.path.getsize(path)
        if expected is not None and size < expected:
            raise DatasetError(f"{path}: truncated .npy file ({size} bytes, its header says {expected}); copy or "
                               f"rebuild it again") from None
        raise DatasetError(f"{path}: not a readable .npy array ({type(err).__name__}: {one_line(err)}); expected "
                           f"uint8 images of shape (N, H, W, 3) written by numpy.save") from None


def write_mat_triple(out_dir: str, image_paths: list[str], captions: list[list[str]], labels: np.ndarray,
                     caption_format: str = "mat") -> dict[str, str]:
    """Write a triple in exactly the layout of the reference builders (``make_*.py``).

    ``index.mat`` holds ``index`` (a char matrix of paths); ``caption.mat`` holds ``caption`` as an (N, 1) char
    array when every row has one caption (MIRFlickr) or a (1, N) cell of char matrices otherwise (COCO), or
    ``caption.txt`` holds one line per row (NUS-WIDE); ``label.mat`` holds ``category`` with the dtype given.
    Files are written to temporary names first and renamed, so an interrupted build never leaves a
    half-written file behind.

    Returns:
        The written file paths by role (``index``, ``caption``, ``label``).
    """
    check_choice("caption_format", caption_format, CAPTION_FORMATS, DatasetError)
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise DatasetError(f"labels must be an (N, C) matrix, got shape {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise DatasetError("labels must hold only 0 and 1")
    if not len(image_paths) == len(captions) == len(labels):
        raise DatasetError(f"row counts differ: {len(image_paths)} image paths, {len(captions)} caption rows, "
                           f"{len(labels)} label rows; pass one row per pair")
    for i, row in enumerate(captions):
        if isinstance(row, str) or len(row) == 0:
            raise DatasetError(f"caption row {i} must be a non-empty list of strings, got {row!r}")
    single = all(len(row) == 1 for row in captions)
    if caption_format == "txt":
        if not single:
            raise DatasetError("caption_format 'txt' stores one caption per row; some rows have several")
        bad = next((i for i, row in enumerate(captions) if "\n" in row[0] or "\r" in row[0]), None)
        if bad is not None:
            raise DatasetError(f"caption row {bad} contains a line break, which caption.txt cannot store")
        text = "".join(row[0] + "\n" for row in captions)
        caption_name, caption_write = "caption.txt", lambda f: f.write(text.encode("utf-8"))
    elif single:
        if not any(row[0] for row in captions):
            raise DatasetError("every caption is empty; a .mat char matrix of empty strings loses its rows")
        value = [list(row) for row in captions]
        caption_name, caption_write = "caption.mat", lambda f: scipy.io.savemat(f, {"caption": value})
    else:
        cell = np.empty(len(captions), dtype=object)
        for i, row in enumerate(captions):
            cell[i] = list(row)
        caption_name, caption_write = "caption.mat", lambda f: scipy.io.savemat(f, {"caption": cell})
    paths = list(image_paths)
    writers = {
        "index": ("index.mat", lambda f: scipy.io.savemat(f, {"index": paths})),
        "caption": (caption_name, caption_write),
        "label": ("label.mat", lambda f: scipy.io.savemat(f, {"category": labels})),
    }
    written = {role: os.path.join(out_dir, name) for role, (name, _) in writers.items()}
    write_files_atomically({written[role]: write for role, (_, write) in writers.items()})
    return written


def _first_key(path: str, keys: tuple[str, ...], found: list[str]) -> str:
    for key in keys:
        if key in found:
            return key
    shown = ", ".join(k for k in found if not k.startswith("__")) or "none"
    raise DatasetError(f"{path}: none of the expected keys {', '.join(keys)} found (keys in file: {shown})")


def _mat_error(path: str, err: Exception) -> DatasetError:
    """What is wrong with a ``.mat`` file scipy or h5py failed on: empty, truncated, not MATLAB, or corrupt."""
    size = os.path.getsize(path)
    if size == 0:
        return DatasetError(f"{path}: empty file (0 bytes); expected a MATLAB .mat file, copy or rebuild it again")
    with open(path, "rb") as f:
        header = f.read(128)
    detail = f"{type(err).__name__}: {one_line(err)}"
    if header.startswith(b"MATLAB 7.3"):
        stored = re.search(r"stored_eof = (\d+)", str(err))
        if stored and int(stored.group(1)) > size:
            return _truncated(path, "v7.3", size, int(stored.group(1)))
        if size < _MAT73_MIN_SIZE or not h5py.is_hdf5(path):  # cut in MATLAB's header or HDF5's superblock
            return _truncated(path, "v7.3", size, None)
        return DatasetError(f"{path}: corrupt MATLAB v7.3 (HDF5) file ({detail}); copy or rebuild it again")
    if header.startswith(b"MATLAB") or b"MATLAB".startswith(header):
        if len(header) < 128:  # the header itself is cut, before it says v5 or v7.3
            return _truncated(path, None, size, 128)
        expected = _mat5_size(header, path, size)
        if expected is not None and expected > size:
            return _truncated(path, "v5", size, expected)
        return DatasetError(f"{path}: corrupt MATLAB .mat file ({detail}); copy or rebuild it again")
    return DatasetError(f"{path}: not a readable MATLAB .mat file ({detail}); expected a file written by "
                        f"scipy.io.savemat or MATLAB")


def _truncated(path: str, version: str | None, size: int, expected: int | None) -> DatasetError:
    kind = "MATLAB .mat" if version is None else f"MATLAB {version} .mat"
    needed = f"{size} bytes" if expected is None else f"{size} of at least {expected} bytes"
    return DatasetError(f"{path}: truncated {kind} file ({needed}); the copy or download was cut short, copy or "
                        f"rebuild it again")


def _mat5_size(header: bytes, path: str, size: int) -> int | None:
    """The length a MATLAB v5 file needs for its top-level variables, from their tags; None for no v5 header.

    After the 128-byte header each variable is a tag (type, byte count) and its data, padded to 8 bytes unless
    compressed; a tag or data running past the end of the file means the file was cut.
    """
    if len(header) < 128 or header[126:128] not in (b"IM", b"MI"):
        return None
    order = "<" if header[126:128] == b"IM" else ">"
    end = 128
    with open(path, "rb") as f:
        while end < size:
            f.seek(end)
            tag = f.read(8)
            if len(tag) < 8:
                return end + 8
            data_type, nbytes = struct.unpack(order + "II", tag)
            if data_type >> 16:  # small data element: type, size and data in the 8 bytes
                end += 8
                continue
            need = end + 8 + nbytes
            if need > size:
                return need
            end = need if data_type == _MI_COMPRESSED else need + (-nbytes % 8)
    return min(end, size)


def _npy_size(path: str) -> int | None:
    """The length a ``.npy`` file needs according to its header, or None when the header itself is unreadable."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
            return f.tell() + int(np.prod(shape)) * dtype.itemsize
    except Exception:  # not an .npy file at all
        return None


def _h5_value(f: h5py.File, node, path: str) -> Any:
    """One MATLAB v7.3 variable in scipy's layout (dimensions reversed back, chars as strings)."""
    if not isinstance(node, h5py.Dataset):
        raise DatasetError(f"{path}: variable {node.name} is a MATLAB struct/object; expected an array, "
                           f"char or cell array")
    matlab_class = node.attrs.get("MATLAB_class", b"")
    matlab_class = matlab_class.decode() if isinstance(matlab_class, bytes) else str(matlab_class)
    if node.attrs.get("MATLAB_empty", 0):
        return np.array([], dtype="<U1" if matlab_class == "char" else np.float64)
    data = node[()]
    if matlab_class == "cell" or data.dtype == h5py.ref_dtype:
        data = np.asarray(data).T
        out = np.empty(data.shape, dtype=object)
        for idx in np.ndindex(data.shape):
            out[idx] = _h5_value(f, f[data[idx]], path)
        return out
    data = np.asarray(data).T
    if matlab_class == "char":
        codes = data.astype(np.uint32)
        flat = codes.reshape(-1, codes.shape[-1])
        strings = ["".join(map(chr, row)) for row in flat]
        width = max((len(s) for s in strings), default=1) or 1
        return np.array(strings, dtype=f"<U{width}").reshape(codes.shape[:-1])
    if data.dtype.kind in "SO":
        return np.vectorize(lambda s: s.decode("utf-8") if isinstance(s, bytes) else str(s), otypes=[str])(data)
    return data


def _strings(value: Any) -> list[str]:
    """Every string inside a (possibly nested) loadmat value, in storage order, right-stripped."""
    if isinstance(value, (str, np.str_)):
        return [str(value).rstrip()]
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "U":
            return [str(s).rstrip() for s in value.ravel()]
        if value.dtype.kind == "O":
            return [s for item in value.ravel() for s in _strings(item)]
    raise TypeError(type(value).__name__)


def _images(raw: Any, path: str) -> list[str] | np.ndarray:
    """Image paths (stripped) or a uint8 (N, H, W, 3) pixel array."""
    raw = np.asarray(raw)
    if raw.dtype == np.uint8 and raw.ndim == 4 and raw.shape[-1] == 3:
        return raw
    if raw.dtype.kind == "U":
        return [str(s).strip() for s in raw.ravel()]
    if raw.dtype.kind == "O":
        paths = []
        for i, item in enumerate(raw.ravel()):
            found = _strings(item)
            if len(found) != 1:
                raise DatasetError(f"{path}: entry {i} holds {len(found)} strings; expected one image path per row")
            paths.append(found[0].strip())
        return paths
    raise DatasetError(f"{path}: holds a {raw.dtype} array of shape {raw.shape}; expected image paths (strings) or "
                       f"uint8 images of shape (N, H, W, 3)")


def _captions(raw: Any, num_rows: int, path: str, key: str) -> list[list[str]]:
    """Captions as one list of strings per row, whatever the stored layout.

    The reference loaders take ``caption[0]`` when the first dimension is 1 (COCO's (1, N) cell); the row
    count from the label file keeps a single row with several captions from being mistaken for that.
    """
    raw = np.asarray(raw)
    if raw.dtype.kind in "biuf":
        raise DatasetError(f"{path}: key '{key}' holds a numeric {raw.shape} matrix (e.g. bag-of-words), not "
                           f"caption strings; the mat_triple reader needs text")
    if raw.ndim >= 2 and raw.shape[0] == 1 and num_rows != 1:
        raw = raw[0]
    if raw.ndim == 0:
        raw = raw.reshape(1)
    rows = []
    for item in raw:
        try:
            row = _strings(item)
        except TypeError as err:
            raise DatasetError(f"{path}: key '{key}' holds a {err} element; expected caption strings") from None
        rows.append(row or [""])
    return rows


def _labels(raw: Any, path: str, key: str) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.dtype.kind not in "biuf" or raw.ndim != 2:
        raise DatasetError(f"{path}: key '{key}' holds a {raw.dtype} array of shape {raw.shape}; expected an "
                           f"(N, C) 0/1 label matrix")
    bad = ~np.isin(raw, (0, 1))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DatasetError(f"{path}: key '{key}' holds {int(bad.sum())} values other than 0/1 (first at row {row}, "
                           f"column {col}: {raw[row, col].item()!r}); expected a multi-hot 0/1 matrix")
    return raw.astype(np.uint8)


def _handle_zero_labels(data: PairedData, mode: str, label_path: str) -> PairedData:
    empty = np.flatnonzero(data.labels.sum(axis=1) == 0)
    if len(empty) == 0 or mode == "keep":
        return data
    if len(empty) == len(data):
        raise DatasetError(f"{label_path}: no row has any label (all {len(data)} rows are zero); check the file, or "
                           f"set dataset.zero_label_rows: keep to train on it anyway")
    if mode == "error":
        raise DatasetError(f"{label_path}: {len(empty)} of {len(data)} rows have no label (first rows: "
                           f"{', '.join(map(str, empty[:_SHOW_MISSING]))}); such rows are never relevant to any "
                           f"query; set dataset.zero_label_rows to 'warn' or 'keep' to keep them or 'drop' to remove "
                           f"them")
    if mode == "warn":
        logger.warning("%s: %d of %d rows have no label and are never relevant to any query; kept "
                       "(zero_label_rows='drop' removes them, 'keep' keeps them without this warning)", label_path,
                       len(empty), len(data))
        return data
    keep = np.setdiff1d(np.arange(len(data)), empty)
    logger.warning("%s: dropped %d of %d rows that have no label; row numbers changed, so published splits "
                   "no longer reproduce", label_path, len(empty), len(data))
    kept = data.subset(keep)
    kept.ids = keep.tolist() if data.ids is None else kept.ids
    kept.meta["dropped_rows"] = empty.tolist()
    return kept
