"""Helpers that write miniature dataset files in the exact layouts real tools produce."""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from PIL import Image


def write_jpegs(folder: str, names: list[str], size: int = 8) -> list[str]:
    """Small distinct RGB JPEGs at ``folder/name`` (sub-folders created); returns their paths."""
    paths = []
    for i, name in enumerate(names):
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pixels = np.full((size, size + 2, 3), (i * 37) % 256, dtype=np.uint8)
        pixels[..., 1] = (i * 91) % 256
        Image.fromarray(pixels).save(path, format="JPEG")
        paths.append(path)
    return paths


def _matlab_header() -> bytes:
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    return text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"


def _put(f: h5py.File, group, name: str, value) -> None:
    """Store ``value`` the way MATLAB's ``save -v7.3`` does: dimensions reversed, chars as uint16.

    A list of str is a char matrix (one padded row per string), an object array a cell array of its shape.
    """
    if isinstance(value, np.ndarray) and value.dtype == object:
        refs = f.require_group("#refs#")
        data = np.empty(value.shape, dtype=h5py.ref_dtype)
        for idx in np.ndindex(value.shape):
            child = f"c{len(refs)}"
            _put(f, refs, child, value[idx])
            data[idx] = refs[child].ref
        group.create_dataset(name, data=data.T, dtype=h5py.ref_dtype)
        group[name].attrs["MATLAB_class"] = np.bytes_(b"cell")
        return
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        width = max(len(s) for s in value)
        chars = np.array([[ord(c) for c in s.ljust(width)] for s in value], dtype=np.uint16)
        group.create_dataset(name, data=chars.T)
        group[name].attrs["MATLAB_class"] = np.bytes_(b"char")
        group[name].attrs["MATLAB_int_decode"] = np.int32(2)
        return
    value = np.asarray(value)
    group.create_dataset(name, data=value.T)
    group[name].attrs["MATLAB_class"] = np.bytes_({"f": b"double", "i": b"int64", "u": b"uint8",
                                                     "b": b"logical"}[value.dtype.kind])


def savemat73(path: str, variables: dict) -> None:
    """A MATLAB v7.3 file: HDF5 with a 512-byte user block holding MATLAB's text header."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            _put(f, f, name, value)
    with open(path, "r+b") as fh:
        fh.write(_matlab_header())


@pytest.fixture
def jpegs():
    return write_jpegs


@pytest.fixture
def mat73():
    return savemat73
