"""The index directory: packed codes, one record per item, the model's identity, the faiss structure.

Layout (nothing is pickled; every file loads with numpy, json or faiss)::

    index.json           the manifest: format, count, bits, item modality, the model's identity (method, bits,
                         checkpoint path and sha256, resolved config), the backend and its parameters, and the
                         names of the data files below
    codes.<g>.bin        packed codes, bits/8 bytes per item in item order (np.memmap of (count, bits/8) uint8)
    items.<g>.jsonl      one JSON record per item: id, path or text, labels, caption
    offsets.<g>.bin      int64 byte offset of each record in items.<g>.jsonl (random access to a record)
    faiss.<g>.index      the faiss index, by faiss's own writer (backends that need more than the codes)

``<g>`` is the generation, a number no file of the folder uses yet. Writing a new generation (a new index, or
items appended to the old ones) streams every data file to its new name through :mod:`utils.io`, and only
then replaces ``index.json``, the one commit point; the files of other generations are removed after it. A
crash at any instant therefore leaves the old index or the complete new one. Appending copies the old codes
and records into the new generation and adds the new ones after them, so the codes and records of an index
built in several runs are byte for byte those of the index built in one.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from retrieval import backends
from retrieval.backends import Flat
from utils.io import atomic_write, atomic_write_text

FORMAT = "hashing-index/1"
MANIFEST = "index.json"
DATA_FILES = {"codes": "bin", "items": "jsonl", "offsets": "bin", "faiss": "index"}
_GENERATED = re.compile(r"^\.?(codes|items|offsets|faiss)\.(\d+)\.(bin|jsonl|index)(\..*\.tmp)?$")
_COPY_BLOCK = 1 << 24


class IndexFormatError(ValueError):
    """A folder is not an index, or not the index a command expects; the one-line message names it."""


class CodeIndex:
    """An index directory opened for reading (the manifest is checked against the files on open)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self._offsets = None

    @property
    def count(self) -> int:
        return self.manifest["count"]

    @property
    def bits(self) -> int:
        return self.manifest["bits"]

    @property
    def modality(self) -> str:
        return self.manifest["modality"]

    @property
    def model(self) -> dict:
        """The identity of the model that wrote the codes (:meth:`models.trained.TrainedModel.identity`)."""
        return self.manifest["model"]

    @property
    def generation(self) -> int:
        return self.manifest["generation"]

    @property
    def backend(self) -> Flat:
        return backends.make_backend(self.manifest["backend"]["name"], self.manifest["backend"]["params"])

    def file(self, kind: str) -> Path:
        return self.folder / self.manifest["files"][kind]

    def codes(self) -> np.ndarray:
        """The packed codes (count, bits/8), memory-mapped."""
        return np.memmap(self.file("codes"), dtype=np.uint8, mode="r", shape=(self.count, self.bits // 8))

    def record(self, item: int) -> dict:
        """The record of item ``item`` (read from its offset; the records are never all loaded)."""
        if self._offsets is None:
            self._offsets = np.memmap(self.file("offsets"), dtype=np.int64, mode="r", shape=(self.count,))
        with open(self.file("items"), "rb") as f:
            f.seek(int(self._offsets[item]))
            return json.loads(f.readline())

    def faiss_index(self):
        """The searchable faiss index: read from its file, or (flat) built from the codes."""
        backend = self.backend
        if backend.stored:
            return backends.read(self.file("faiss"), backend)
        return backends.build(backend, self.codes())

    def check_model(self, identity: dict) -> None:
        """Refuse a model other than the one that wrote the codes: its method, bits, then checkpoint file."""
        ours = self.model
        for key in ("method", "bits"):
            if identity[key] != ours[key]:
                raise IndexFormatError(
                    f"checkpoint '{identity['checkpoint']}' is {identity['method']} with {identity['bits']} bits; "
                    f"index '{self.folder}' holds codes of {ours['method']} with {ours['bits']} bits")
        if identity["checkpoint_sha256"] != ours["checkpoint_sha256"]:
            raise IndexFormatError(
                f"checkpoint '{identity['checkpoint']}' (sha256 {identity['checkpoint_sha256'][:12]}) is not the "
                f"checkpoint index '{self.folder}' was built with ('{ours['checkpoint']}', sha256 "
                f"{ours['checkpoint_sha256'][:12]}); query with that file, or index again")


def read_manifest(folder: Path) -> dict:
    """``index.json`` of ``folder``, checked: the format, the keys, the data files and their sizes."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise IndexFormatError(f"index '{folder}' not found: no such folder (create it with tools/search.py index)")
    if not path.is_file():
        raise IndexFormatError(f"'{folder}' is not an index: it has no {MANIFEST} (create one with "
                               f"tools/search.py index)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise IndexFormatError(f"'{path}' is not an index manifest: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"'{path}' is not an index manifest of this framework (expected format {FORMAT})")
    missing = [key for key in ("generation", "count", "bits", "modality", "model", "backend", "files")
               if key not in manifest]
    if missing:
        raise IndexFormatError(f"'{path}' lacks {', '.join(missing)}: the index is damaged, index again")
    sizes = {"codes": manifest["count"] * manifest["bits"] // 8, "offsets": manifest["count"] * 8}
    for kind, name in manifest["files"].items():
        if name is None:
            continue
        file = folder / name
        if not file.is_file():
            raise IndexFormatError(f"index '{folder}' is damaged: {name} is missing; index again")
        if kind in sizes and file.stat().st_size != sizes[kind]:
            raise IndexFormatError(f"index '{folder}' is damaged: {name} holds {file.stat().st_size} bytes, "
                                   f"expected {sizes[kind]} for {manifest['count']} items; index again")
    return manifest


def open_for_writing(folder: Path, append: bool, overwrite: bool) -> CodeIndex | None:
    """The index new items are appended to (None when a new index starts), after checking that writing into
    ``folder`` destroys nothing the user did not ask to replace."""
    if append:
        return CodeIndex(folder)
    if (folder / MANIFEST).is_file():
        if not overwrite:
            raise IndexFormatError(f"'{folder}' already holds an index: pass --append to add items to it, or "
                                   f"--overwrite to replace it")
        return None
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise IndexFormatError(f"'{folder}' exists and is not an index: choose a new or empty folder")
    return None


def write_index(folder: str | Path, model: dict, modality: str, backend: Flat,
                batches: Iterable[tuple[np.ndarray, list[dict]]], base: CodeIndex | None = None) -> CodeIndex:
    """Write a new generation of the index in ``folder``: the items of ``base`` (when appending), then the
    packed codes and records of ``batches``; returns the index as committed.

    Records get their ``id`` (the item's position) here. Nothing under the old generation is touched before
    the new manifest is in place.
    """
    folder = Path(folder)
    generation = _next_generation(folder)
    names = {kind: f"{kind}.{generation}.{suffix}" for kind, suffix in DATA_FILES.items()}
    if not backend.stored:
        names["faiss"] = None
    count = _write_items(folder, names, batches, base, model["bits"] // 8)
    if count == 0:
        raise IndexFormatError(f"nothing to index into '{folder}': the source holds no items")
    if backend.stored:
        codes = np.memmap(folder / names["codes"], dtype=np.uint8, mode="r", shape=(count, model["bits"] // 8))
        index = backends.build(backend, codes)
        atomic_write(folder / names["faiss"], lambda f: backends.write(index, f))
    manifest = {"format": FORMAT, "generation": generation, "count": count, "bits": model["bits"],
                "modality": modality, "model": model, "backend": {"name": backend.name, "params": backend.params()},
                "files": names}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2))
    _remove_other_generations(folder, names)
    return CodeIndex(folder)


def _write_items(folder: Path, names: dict, batches, base: CodeIndex | None, code_bytes: int) -> int:
    """Stream the codes, records and offsets of ``base`` and ``batches`` to the new generation's files (each
    one atomically); returns the item count."""
    count = 0

    def fill(codes, items, offsets) -> None:
        nonlocal count
        if base is not None:
            for kind, out in (("codes", codes), ("items", items), ("offsets", offsets)):
                with open(base.file(kind), "rb") as f:
                    shutil.copyfileobj(f, out, _COPY_BLOCK)
            count = base.count
        position = items.tell()
        for packed, records in batches:
            if packed.shape[1:] != (code_bytes,):
                raise ValueError(f"codes of {packed.shape[1] * 8} bits cannot join an index of {code_bytes * 8}")
            lines = []
            starts = np.empty(len(records), dtype=np.int64)
            for row, record in enumerate(records):
                starts[row] = position
                lines.append((json.dumps({"id": count + row, **record}, ensure_ascii=False) + "\n").encode())
                position += len(lines[-1])
            codes.write(np.ascontiguousarray(packed, dtype=np.uint8).tobytes())
            items.write(b"".join(lines))
            offsets.write(starts.tobytes())
            count += len(records)

    atomic_write(folder / names["codes"], lambda codes: atomic_write(
        folder / names["items"], lambda items: atomic_write(
            folder / names["offsets"], lambda offsets: fill(codes, items, offsets))))
    return count


def _next_generation(folder: Path) -> int:
    """A generation number no file in ``folder`` uses yet, so a new index (``--overwrite``) never replaces the
    files the current manifest names before that manifest itself is replaced."""
    used = [int(match.group(2)) for match in map(_GENERATED.match, os.listdir(folder)) if match] \
        if folder.is_dir() else []
    return max(used, default=0) + 1


def _remove_other_generations(folder: Path, keep: dict) -> None:
    """Delete the data files of earlier generations and what interrupted writes left behind."""
    kept = {name for name in keep.values() if name is not None}
    for path in folder.iterdir():
        if _GENERATED.match(path.name) and path.name not in kept:
            path.unlink()
