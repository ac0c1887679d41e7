"""Queries against an index: the index's own model encodes them, the index's backend ranks the items."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from models.trained import TrainedModel, load_trained
from retrieval import backends
from retrieval.index import CodeIndex
from retrieval.sources import Item, encode_batches


@dataclass
class Hit:
    """One result: the item's rank (1-based), id, Hamming distance, record, and whether it is relevant (shares
    a label with the query; None when either has no labels)."""

    rank: int
    id: int
    distance: int
    record: dict
    relevant: bool | None

    def as_dict(self) -> dict:
        return {"rank": self.rank, "id": self.id, "distance": self.distance, "relevant": self.relevant,
                **{k: v for k, v in self.record.items() if k != "id"}}


def model_for(index: CodeIndex, checkpoint: str | os.PathLike | None = None, device: str = "auto") -> TrainedModel:
    """The model recorded in the index, or ``checkpoint`` when given; either must be the one that wrote it."""
    trained = load_trained(checkpoint if checkpoint is not None else index.model["checkpoint"], device)
    index.check_model(trained.identity())
    return trained


class Searcher:
    """An opened index with its faiss structure and the model that encodes queries for it."""

    def __init__(self, index: CodeIndex, model: TrainedModel):
        self.index, self.model = index, model
        self.faiss = index.faiss_index()

    def search(self, queries: list[Item], k: int = 10, radius: int | None = None) -> list[list[Hit]]:
        """The top-``k`` items of each query (within Hamming ``radius`` when given), ties by item id."""
        if not queries:
            raise ValueError("no query given: pass --text, --image or --split")
        if k < 1:
            raise ValueError(f"k must be a positive number of results, got {k}")
        if radius is not None and radius < 0:
            raise ValueError(f"radius must be a Hamming distance of 0 or more, got {radius}")
        codes = np.zeros((len(queries), self.index.bits // 8), dtype=np.uint8)
        for modality in {q.modality for q in queries}:
            rows = [i for i, q in enumerate(queries) if q.modality == modality]
            done = 0
            for packed, _ in encode_batches(self.model, [queries[i] for i in rows], progress=False):
                codes[rows[done:done + len(packed)]] = packed
                done += len(packed)
        return [self._hits(query, dist, ids) for query, (dist, ids) in zip(queries, self.rank(codes, k, radius))]

    def rank(self, codes: np.ndarray, k: int, radius: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
        """(distances, ids) per packed query code."""
        if radius is not None:
            return backends.within(self.faiss, codes, radius, k)
        dist, ids = backends.top_k(self.faiss, codes, k)
        return [(d[i >= 0], i[i >= 0]) for d, i in zip(dist, ids)]

    def _hits(self, query: Item, dist: np.ndarray, ids: np.ndarray) -> list[Hit]:
        hits = []
        for rank, (d, i) in enumerate(zip(dist.tolist(), ids.tolist()), 1):
            record = self.index.record(i)
            relevant = None
            if query.labels is not None and "labels" in record:
                relevant = bool(query.labels & set(record["labels"]))
            hits.append(Hit(rank, i, d, record, relevant))
        return hits
