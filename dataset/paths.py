"""Image paths stored in dataset files, re-rooted at read time instead of editing the user's files.

The ``.mat`` triple and the DeepHash-pytorch list files both store one image path per row, often absolute
paths of the machine that built them (``specs/datasets.md`` §1.1). Readers resolve them here with the same
options: ``image_root`` (the local image folder), ``path_keep`` (trailing components to keep) and
``path_prefix_map`` (explicit prefix rewrites), and fail fast on paths that do not exist.
"""
from __future__ import annotations

import os
import re
from typing import Literal, get_args

import numpy as np

from dataset.records import DatasetError

CheckImages = Literal["none", "sample", "all"]
CHECK_IMAGES = get_args(CheckImages)
_SAMPLE_SIZE = 32
_SHOW_MISSING = 3


def resolve_path(path: str, root: str, image_root: str | None, path_keep: int | None,
                 prefix_map: dict[str, str] | None, source: str) -> str:
    """The local file of a stored image path.

    Args:
        path: the path as stored in ``source``.
        root: the dataset folder; relative paths (and a relative ``image_root``) are taken inside it.
        image_root: local image folder replacing the stored directory, or None to use stored paths as they are.
        path_keep: with ``image_root``, how many trailing components of the stored path to keep; None keeps
            the whole path, which must then be relative.
        prefix_map: ``{old_prefix: new_prefix}`` applied first (longest prefix wins).
        source: the file the path was read from, named in errors.
    """
    if prefix_map:
        for old in sorted(prefix_map, key=len, reverse=True):
            if path.startswith(old):
                path = prefix_map[old] + path[len(old):]
                break
    if image_root is None:
        return path if os.path.isabs(path) else os.path.join(root, path.replace("\\", "/"))
    parts = [p for p in re.split(r"[\\/]+", path) if p]
    if path_keep is not None:
        parts = parts[-path_keep:]
    elif os.path.isabs(path):
        raise DatasetError(f"{source}: stored path {path} is absolute; set dataset.path_keep to the number of "
                           f"trailing path components to keep under image_root")
    return os.path.join(image_root if os.path.isabs(image_root) else os.path.join(root, image_root), *parts)


def check_paths(paths: list[str], mode: str, source: str) -> None:
    """Refuse a path list whose files are missing: ``none`` checks nothing, ``sample`` a few paths spread over
    the list (cheap even for 200,000 rows), ``all`` every one."""
    if mode == "none" or not paths:
        return
    if mode == "sample":
        picks = np.unique(np.linspace(0, len(paths) - 1, min(len(paths), _SAMPLE_SIZE)).astype(np.int64))
        checked = [paths[i] for i in picks]
    else:
        checked = paths
    missing = [p for p in checked if not os.path.isfile(p)]
    if missing:
        raise DatasetError(
            f"{source}: {len(missing)} of {len(checked)} checked image files do not exist (first: "
            f"{', '.join(missing[:_SHOW_MISSING])}); set dataset.image_root to the local image folder and "
            f"dataset.path_keep to the number of trailing path components to keep")
