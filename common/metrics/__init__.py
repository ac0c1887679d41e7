"""Retrieval metrics for hashing: mAP (every published variant), P@K, R@K, NDCG@K, curves, caption R@K.

Definitions, variant names and fixtures follow ``specs/evaluation.md``. All functions take {-1, +1} codes and
multi-hot labels as NumPy arrays or torch tensors (CPU or CUDA), work in torch on the inputs' device and
return Python floats, or NumPy arrays for per-query values and curves.

Hamming distances take only K + 1 values, so ties are massive and the tie rule decides every truncated metric.
The default rule ranks by distance and breaks ties by database index ascending (a stable sort), which is
deterministic on every device; ``tie_break="reverse"`` uses descending index. For a random tie order, permute
the database rows (codes and labels together) with a seeded permutation before calling. Index order is only
neutral when the database order is unrelated to the labels, so store databases in a seeded random order.

The package is split by idea, each module building on the ones before it:

- :mod:`~common.metrics.products`: codes as 0/1 bit halves, and the exact integer product that yields Hamming
  distances and shared-label counts.
- :mod:`~common.metrics.inputs`: conversion to torch on one device and the value and shape checks.
- :mod:`~common.metrics.engine`: chunks of queries against the whole database, their rank order, and the loop
  that gathers per-chunk results into bounded memory.
- :mod:`~common.metrics.ties`: tie-aware expectations from per-query distance histograms.
- :mod:`~common.metrics.hashing`: the label-based metrics and curves (the public functions below).
- :mod:`~common.metrics.captions`: caption Recall@K, with its own counting ranker.
"""
from __future__ import annotations

from common.metrics import captions, engine, hashing, inputs, products, ties
from common.metrics.captions import caption_recall_at_k
from common.metrics.engine import TIE_BREAKS
from common.metrics.hashing import (
    GAINS,
    MAP_VARIANTS,
    ZERO_RELEVANT_POLICIES,
    hamming_distance,
    mean_average_precision,
    ndcg_at_k,
    pr_curve,
    precision_at_k,
    recall_at_k,
    retrieval_metrics,
    topn_precision_curve,
)

__all__ = [
    "GAINS",
    "MAP_VARIANTS",
    "TIE_BREAKS",
    "ZERO_RELEVANT_POLICIES",
    "caption_recall_at_k",
    "hamming_distance",
    "mean_average_precision",
    "ndcg_at_k",
    "pr_curve",
    "precision_at_k",
    "recall_at_k",
    "retrieval_metrics",
    "topn_precision_curve",
]
