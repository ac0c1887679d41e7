"""Benchmark Hamming search: the faiss backends of retrieval/backends.py against a naive NumPy implementation.

    python tools/bench_search.py                       # 1M and 10M random 64-bit codes, 1,000 queries, top-100
    python tools/bench_search.py --sizes 10000 --queries 100 --single 10    # a smoke run

Per collection size: the naive search (codes unpacked once to a +-1 float32 matrix, then per database chunk a
matrix product and ``argpartition``, merged across chunks), ``flat``, ``multihash`` radius search, ``hnsw`` and
``ivf`` — build time, ms per query in a batch of all queries and one query at a time, queries/s, the peak
resident memory of the process that ran it, and recall@k against the exact answer (exact methods must give
exactly the flat ranking, ties by item id). Each method runs in its own process, so its peak memory is its
own. Radius queries are database codes with 1-3 random bits flipped, so every query has neighbours; the top-k
queries are independent random codes (the worst case for the approximate indexes: random codes have no
cluster structure, real hash codes do).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from retrieval import backends  # noqa: E402
from utils.io import atomic_write_text  # noqa: E402

# Database items per naive chunk: the product of all queries with one chunk is queries x chunk float32.
NAIVE_CHUNK = 1 << 16
RADII = (2, 4, 8)


def random_codes(count: int, bits: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, bits // 8), dtype=np.uint8)


def radius_queries(codes: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Database codes with 1-3 random bits flipped."""
    rng = np.random.default_rng(seed)
    queries = codes[rng.integers(0, len(codes), size=count)].copy()
    bits = queries.shape[1] * 8
    for row, flips in enumerate(rng.integers(1, 4, size=count)):
        for bit in rng.choice(bits, size=flips, replace=False):
            queries[row, bit // 8] ^= np.uint8(0x80 >> (bit % 8))
    return queries


def _signs(codes: np.ndarray) -> np.ndarray:
    return np.unpackbits(codes, axis=1).astype(np.float32) * 2 - 1


class Naive:
    """Top-k by +-1 products: distance = (bits - <q, x>) / 2, chunked over the database."""

    def __init__(self, codes: np.ndarray):
        self.bits = codes.shape[1] * 8
        self.db = _signs(codes)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _signs(queries)
        best_d = np.empty((len(q), 0), dtype=np.int64)
        best_i = np.empty((len(q), 0), dtype=np.int64)
        for start in range(0, len(self.db), NAIVE_CHUNK):
            dist = ((self.bits - q @ self.db[start:start + NAIVE_CHUNK].T) / 2).astype(np.int64)
            cut = min(k, dist.shape[1])
            # distance * chunk + position orders by distance, then id, so the partition keeps the lowest ids
            key = dist * NAIVE_CHUNK + np.arange(dist.shape[1])
            part = np.argpartition(key, cut - 1, axis=1)[:, :cut]
            cand_d = np.concatenate([best_d, np.take_along_axis(dist, part, 1)], axis=1)
            cand_i = np.concatenate([best_i, part + start], axis=1)
            order = np.lexsort((cand_i, cand_d), axis=1)[:, :k]  # the k best so far, ties by id
            best_d, best_i = np.take_along_axis(cand_d, order, 1), np.take_along_axis(cand_i, order, 1)
        return best_d, best_i


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(function, *args):
    start = time.perf_counter()
    out = function(*args)
    return out, time.perf_counter() - start


def _single_ms(search, queries: np.ndarray, count: int) -> float:
    start = time.perf_counter()
    for row in range(min(count, len(queries))):
        search(queries[row:row + 1])
    return (time.perf_counter() - start) / min(count, len(queries)) * 1000


def run_method(method: str, size: int, args: argparse.Namespace) -> dict:
    """One method at one size, in the calling process; returns its measurements and exact answers."""
    codes = random_codes(size, args.bits, seed=0)
    queries = random_codes(args.queries, args.bits, seed=1)
    out: dict = {"method": method, "size": size}
    if method == "naive":
        naive, out["build_s"] = _timed(Naive, codes)
        (dist, ids), seconds = _timed(naive.search, queries, args.k)
        out["single_ms"] = _single_ms(lambda q: naive.search(q, args.k), queries, args.single)
    elif method.startswith("multihash"):
        backend = backends.make_backend("multihash", {"nhash": args.nhash})
        index, out["build_s"] = _timed(backends.build, backend, codes)
        near = radius_queries(codes, args.queries, seed=2)
        flat = faiss.IndexBinaryFlat(args.bits)
        flat.add(codes)
        out["radius"] = {}
        for radius in RADII:
            found, seconds = _timed(backends.within, index, near, radius, size)
            scanned, scan_seconds = _timed(_flat_range, flat, near, radius)
            same = all(np.array_equal(np.sort(a[1]), np.sort(b)) for a, b in zip(found, scanned))
            out["radius"][radius] = {"ms": seconds / len(near) * 1000, "flat_ms": scan_seconds / len(near) * 1000,
                                     "results": float(np.mean([len(a[1]) for a in found])), "exact": same}
        out["peak_mb"] = _peak_mb()
        return out
    else:
        params = {"hnsw": {"m": args.hnsw_m, "ef_search": args.ef_search},
                  "ivf": {"nlist": args.nlist, "nprobe": args.nprobe}}.get(method, {})
        backend = backends.make_backend(method, params)
        index, out["build_s"] = _timed(backends.build, backend, codes)
        (dist, ids), seconds = _timed(backends.top_k, index, queries, args.k)
        out["single_ms"] = _single_ms(lambda q: backends.top_k(index, q, args.k), queries, args.single)
        out["params"] = backend.params()
    out["batched_ms"] = seconds / len(queries) * 1000
    out["qps"] = len(queries) / seconds
    out["peak_mb"] = _peak_mb()
    out["ids"], out["dist"] = ids.tolist(), dist.tolist()
    return out


def _flat_range(flat, queries: np.ndarray, radius: int) -> list[np.ndarray]:
    """All ids within ``radius`` by the exhaustive scan (faiss keeps distances < its radius)."""
    limits, _, ids = flat.range_search(queries, radius + 1)
    return [ids[a:b] for a, b in zip(limits[:-1], limits[1:])]


def _in_process(method: str, size: int, args: argparse.Namespace) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(run_method, (method, size, args))


def _recall(found: list, exact: list) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact)]))


def table(results: list[dict], k: int) -> str:
    lines = [f"| items | method | build s | ms/query batched | ms/query single | queries/s | peak MB | "
             f"recall@{k} |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        if "radius" in r:
            for radius, m in r["radius"].items():
                lines.append(f"| {r['size']:,} | multihash r<={radius} (flat scan {m['flat_ms']:.3f} ms) | "
                             f"{r['build_s']:.1f} | {m['ms']:.3f} | | {1000 / m['ms']:,.0f} | {r['peak_mb']:,.0f} | "
                             f"{'exact' if m['exact'] else 'DIFFERS'} ({m['results']:.1f} found) |")
            continue
        recall = r.get("recall")
        lines.append(f"| {r['size']:,} | {r['method']} | {r['build_s']:.1f} | {r['batched_ms']:.3f} | "
                     f"{r['single_ms']:.3f} | {r['qps']:,.0f} | {r['peak_mb']:,.0f} | "
                     f"{'exact' if r.get('exact') else f'{recall:.3f}'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--methods", nargs="+", default=["naive", "flat", "multihash", "hnsw", "ivf"],
                        choices=["naive", "flat", "multihash", "hnsw", "ivf"])
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("-k", type=int, default=100)
    parser.add_argument("--single", type=int, default=20, help="queries timed one at a time")
    parser.add_argument("--nhash", type=int, default=4, help="multihash substrings")
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--json", help="also write every measurement to this JSON file")
    args = parser.parse_args(argv)
    results = []
    for size in args.sizes:
        exact = None
        for method in args.methods:
            r = _in_process(method, size, args)
            if method == "flat":
                exact = r
            results.append(r)
            print(f"{size:,} {method}: done ({r['peak_mb']:,.0f} MB peak)", file=sys.stderr, flush=True)
        for r in results:
            if r["size"] == size and "ids" in r and exact is not None:
                r["exact"] = r["ids"] == exact["ids"] and r["dist"] == exact["dist"]
                r["recall"] = _recall(r["ids"], exact["ids"])
    print(table(results, args.k))
    for size in args.sizes:
        by = {r["method"]: r for r in results if r["size"] == size}
        if "naive" in by and "flat" in by:
            print(f"{size:,} items: flat is {by['naive']['batched_ms'] / by['flat']['batched_ms']:.1f}x faster than "
                  f"naive batched, {by['naive']['single_ms'] / by['flat']['single_ms']:.1f}x single; peak memory "
                  f"{by['flat']['peak_mb']:,.0f} MB vs {by['naive']['peak_mb']:,.0f} MB")
    if args.json:
        atomic_write_text(args.json, json.dumps([{k: v for k, v in r.items() if k not in ("ids", "dist")}
                                               for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
