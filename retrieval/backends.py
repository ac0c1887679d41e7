"""Hamming search over packed binary codes on faiss's binary indexes.

Codes are packed as faiss and ``np.packbits`` pack them: bit j of a {-1, +1} code is 1 where the code is +1,
bits/8 bytes per item, most significant bit first. Four backends:

- ``flat`` (``IndexBinaryFlat`` shards, :class:`ShardedFlat`): exhaustive, exact; its index is the codes
  themselves, so nothing is stored.
- ``multihash`` (``IndexBinaryMultiHash``): hash tables on ``nhash`` substrings of the code; radius search is
  exact (an item within radius r differs from the query in at most r // nhash bits of some substring, which
  is how many bits the search flips), and far faster than a scan at small radii. Its top-k is that of the
  flat scan over its stored codes.
- ``hnsw`` (``IndexBinaryHNSW``) and ``ivf`` (``IndexBinaryIVF``): approximate top-k for large collections.

Every answer is ordered by distance, ties by item id (the order of the evaluation metrics). faiss's heaps
already break ties by id, and the exact backends return exactly the brute-force ranking (tested); results are
re-sorted here only to make that order explicit for the approximate ones.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from typing import BinaryIO, ClassVar

import faiss
import numpy as np

from common.schema import PositiveInt, validate


def pack(codes) -> np.ndarray:
    """{-1, +1} (or {0, 1}) codes (N, bits) -> packed uint8 (N, bits/8)."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] % 8:
        raise ValueError(f"codes must be a (N, bits) matrix with bits a multiple of 8, got shape {codes.shape}")
    return np.packbits(codes > 0, axis=1)


class ShardedFlat:
    """``IndexBinaryFlat`` split into one shard of consecutive items per core, each shard searched by its own
    thread (faiss releases the GIL) with one OpenMP thread, and the shards' top-k merged by distance then id.

    faiss parallelises one flat search over queries in short OpenMP regions, whose barriers stall whenever
    another process holds a core: on a loaded 2-core machine that search ran 3x slower than this one, and on
    an idle machine both run at the same speed. The merge is the one a collection sharded over several
    machines needs (README, "Past one machine").
    """

    def __init__(self, bits: int, count: int, shards: int | None = None):
        shards = max(1, min(shards or os.cpu_count() or 1, count))
        self.bounds = np.linspace(0, count, shards + 1).astype(np.int64)
        self.shards = [faiss.IndexBinaryFlat(bits) for _ in range(shards)]
        self.ntotal = 0
        self.is_trained = True
        self._pool = ThreadPoolExecutor(len(self.shards))  # kept: a single query should not pay for new threads

    def add(self, codes: np.ndarray) -> None:
        """Append codes; each lands in the shard that owns its position."""
        for shard, start, end in zip(self.shards, self.bounds[:-1], self.bounds[1:]):
            first, last = max(start, self.ntotal), min(end, self.ntotal + len(codes))
            if first < last:
                shard.add(codes[first - self.ntotal:last - self.ntotal])
        self.ntotal += len(codes)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        def one(shard: faiss.IndexBinaryFlat):
            faiss.omp_set_num_threads(1)
            return shard.search(queries, min(k, shard.ntotal))

        parts = list(self._pool.map(one, self.shards))
        return merge([dist for dist, _ in parts], [ids for _, ids in parts], self.bounds[:-1], k)


def merge(dists: list[np.ndarray], ids: list[np.ndarray], offsets, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of several shards' top-k (shard i's ids start at ``offsets[i]``), by distance then id;
    missing results (id -1) sort last."""
    dist = np.concatenate([np.where(i < 0, np.iinfo(np.int32).max, d) for d, i in zip(dists, ids)], axis=1)
    ids = np.concatenate([np.where(i < 0, -1, i + offset) for i, offset in zip(ids, offsets)], axis=1)
    order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), dist), axis=1)[:, :k]
    dist, ids = np.take_along_axis(dist, order, 1), np.take_along_axis(ids, order, 1)
    return np.where(ids < 0, -1, dist), ids


@dataclass
class Flat:
    """Exhaustive exact search (the default), on :class:`ShardedFlat`."""

    name: ClassVar[str] = "flat"
    stored: ClassVar[bool] = False

    def __post_init__(self):
        validate(self)

    def create(self, bits: int, count: int):
        return ShardedFlat(bits, count)

    def configure(self, index: faiss.IndexBinary) -> None:
        """Set the search-time parameters on an index read back from disk."""

    def params(self) -> dict:
        return asdict(self)


@dataclass
class MultiHash(Flat):
    """Exact radius search through ``nhash`` hash tables of bits // nhash bits each.

    Attributes:
        nhash: number of substrings (tables); more tables make small-radius search flip fewer bits.
    """

    name: ClassVar[str] = "multihash"
    stored: ClassVar[bool] = True
    nhash: PositiveInt = 4

    def create(self, bits: int, count: int) -> faiss.IndexBinary:
        if bits % self.nhash or bits // self.nhash > 64:
            raise ValueError(f"multihash nhash={self.nhash} must divide bits={bits} into substrings of at most "
                             f"64 bits")
        return faiss.IndexBinaryMultiHash(bits, self.nhash, bits // self.nhash)


@dataclass
class HNSW(Flat):
    """Approximate top-k on a navigable small-world graph.

    Attributes:
        m: neighbours per node (memory grows by about 8 m bytes per item).
        ef_construction: candidate list while building (higher: better graph, slower build).
        ef_search: candidate list while searching (higher: better recall, slower queries).
    """

    name: ClassVar[str] = "hnsw"
    stored: ClassVar[bool] = True
    m: PositiveInt = 16
    ef_construction: PositiveInt = 40
    ef_search: PositiveInt = 128

    def create(self, bits: int, count: int) -> faiss.IndexBinary:
        index = faiss.IndexBinaryHNSW(bits, self.m)
        index.hnsw.efConstruction = self.ef_construction
        self.configure(index)
        return index

    def configure(self, index: faiss.IndexBinary) -> None:
        index.hnsw.efSearch = self.ef_search


@dataclass
class IVF(Flat):
    """Approximate top-k on an inverted file: items are listed under the nearest of ``nlist`` centroids and a
    query scans the ``nprobe`` nearest lists.

    Attributes:
        nlist: number of lists; None = 4 sqrt(N) at build time (faiss's usual advice; the number used is
            what the index records).
        nprobe: lists scanned per query (higher: better recall, slower queries).
    """

    name: ClassVar[str] = "ivf"
    stored: ClassVar[bool] = True
    nlist: PositiveInt | None = None
    nprobe: PositiveInt = 16

    def create(self, bits: int, count: int) -> faiss.IndexBinary:
        self.nlist = self.nlist or max(1, int(4 * math.sqrt(count)))
        if self.nlist > count:
            raise ValueError(f"ivf nlist={self.nlist} needs at least {self.nlist} items to train on; the index has "
                             f"{count} (lower nlist)")
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, self.nlist)  # keeps its quantizer
        self.configure(index)
        return index

    def configure(self, index: faiss.IndexBinary) -> None:
        index.nprobe = self.nprobe


BACKENDS: dict[str, type[Flat]] = {cls.name: cls for cls in (Flat, MultiHash, HNSW, IVF)}

# Items passed to faiss at a time when building from a memory-mapped codes file.
_ADD_CHUNK = 1 << 20
# Items IVF's k-means trains on (faiss samples down to 256 per list itself; this bounds the copy made here).
_TRAIN_SAMPLE = 1 << 20


def make_backend(name: str, params: dict | None = None) -> Flat:
    """The backend ``name`` with its parameters; unknown names or keys are one-line errors listing the valid."""
    if name not in BACKENDS:
        raise ValueError(f"unknown search backend '{name}' (choose one of {', '.join(BACKENDS)})")
    cls = BACKENDS[name]
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(params or {}) - set(known))
    if unknown:
        raise ValueError(f"backend {name} has no parameter {', '.join(unknown)} "
                         f"(its parameters: {', '.join(known) or 'none'})")
    return cls(**(params or {}))


def build(backend: Flat, codes: np.ndarray):
    """A faiss index over packed ``codes`` (N, bits/8), which may be a memory map: added in chunks, so only
    faiss's own copy of the codes is held in memory."""
    count, bits = len(codes), codes.shape[1] * 8
    index = backend.create(bits, count)
    if not index.is_trained:
        sample = codes[np.linspace(0, count - 1, min(count, _TRAIN_SAMPLE)).astype(np.int64)] if count else codes
        index.train(np.ascontiguousarray(sample))
    for start in range(0, count, _ADD_CHUNK):
        index.add(np.ascontiguousarray(codes[start:start + _ADD_CHUNK]))
    return index


def write(index: faiss.IndexBinary, f: BinaryIO) -> None:
    """faiss's own serialisation of ``index`` into an open binary file."""
    faiss.write_index_binary(index, faiss.PyCallbackIOWriter(f.write))


def read(path: str, backend: Flat) -> faiss.IndexBinary:
    """An index written by :func:`write`, with the backend's search-time parameters applied."""
    index = faiss.read_index_binary(str(path))
    backend.configure(index)
    return index


def top_k(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest items of each packed query: (distances, ids), each (Q, k), ordered by distance then
    id; rows of fewer than ``k`` results (small or approximate indexes) end in id -1, distance -1."""
    k = min(k, index.ntotal)
    searched = index.storage if isinstance(index, faiss.IndexBinaryMultiHash) else index
    dist, ids = searched.search(np.ascontiguousarray(queries), k)
    return merge([dist], [ids], [0], k)


def within(index: faiss.IndexBinary, queries: np.ndarray, radius: int, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query, the at most ``k`` nearest items at Hamming distance <= ``radius``, as (distances, ids).

    A multihash index answers with its exact range search; the others filter their top-k (exact for flat).
    """
    if isinstance(index, faiss.IndexBinaryMultiHash):
        index.nflip = radius // index.nhash
        limits, dist, ids = index.range_search(np.ascontiguousarray(queries), radius + 1)  # faiss: d < radius
        answers = []
        for start, end in zip(limits[:-1], limits[1:]):
            order = np.lexsort((ids[start:end], dist[start:end]))[:k]
            answers.append((dist[start:end][order], ids[start:end][order]))
        return answers
    dist, ids = top_k(index, queries, k)
    return [(d[(i >= 0) & (d <= radius)], i[(i >= 0) & (d <= radius)]) for d, i in zip(dist, ids)]
