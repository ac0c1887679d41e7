"""The hashing metrics of label-based retrieval: mAP in every published variant, P@K, R@K, NDCG@K, the top-N and
Hamming-radius PR curves, and :func:`retrieval_metrics`, all of them from one pass of the chunk engine.

These are the definitions of ``specs/evaluation.md`` sections 4-8; the per-chunk kernels (AP of a variant, DCG,
IDCG, hits at cut-offs) sit next to the public functions that reduce them.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from common.metrics import products
from common.metrics.engine import TIE_BREAKS, _blocks, _Block, _collect
from common.metrics.inputs import (
    _as_tensor, _check_codes_pair, _check_ks, _check_positive_int, _common_device, _prepare,
)
from common.metrics.products import _bit_halves, _products
from common.metrics.ties import _expected_ap_nk, _expected_hits, _harmonic, _TieStats
from utils.checks import check_choice
from utils.logging import get_logger

logger = get_logger(__name__)

MAP_VARIANTS = ("standard", "standard_excl", "minRK", "R", "legacy", "tie_aware")
ZERO_RELEVANT_POLICIES = ("zero", "exclude", "nan")
GAINS = ("exponential", "linear")


# ----------------------------------------------------------------------------------------------------------
# Per-chunk kernels
# ----------------------------------------------------------------------------------------------------------


def _average_precision(block: _Block, k: int, variant: str, harmonic: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Per-query AP@k of one variant (float64) and, for standard_excl, the queries it drops."""
    if variant == "tie_aware":
        stats = _TieStats(block, harmonic)
        if k == block.num_db:
            return stats.group_sums().sum(1) / block.num_relevant.clamp(min=1), None
        return _expected_ap_nk(stats, k), None
    num_relevant = block.num_relevant.to(torch.float64)
    width = block.num_db if variant == "legacy" else k
    hits, terms = block.ranked(width)
    if variant == "legacy":
        first = num_relevant.clamp(max=k)
        kept = hits <= first.to(torch.float32)[:, None]
        return (terms * kept).sum(1).double() / first.clamp(min=1), None
    s_k = terms.sum(1).double()
    found = hits[:, k - 1].to(torch.float64)
    if variant in ("standard", "standard_excl"):
        value = s_k / found.clamp(min=1)
        return value, (found == 0) if variant == "standard_excl" else None
    if variant == "minRK":
        return s_k / num_relevant.clamp(min=1, max=k), None
    return s_k / num_relevant.clamp(min=1), None


def _dcg(block: _Block, ks: list[int], gain: str) -> Tensor:
    """DCG@k for each k (rows x len(ks)) of the ranking under the block's tie rule."""
    width = max(ks)
    shared = block.shared.gather(1, block.order[:, :width]).to(torch.float64)
    gains = _gain(shared, gain)
    discounts = 1.0 / torch.log2(torch.arange(2, width + 2, dtype=torch.float64, device=shared.device))
    weighted = gains * discounts
    return torch.stack([weighted[:, :k].sum(1) for k in ks], 1)


def _idcg(block: _Block, ks: list[int], gain: str) -> Tensor:
    """IDCG@k: DCG of the whole database sorted by graded relevance, from per-query grade counts."""
    grades = block.num_classes + 1
    key = block.shared.to(torch.int32, copy=True)
    key += torch.arange(block.num_rows, dtype=torch.int32, device=key.device)[:, None] * grades
    counts = torch.bincount(key.view(-1), minlength=block.num_rows * grades).view(block.num_rows, grades)
    # at_least[:, g] = number of items with grade >= g (g = 0..C), with a zero column for g = C + 1.
    at_least = counts.flip(1).cumsum(1).flip(1)
    at_least = torch.cat([at_least, torch.zeros_like(at_least[:, :1])], 1)
    width = max(ks)
    cum_discount = torch.zeros(width + 1, dtype=torch.float64, device=key.device)
    cum_discount[1:] = (1.0 / torch.log2(torch.arange(2, width + 2, dtype=torch.float64, device=key.device))).cumsum(0)
    grade_gain = _gain(torch.arange(1, grades, dtype=torch.float64, device=key.device), gain)
    out = []
    for k in ks:
        upper = cum_discount[at_least[:, 1:grades].clamp(max=k)]
        lower = cum_discount[at_least[:, 2:].clamp(max=k)]
        out.append(((upper - lower) * grade_gain).sum(1))
    return torch.stack(out, 1)


def _gain(grade: Tensor, gain: str) -> Tensor:
    return torch.exp2(grade) - 1 if gain == "exponential" else grade


def _hits_at(block: _Block, ks: list[int], tie_aware: bool) -> Tensor:
    """n_k (or its tie-aware expectation) for each k (rows x len(ks), float64); ks already clamped to N."""
    if tie_aware:
        stats = _TieStats(block)
        cut = torch.tensor(ks, dtype=torch.float64, device=block.dist.device).expand(block.num_rows, -1)
        return _expected_hits(stats, cut.contiguous())
    hits, _ = block.ranked(max(ks))
    columns = torch.tensor([k - 1 for k in ks], device=hits.device)
    return hits.index_select(1, columns).to(torch.float64)


def _finish(values: Tensor, num_relevant: Tensor, zero_relevant: str, reduce: bool, dropped: Tensor | None = None):
    """Apply the zero-relevant policy, then average over the kept queries or return per-query values."""
    values = values.to(torch.float64)
    empty = num_relevant == 0
    drop = empty.clone() if zero_relevant == "exclude" else torch.zeros_like(empty)
    if dropped is not None:
        drop |= dropped
    values = torch.where(empty, 0.0 if zero_relevant == "zero" else math.nan, values)
    values = torch.where(drop, math.nan, values)
    if not reduce:
        return values.cpu().numpy()
    kept = values[~drop]
    return float(kept.mean()) if kept.numel() else 0.0


def _per_k(table: Tensor, ks: list[int], reduce: bool) -> dict:
    if reduce:
        means = table.mean(0).tolist()
        return {k: float(v) for k, v in zip(ks, means)}
    columns = table.cpu().numpy()
    return {k: columns[:, i].copy() for i, k in enumerate(ks)}


# ----------------------------------------------------------------------------------------------------------
# Public metrics
# ----------------------------------------------------------------------------------------------------------


def hamming_distance(a, b):
    """Hamming distances between the rows of two {-1, +1} code matrices.

    Computed as one exact product of 0/1 bit halves (see :func:`_bit_halves`); equals popcount(xor) of the
    packed bits and (K - a @ b.T) / 2.

    Returns:
        An (len(a), len(b)) int32 matrix with values 0..K: a torch tensor on the inputs' device if either input
        is a tensor, otherwise a NumPy array.
    """
    given = {"a": a, "b": b}
    tensors = {name: _as_tensor(x, name) for name, x in given.items()}
    device = _common_device(tensors, given)
    _check_codes_pair(tensors["a"], tensors["b"], "a", "b")
    dtype = products._product_dtype(device)
    x, y = _bit_halves(tensors["a"].to(device), "query", dtype), _bit_halves(tensors["b"].to(device), "db", dtype)
    dist = _products(x, y).to(torch.int32)
    return dist if any(isinstance(v, Tensor) for v in given.values()) else dist.numpy()


def mean_average_precision(
    query_codes,
    db_codes,
    query_labels,
    db_labels,
    topk: int | None = None,
    variant: str = "standard",
    zero_relevant: str = "zero",
    tie_break: str = "index",
    reduce: bool = True,
    chunk_size: int | None = None,
) -> float | np.ndarray:
    """Mean average precision of Hamming ranking, in any of the field's variants (spec sections 4-6).

    With s_k = sum_{j<=k} r_j * P@j, n_k = relevant items in the top k and R = relevant items in the database,
    AP@k of one query is, per ``variant``:

    - ``"standard"`` (spec V-nK): s_k / n_k, 0 if n_k = 0; the "mAP@K" of deep-hashing papers (DeepHash-pytorch
      ``CalcTopMap``, WCH, DJSRH, DCMH MATLAB). With topk=None it is the full-ranking AP. DeepHash-pytorch's
      ``topK=-1`` quirk (drops the last rank) is ``topk=N-1``.
    - ``"standard_excl"`` (V-nK-excl, HashNet): as standard, but queries with n_k = 0 leave the mean.
    - ``"minRK"`` (V-minRK, the IR textbook AP@K): s_k / min(R, k).
    - ``"R"`` (V-R, TREC truncated AP): s_k / R.
    - ``"legacy"`` (V-kal): mean of j / pos_j over the first min(R, k) relevant items, wherever they rank, as in
      ``calc_map_k`` of the CLIP-based hashing code bases. Not a standard definition: relevant items below the
      cut-off still count. It equals the full-ranking AP when topk is None or k >= R for every query.
    - ``"tie_aware"``: the expectation of ``"standard"`` over a uniformly random order inside every group of
      equal distance (He et al., CVPR 2018), so independent of ``tie_break``.

    All variants equal the full-ranking AP when topk >= N (topk is clamped to N).

    Args:
        query_codes: (M, K) {-1, +1} codes of the queries.
        db_codes: (N, K) {-1, +1} codes of the database.
        query_labels: (M, C) multi-hot labels; relevance means at least one shared label.
        db_labels: (N, C) multi-hot labels.
        topk: cut-off k, or None for the full ranking.
        variant: one of MAP_VARIANTS, see above.
        zero_relevant: queries with R = 0 get AP 0 and count (``"zero"``), leave the mean (``"exclude"``;
            0.0 if no query is left) or make it NaN (``"nan"``, what the reference ``calc_map_k`` does).
        tie_break: ``"index"`` (equal distances ranked by ascending database index) or ``"reverse"``.
        reduce: return the mean (float) or the per-query values (NumPy array, NaN for dropped queries).
        chunk_size: queries per chunk; None picks one that bounds memory to about 100 MB of work space.
    """
    check_choice("variant", variant, MAP_VARIANTS)
    check_choice("zero_relevant", zero_relevant, ZERO_RELEVANT_POLICIES)
    check_choice("tie_break", tie_break, TIE_BREAKS)
    data = _prepare(query_codes, db_codes, query_labels, db_labels)
    k = data.num_db if topk is None else min(_check_positive_int(topk, "topk"), data.num_db)
    harmonic = _harmonic(data.num_db, data.device) if variant == "tie_aware" else None

    def per_block(block: _Block) -> dict[str, Tensor]:
        ap, dropped = _average_precision(block, k, variant, harmonic)
        if dropped is None:
            dropped = torch.zeros_like(block.num_relevant, dtype=torch.bool)
        return {"ap": ap, "relevant": block.num_relevant, "dropped": dropped}

    out = _collect(data, chunk_size, tie_break, per_block)
    num_relevant = out["relevant"]
    logger.debug(
        "mAP@%s variant=%s tie_break=%s zero_relevant=%s: %d of %d queries have no relevant item",
        "all" if topk is None else topk, variant, tie_break, zero_relevant,
        int((num_relevant == 0).sum()), data.num_query,
    )
    return _finish(out["ap"], num_relevant, zero_relevant, reduce, out["dropped"])


def _hit_table(query_codes, db_codes, query_labels, db_labels, ks, tie_break, tie_aware, chunk_size):
    """n_k per query and cut-off, plus R per query; shared by precision, recall and the top-N curve."""
    check_choice("tie_break", tie_break, TIE_BREAKS)
    data = _prepare(query_codes, db_codes, query_labels, db_labels)
    cut = [min(k, data.num_db) for k in ks]
    out = _collect(data, chunk_size, tie_break,
                   lambda block: {"hits": _hits_at(block, cut, tie_aware), "relevant": block.num_relevant})
    return out["hits"], out["relevant"].to(torch.float64), cut


def precision_at_k(
    query_codes,
    db_codes,
    query_labels,
    db_labels,
    ks: Sequence[int] | int,
    tie_break: str = "index",
    tie_aware: bool = False,
    reduce: bool = True,
    chunk_size: int | None = None,
) -> dict:
    """P@k = n_k / k for each cut-off k (clamped to N), averaged over all queries.

    Args:
        ks: one cut-off or a list of them.
        tie_aware: return E[P@k] under random order inside tie groups, (R_< + t * r / n) / k (spec section 6).
        reduce: dict k -> mean (float), or k -> per-query NumPy array.
        Others: as in :func:`mean_average_precision`.
    """
    ks = _check_ks(ks)
    hits, _, cut = _hit_table(query_codes, db_codes, query_labels, db_labels, ks, tie_break, tie_aware, chunk_size)
    return _per_k(hits / torch.tensor(cut, dtype=torch.float64, device=hits.device), ks, reduce)


def recall_at_k(
    query_codes,
    db_codes,
    query_labels,
    db_labels,
    ks: Sequence[int] | int,
    tie_break: str = "index",
    tie_aware: bool = False,
    reduce: bool = True,
    chunk_size: int | None = None,
) -> dict:
    """R@k = n_k / R for each cut-off k (clamped to N); queries with R = 0 count 0 (spec section 7).

    Arguments as in :func:`precision_at_k`.
    """
    ks = _check_ks(ks)
    hits, relevant, _ = _hit_table(query_codes, db_codes, query_labels, db_labels, ks, tie_break, tie_aware, chunk_size)
    return _per_k(hits / relevant.clamp(min=1)[:, None], ks, reduce)


def ndcg_at_k(
    query_codes,
    db_codes,
    query_labels,
    db_labels,
    ks: Sequence[int] | int,
    gain: str = "exponential",
    tie_break: str = "index",
    reduce: bool = True,
    chunk_size: int | None = None,
) -> dict:
    """NDCG@k with graded relevance g = number of shared labels (spec section 7).

    DCG@k = sum_{j<=k} G(g_j) / log2(j + 1) with G(g) = 2^g - 1 (``gain="exponential"``, as CLIP-hash's
    weighted similarity) or G(g) = g (``"linear"``); IDCG@k is DCG@k of the whole database sorted by g, and
    NDCG is 0 when IDCG is 0. Cut-offs are clamped to N; other arguments as in :func:`precision_at_k`.
    """
    ks = _check_ks(ks)
    check_choice("gain", gain, GAINS)
    check_choice("tie_break", tie_break, TIE_BREAKS)
    data = _prepare(query_codes, db_codes, query_labels, db_labels)
    cut = [min(k, data.num_db) for k in ks]

    def per_block(block: _Block) -> dict[str, Tensor]:
        ideal = _idcg(block, cut, gain)
        return {"ndcg": torch.where(ideal > 0, _dcg(block, cut, gain) / ideal.clamp(min=1e-300), 0.0)}

    return _per_k(_collect(data, chunk_size, tie_break, per_block, keep_shared=True)["ndcg"], ks, reduce)


def topn_precision_curve(
    query_codes,
    db_codes,
    query_labels,
    db_labels,
    grid: Sequence[int] | None = None,
    tie_break: str = "index",
    chunk_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Mean P@N and R@N over a grid of list lengths N: what most hashing papers plot as "precision@top-N".

    Plotting recall against precision gives the "PR curve" of WCH-style papers (spec section 8).

    Args:
        grid: list lengths; default 200, 400, ..., 10000 (exact integers, unlike DCHMT's float grid). Values
            above N are capped at N and duplicates merged.

    Returns:
        ``{"n": ..., "precision": ..., "recall": ...}`` as NumPy arrays; queries with R = 0 count 0 in both.
    """
    ks = _check_ks(range(200, 10001, 200) if grid is None else grid, "grid")
    hits, relevant, cut = _hit_table(query_codes, db_codes, query_labels, db_labels, ks, tie_break, False, chunk_size)
    ks = sorted(set(cut))
    hits = hits[:, [cut.index(k) for k in ks]]
    n = torch.tensor(ks, dtype=torch.float64, device=hits.device)
    return {
        "n": np.asarray(ks, dtype=np.int64),
        "precision": (hits / n).mean(0).cpu().numpy(),
        "recall": (hits / relevant.clamp(min=1)[:, None]).mean(0).cpu().numpy(),
    }


def pr_curve(query_codes, db_codes, query_labels, db_labels, chunk_size: int | None = None) -> dict[str, np.ndarray]:
    """Precision and recall of Hamming-radius retrieval for radius r = 0..K (spec section 8).

    Micro values pool all query-database pairs (DCMH MATLAB ``calcPreRecRadiusLabel``, which stops one radius
    short of the largest distance): P(r) = relevant pairs within r / pairs within r, R(r) = relevant pairs
    within r / relevant pairs. Macro values average per-query precision (0 if nothing lies within r) and
    recall (0 if R = 0); macro precision at r = 2 is the classic "precision within Hamming radius 2".

    Returns:
        ``{"radius", "precision_micro", "recall_micro", "precision_macro", "recall_macro"}`` NumPy arrays.
    """
    data = _prepare(query_codes, db_codes, query_labels, db_labels)
    bins = data.bits + 1
    zeros = lambda: torch.zeros(bins, dtype=torch.float64, device=data.device)  # noqa: E731
    within, rel_within, prec_sum, rec_sum = zeros(), zeros(), zeros(), zeros()
    total_relevant = 0.0
    for block in _blocks(data, chunk_size, "index"):
        n, r = block.histogram()
        cum_n, cum_r = n.cumsum(1), r.cumsum(1)
        relevant = block.num_relevant.to(torch.float64)[:, None]
        within += cum_n.sum(0)
        rel_within += cum_r.sum(0)
        total_relevant += float(relevant.sum())
        prec_sum += (cum_r / cum_n.clamp(min=1)).sum(0)
        rec_sum += (cum_r / relevant.clamp(min=1)).sum(0)
    return {
        "radius": np.arange(bins),
        "precision_micro": (rel_within / within.clamp(min=1)).cpu().numpy(),
        "recall_micro": (rel_within / max(total_relevant, 1.0)).cpu().numpy(),
        "precision_macro": (prec_sum / data.num_query).cpu().numpy(),
        "recall_macro": (rec_sum / data.num_query).cpu().numpy(),
    }


def _block_metrics(block: _Block, topks: list[int], ks: list[int], cut: list[int], harmonic: Tensor | None) -> dict:
    """Per-query columns of :func:`retrieval_metrics` for one chunk (a function, so its temporaries die here)."""
    n_db = block.num_db
    hits, terms = block.ranked(n_db)
    relevant = hits[:, -1].to(torch.float64)
    out = {"mAP@all": terms.sum(1).double() / relevant.clamp(min=1)}
    if harmonic is not None:
        out["mAP@all[tie]"] = _TieStats(block, harmonic).group_sums().sum(1) / relevant.clamp(min=1)
    for k in topks:
        found = hits[:, min(k, n_db) - 1].to(torch.float64)
        out[f"mAP@{k}"] = terms[:, : min(k, n_db)].sum(1).double() / found.clamp(min=1)
        out[f"num_zero_found@{k}"] = found == 0
    if ks:
        found = hits.index_select(1, torch.tensor([k - 1 for k in cut], device=hits.device)).to(torch.float64)
        ideal = _idcg(block, cut, "exponential")
        ndcg = torch.where(ideal > 0, _dcg(block, cut, "exponential") / ideal.clamp(min=1e-300), 0.0)
        for i, k in enumerate(ks):
            out[f"P@{k}"] = found[:, i] / cut[i]
            out[f"R@{k}"] = found[:, i] / relevant.clamp(min=1)
            out[f"NDCG@{k}"] = ndcg[:, i]
    out["num_zero_relevant"] = relevant == 0
    return out


def retrieval_metrics(
    query_codes,
    db_codes,
    query_labels,
    db_labels,
    map_topk: Sequence[int | None] = (None,),
    ks: Sequence[int] | int = (),
    tie_aware: bool = True,
    tie_break: str = "index",
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Every standard number of one retrieval direction from a single pass over the distances.

    Same definitions as the separate functions (mAP variant ``"standard"``, zero-relevant queries count 0,
    exponential-gain NDCG), but the distances, relevance and ranking of each chunk are computed once.

    Returns:
        A flat dict: ``mAP@all``, ``mAP@all[tie]`` (tie-aware, if asked), ``mAP@<k>`` for each finite k of
        map_topk, ``P@<k>``, ``R@<k>`` and ``NDCG@<k>`` for each k of ks, ``num_zero_relevant`` (queries with
        no relevant item) and ``num_zero_found@<k>`` (queries with none in the top k) for each finite k.
    """
    check_choice("tie_break", tie_break, TIE_BREAKS)
    topks = list(dict.fromkeys(_check_positive_int(k, "each entry of map_topk") for k in map_topk if k is not None))
    ks = [] if isinstance(ks, (list, tuple)) and not ks else list(dict.fromkeys(_check_ks(ks)))
    data = _prepare(query_codes, db_codes, query_labels, db_labels)
    n_db = data.num_db
    harmonic = _harmonic(n_db, data.device) if tie_aware else None
    cut = [min(k, n_db) for k in ks]
    # Key order of the result: the mAPs, then P, R and NDCG by cut-off, then the diagnostic counts.
    names = ["mAP@all"] + (["mAP@all[tie]"] if tie_aware else []) + [f"mAP@{k}" for k in topks]
    names += [f"{metric}@{k}" for metric in ("P", "R", "NDCG") for k in ks]
    names += ["num_zero_relevant"] + [f"num_zero_found@{k}" for k in topks]
    columns = _collect(data, chunk_size, tie_break, lambda block: _block_metrics(block, topks, ks, cut, harmonic),
                       keep_shared=bool(ks))
    return {
        name: int(columns[name].sum()) if name.startswith("num_") else float(columns[name].double().mean())
        for name in names
    }
