"""Retrieval metrics for hashing: mAP (every published variant), P@K, R@K, NDCG@K, curves, caption R@K.

Definitions, variant names and fixtures follow ``specs/evaluation.md``. All functions take {-1, +1} codes and
multi-hot labels as NumPy arrays or torch tensors (CPU or CUDA), work in torch on the inputs' device and
return Python floats, or NumPy arrays for per-query values and curves.

Why the code looks the way it does:

- Hamming distances take only K + 1 values, so ties are massive and the tie rule decides every truncated
  metric. The default rule ranks by distance and breaks ties by database index ascending (a stable sort),
  which is deterministic on every device; ``tie_break="reverse"`` uses descending index. For a random tie
  order, permute the database rows (codes and labels together) with a seeded permutation before calling.
  Index order is only neutral when the database order is unrelated to the labels, so store databases in a
  seeded random order.
- Work is chunked over queries (``chunk_size`` rows at a time) so that memory stays bounded by a few bytes
  per query-database pair of one chunk, never the full M x N matrices.
- Distances and shared-label counts are exact integer products: codes are stored as 0/1 bit halves so that
  one product yields the Hamming distance directly; on CPU the products run as int8 GEMMs with int32
  accumulation (``torch._int_mm``), elsewhere in float32 (exact for these small integers), with autocast off.
- The ranking needs no comparison sort: on CPU the stable ordering of 8/16-bit distances comes from NumPy's
  radix sort (linear time), on other devices from torch's stable sort; both give the same order.
- Tie-aware metrics (expected value over a uniformly random order inside every tie group) need only per-query
  histograms of (distance, relevant) counts: O(K) work per query, no ranking at all.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

MAP_VARIANTS = ("standard", "standard_excl", "minRK", "R", "legacy", "tie_aware")
ZERO_RELEVANT_POLICIES = ("zero", "exclude", "nan")
TIE_BREAKS = ("index", "reverse")
GAINS = ("exponential", "linear")

# Query-database pairs per chunk when chunk_size is None: the ranking path holds about 25 bytes per pair
# (distances, relevance, rank order, hits, precision terms), so a chunk needs on the order of 100 MB.
_PAIRS_PER_CHUNK = 2**22
# Lower bound on rows per chunk: each chunk re-reads the whole database, so very thin chunks of a huge
# database would be limited by that traffic rather than by the pair work.
_MIN_ROWS_PER_CHUNK = 8
# Entries of a code or label matrix validated at once (bounds the temporaries of the value check).
_VALIDATE_ELEMENTS = 2**22


# ----------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Data:
    """Validated inputs on one device, in the dtype of :func:`_products` there; codes as bit halves, so that
    one product gives Hamming distances and another the numbers of shared labels."""

    query_codes: Tensor
    db_codes: Tensor
    query_labels: Tensor
    db_labels: Tensor

    @property
    def bits(self) -> int:
        return self.query_codes.shape[1] // 2

    @property
    def num_query(self) -> int:
        return self.query_codes.shape[0]

    @property
    def num_db(self) -> int:
        return self.db_codes.shape[0]

    @property
    def num_classes(self) -> int:
        return self.query_labels.shape[1]

    @property
    def device(self) -> torch.device:
        return self.query_codes.device


def _as_tensor(x, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x.detach()
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be a numeric array or tensor, got dtype {arr.dtype}")
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr)


def _common_device(tensors: dict[str, Tensor], given: dict[str, object]) -> torch.device:
    """The device of the inputs that are torch tensors (NumPy inputs follow them); CPU if there are none."""
    devices = {str(t.device): name for name, t in tensors.items() if isinstance(given[name], Tensor)}
    if len(devices) > 1:
        listing = ", ".join(f"{name} on {dev}" for dev, name in devices.items())
        raise ValueError(f"inputs must be on one device, got {listing}")
    return torch.device(next(iter(devices))) if devices else torch.device("cpu")


def _check_values(x: Tensor, name: str, allowed: tuple[float, float], expected: str) -> None:
    """Raise unless every entry of x is one of the two allowed values (checked in bounded row blocks)."""
    if x.dtype == torch.bool:
        if allowed != (0, 1):
            raise ValueError(f"{name} must hold {expected}, got a bool tensor")
        return
    rows = max(1, _VALIDATE_ELEMENTS // max(1, x.shape[1]))
    for part in x.split(rows):
        if not ((part == allowed[0]) | (part == allowed[1])).all():
            raise ValueError(f"{name} must hold only {expected}")


def _check_matrix(x: Tensor, name: str) -> None:
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D matrix (rows x columns), got shape {tuple(x.shape)}")


def _check_codes(x: Tensor, name: str) -> None:
    _check_matrix(x, name)
    _check_values(x, name, (-1, 1), "-1 and +1 (binarize with x >= 0 -> +1, else -1; 0 is not a code value)")


def _check_labels(x: Tensor, name: str, codes_name: str, num_rows: int) -> None:
    _check_matrix(x, name)
    if x.shape[0] != num_rows:
        raise ValueError(f"{name} must have one row per row of {codes_name} ({num_rows}), got {x.shape[0]}")
    _check_values(x, name, (0, 1), "0 and 1 (multi-hot labels)")


def _check_codes_pair(query: Tensor, db: Tensor, query_name: str, db_name: str) -> None:
    _check_codes(query, query_name)
    _check_codes(db, db_name)
    if query.shape[1] != db.shape[1]:
        raise ValueError(
            f"{db_name} must have the code length of {query_name} ({query.shape[1]} bits), got {db.shape[1]}"
        )


def _prepare(query_codes, db_codes, query_labels, db_labels) -> _Data:
    given = {"query_codes": query_codes, "db_codes": db_codes, "query_labels": query_labels, "db_labels": db_labels}
    tensors = {name: _as_tensor(x, name) for name, x in given.items()}
    device = _common_device(tensors, given)
    _check_codes_pair(tensors["query_codes"], tensors["db_codes"], "query_codes", "db_codes")
    _check_labels(tensors["query_labels"], "query_labels", "query_codes", tensors["query_codes"].shape[0])
    _check_labels(tensors["db_labels"], "db_labels", "db_codes", tensors["db_codes"].shape[0])
    if tensors["query_labels"].shape[1] != tensors["db_labels"].shape[1]:
        raise ValueError(
            f"db_labels must have as many classes as query_labels ({tensors['query_labels'].shape[1]}), "
            f"got {tensors['db_labels'].shape[1]}"
        )
    dtype = _product_dtype(device)
    return _Data(
        query_codes=_bit_halves(tensors["query_codes"].to(device), "query", dtype),
        db_codes=_bit_halves(tensors["db_codes"].to(device), "db", dtype),
        query_labels=tensors["query_labels"].to(device=device, dtype=dtype),
        db_labels=tensors["db_labels"].to(device=device, dtype=dtype),
    )


def _product_dtype(device: torch.device) -> torch.dtype:
    """int8 on CPU (exact int32 GEMM, about 5x faster than float32 there); float32 elsewhere, which is also
    exact for 0/1 entries and sums below 2^24."""
    return torch.int8 if device.type == "cpu" else torch.float32


def _products(a: Tensor, b: Tensor) -> Tensor:
    """Exact dot products of all rows of a with all rows of b (int32 on CPU, float32 elsewhere).

    Autocast is switched off: inside a caller's mixed-precision region a half-precision product would round
    the inner products of long codes.
    """
    if a.dtype == torch.int8:
        return torch._int_mm(a, b.T)
    with torch.autocast(device_type=a.device.type, enabled=False):
        return a @ b.T


def _bit_halves(codes: Tensor, side: str, dtype: torch.dtype) -> Tensor:
    """Codes as 0/1 bit halves whose product is the Hamming distance: [b, 1 - b] for the query side and
    [1 - b, b] for the database side (b = code > 0), so <q, x> = sum b_q (1 - b_x) + (1 - b_q) b_x."""
    bits = codes > 0
    halves = torch.cat((bits, ~bits) if side == "query" else (~bits, bits), 1)
    return halves.view(torch.int8) if dtype == torch.int8 else halves.to(dtype)  # a bool is a 0/1 byte


def _check_choice(value, name: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_ks(ks, name: str = "ks") -> list[int]:
    values = [ks] if isinstance(ks, (int, np.integer)) and not isinstance(ks, bool) else list(ks)
    if not values:
        raise ValueError(f"{name} must name at least one cut-off")
    return [_check_positive_int(k, f"each entry of {name}") for k in values]


def _chunk_rows(num_db: int, chunk_size: int | None) -> int:
    if chunk_size is None:
        return max(_MIN_ROWS_PER_CHUNK, _PAIRS_PER_CHUNK // num_db)
    return _check_positive_int(chunk_size, "chunk_size")


# ----------------------------------------------------------------------------------------------------------
# One chunk of queries against the whole database
# ----------------------------------------------------------------------------------------------------------


def _sort_on_host(device: torch.device) -> bool:
    """Whether ranking uses NumPy's radix sort: only where the distances already live in host memory."""
    return device.type == "cpu"


def _rank_order(dist: Tensor, tie_break: str) -> Tensor:
    """Database indices of every row in rank order: ascending distance, ties by index (or reversed index).

    On CPU, NumPy's stable sort of 8/16-bit integers is a radix sort (linear time, ~20x faster than
    torch.sort here); elsewhere torch's stable sort runs on the device. Both yield the same order.
    """
    reverse = tie_break == "reverse"
    if reverse:
        dist = dist.flip(1)
    if _sort_on_host(dist.device):
        order = torch.from_numpy(np.argsort(dist.numpy(), axis=1, kind="stable"))
    else:
        order = torch.sort(dist, dim=1, stable=True).indices
    if reverse:
        order = order.neg_().add_(dist.shape[1] - 1)
    return order


class _Block:
    """Distances and relevance of a chunk of queries against the whole database, plus derived views."""

    def __init__(self, data: _Data, rows: slice, tie_break: str, keep_shared: bool = False):
        self.rows = rows
        self.bits = data.bits
        self.num_classes = data.num_classes
        self.tie_break = tie_break
        # 8 bits hold the distance for K <= 255.
        self.dist = _products(data.query_codes[rows], data.db_codes).to(
            torch.uint8 if data.bits <= 255 else torch.int16
        )
        shared = _products(data.query_labels[rows], data.db_labels)
        self.rel = shared > 0
        self.shared = shared if keep_shared else None
        del shared
        self._num_relevant: Tensor | None = None
        self._order: Tensor | None = None

    @property
    def num_rows(self) -> int:
        return self.dist.shape[0]

    @property
    def num_db(self) -> int:
        return self.dist.shape[1]

    @property
    def num_relevant(self) -> Tensor:
        """R, the number of relevant database items of each query (int64)."""
        if self._num_relevant is None:
            self._num_relevant = self.rel.sum(1)
        return self._num_relevant

    @property
    def order(self) -> Tensor:
        if self._order is None:
            self._order = _rank_order(self.dist, self.tie_break)
        return self._order

    def ranked(self, width: int) -> tuple[Tensor, Tensor]:
        """Hits n_k = sum_{j<=k} r_j and terms r_k * P@k for the first `width` ranks (float32, exact counts)."""
        ranked_rel = self.rel.gather(1, self.order[:, :width])
        hits = ranked_rel.cumsum(1, dtype=torch.float32)
        inverse_rank = torch.arange(1, width + 1, dtype=torch.float32, device=hits.device).reciprocal_()
        terms = torch.mul(hits, ranked_rel).mul_(inverse_rank)
        return hits, terms

    def histogram(self) -> tuple[Tensor, Tensor]:
        """Per query and distance 0..K: number of database items and of relevant ones (float64)."""
        bins = self.bits + 1
        # key = row * 2 (K + 1) + 2 * distance + relevant: one bincount gives both counts of every row.
        num_keys = self.num_rows * 2 * bins
        key_dtype = torch.int16 if num_keys <= torch.iinfo(torch.int16).max else torch.int32  # less traffic
        offsets = torch.arange(0, num_keys, 2 * bins, dtype=key_dtype, device=self.dist.device)
        key = torch.add(offsets[:, None], self.dist, alpha=2).add_(self.rel.view(torch.uint8))
        counts = torch.bincount(key.view(-1), minlength=num_keys).view(self.num_rows, bins, 2)
        if self._num_relevant is None:  # saves a pass over the pairs
            self._num_relevant = counts[:, :, 1].sum(1)
        counts = counts.to(torch.float64)
        return counts.sum(2), counts[:, :, 1].contiguous()

    def release(self) -> None:
        """Drop the pair-sized tensors, so that they are gone before the next chunk is built."""
        self.dist = self.rel = self.shared = self._order = None


def _blocks(data: _Data, chunk_size: int | None, tie_break: str, keep_shared: bool = False) -> Iterator[_Block]:
    rows = _chunk_rows(data.num_db, chunk_size)
    for start in range(0, data.num_query, rows):
        block = _Block(data, slice(start, start + rows), tie_break, keep_shared)
        yield block
        # The caller's loop variable still refers to this block while the next one is built.
        block.release()


def _collect(
    data: _Data, chunk_size: int | None, tie_break: str, per_block: Callable[[_Block], dict[str, Tensor]],
    keep_shared: bool = False,
) -> dict[str, Tensor]:
    """Run ``per_block`` on every chunk and gather its per-query outputs into whole-query-set tensors.

    The outputs are written into tensors allocated once, not collected in lists and concatenated: small
    allocations that outlive each chunk fragment the heap between the large per-chunk temporaries, and peak
    memory then grew with the number of chunks (glibc malloc; 700 MB instead of 60 MB at COCO size).
    """
    out: dict[str, Tensor] = {}
    for block in _blocks(data, chunk_size, tie_break, keep_shared):
        for name, value in per_block(block).items():
            if name not in out:
                out[name] = value.new_empty((data.num_query, *value.shape[1:]))
            out[name][block.rows] = value
    return out


# ----------------------------------------------------------------------------------------------------------
# Per-chunk kernels
# ----------------------------------------------------------------------------------------------------------


def _harmonic(n_max: int, device: torch.device) -> Tensor:
    """H[m] = 1 + 1/2 + ... + 1/m with H[0] = 0 (float64): sums of 1/rank over a run of ranks in O(1)."""
    h = torch.zeros(n_max + 1, dtype=torch.float64, device=device)
    h[1:] = torch.arange(1, n_max + 1, dtype=torch.float64, device=device).reciprocal_().cumsum_(0)
    return h


def _expected_group_sum(harmonic: Tensor, before: Tensor, rel_before: Tensor, slots: Tensor, hits: Tensor) -> Tensor:
    """E[sum of r_k * P@k] over `slots` ranks that follow `before` items (`rel_before` of them relevant).

    The slots hold `hits` relevant items in uniformly random order. Slot j is relevant with probability
    hits/slots and then has, in expectation, (j - 1)(hits - 1)/(slots - 1) relevant items before it inside the
    run (spec section 6). The sums over j of 1/(before + j) and (j - 1)/(before + j) reduce to differences of
    harmonic numbers, so the cost is O(1) per run.
    """
    a = harmonic[(before + slots).long()] - harmonic[before.long()]
    b = slots - (before + 1) * a
    within = torch.where(slots > 1, (hits - 1) / (slots - 1).clamp(min=1), torch.zeros_like(slots))
    return hits / slots.clamp(min=1) * ((rel_before + 1) * a + within * b)


def _log_comb(n: Tensor, k: Tensor) -> Tensor:
    return torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)


class _TieStats:
    """Tie-group statistics of a block: sizes, relevant counts and cumulative counts per distance."""

    def __init__(self, block: _Block, harmonic: Tensor | None = None):
        self.n, self.r = block.histogram()
        self.cum_n = self.n.cumsum(1)
        self.cum_r = self.r.cumsum(1)
        self.harmonic = harmonic

    def group_sums(self) -> Tensor:
        """Expected contribution of every tie group to sum_k r_k * P@k over the full ranking (needs the
        harmonic numbers)."""
        return _expected_group_sum(self.harmonic, self.cum_n - self.n, self.cum_r - self.r, self.n, self.r)

    def boundary(self, ks: Tensor) -> tuple[Tensor, ...]:
        """For cut-offs ks (rows x m): index of the tie group holding rank k, and its before/size/relevant
        counts plus the number t of its slots that fall inside the top k."""
        group = torch.searchsorted(self.cum_n, ks, side="left").clamp_(max=self.n.shape[1] - 1)
        size = self.n.gather(1, group)
        relevant = self.r.gather(1, group)
        before = self.cum_n.gather(1, group) - size
        rel_before = self.cum_r.gather(1, group) - relevant
        return group, before, rel_before, size, relevant, ks - before


def _expected_hits(stats: _TieStats, ks: Tensor) -> Tensor:
    """E[n_k]: all relevant items of earlier groups plus the share t * r / n of the boundary group."""
    _, _, rel_before, size, relevant, inside = stats.boundary(ks)
    return rel_before + inside * relevant / size.clamp(min=1)


def _expected_ap_nk(stats: _TieStats, k: int) -> Tensor:
    """E[s_k / n_k] (variant standard at cut-off k) under random order inside tie groups.

    Groups before the boundary group lie wholly in the top k, so only the number h of relevant items in the
    boundary group's t top slots is random: h is hypergeometric, and given h the expected sum is
    _expected_group_sum over t slots with h hits.
    """
    rows = stats.n.shape[0]
    ks = torch.full((rows, 1), float(k), dtype=torch.float64, device=stats.n.device)
    group, before, rel_before, size, relevant, inside = stats.boundary(ks)
    groups = torch.arange(stats.n.shape[1], device=group.device)
    earlier = (stats.group_sums() * (groups[None, :] < group)).sum(1, keepdim=True)
    h_max = int(torch.minimum(relevant, inside).max().item())
    h = torch.arange(h_max + 1, dtype=torch.float64, device=group.device)[None, :]
    feasible = (h <= relevant) & (inside - h >= 0) & (inside - h <= size - relevant)
    log_p = (
        _log_comb(relevant, torch.minimum(h, relevant))
        + _log_comb(size - relevant, torch.minimum((inside - h).clamp(min=0), size - relevant))
        - _log_comb(size, inside)
    )
    prob = torch.where(feasible, log_p.exp(), torch.zeros_like(log_p))
    total = earlier + _expected_group_sum(stats.harmonic, before, rel_before, inside, h)
    found = rel_before + h
    value = torch.where(found > 0, total / found.clamp(min=1), torch.zeros_like(total))
    return (prob * value).sum(1)


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
    dtype = _product_dtype(device)
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
    _check_choice(variant, "variant", MAP_VARIANTS)
    _check_choice(zero_relevant, "zero_relevant", ZERO_RELEVANT_POLICIES)
    _check_choice(tie_break, "tie_break", TIE_BREAKS)
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
    _check_choice(tie_break, "tie_break", TIE_BREAKS)
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
    _check_choice(gain, "gain", GAINS)
    _check_choice(tie_break, "tie_break", TIE_BREAKS)
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
    _check_choice(tie_break, "tie_break", TIE_BREAKS)
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


def caption_recall_at_k(
    similarity_or_image_codes,
    text_codes=None,
    *,
    img2txt: Sequence[Sequence[int]],
    txt2img: Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
    tie_break: str = "index",
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Label-free caption retrieval R@K in percent, both directions (spec section 9, ALBEF protocol).

    Image -> text: an image is a hit at K if any of its captions ranks in the top K of its caption ranking.
    Text -> image: a caption is a hit if its image ranks in the top K. Ranking is by descending similarity,
    equal scores ordered by ``tie_break`` (ascending or descending candidate index). Text -> image also gets
    the tie-aware expectation (share of the ground truth's tie group that falls in the top K), because hash
    codes tie massively.

    Args:
        similarity_or_image_codes: an (images x captions) similarity matrix, higher = more similar; or, when
            ``text_codes`` is given, the images' {-1, +1} codes (similarity = -Hamming distance).
        text_codes: the captions' {-1, +1} codes, or None.
        img2txt: for each image, the indices of its captions.
        txt2img: for each caption, the index of its image.
        ks: cut-offs K.
        chunk_size: rows scored at once; None bounds the work space.

    Returns:
        ``i2t_R@<k>``, ``t2i_R@<k>``, ``t2i_R@<k>[tie]`` for each k, ``rsum`` (sum of the standard values) and
        ``r_mean`` (their mean).
    """
    ks = _check_ks(ks)
    _check_choice(tie_break, "tie_break", TIE_BREAKS)
    scores = _CaptionScores(similarity_or_image_codes, text_codes)
    gt_txt, gt_img = _caption_maps(img2txt, txt2img, scores.num_images, scores.num_texts)
    gt_txt, gt_img = gt_txt.to(scores.device), gt_img.to(scores.device)
    out: dict[str, float] = {}
    hits_i2t = torch.zeros(len(ks), dtype=torch.float64, device=scores.device)
    hits_t2i, hits_tie = torch.zeros_like(hits_i2t), torch.zeros_like(hits_i2t)
    k_values = torch.tensor(ks, dtype=torch.float64, device=scores.device)
    per_pair = max(1, gt_txt.shape[1])
    if chunk_size is not None:
        _check_positive_int(chunk_size, "chunk_size")
    rows = chunk_size or max(1, _PAIRS_PER_CHUNK // (scores.num_texts * per_pair))
    for start in range(0, scores.num_images, rows):
        block = scores.image_rows(slice(start, start + rows))
        gt = gt_txt[start : start + rows]
        greater, earlier_equal, _ = _rank_counts(block, gt.clamp(min=0), tie_break)
        rank = torch.where(gt >= 0, greater + earlier_equal, torch.iinfo(torch.int64).max).min(1).values
        hits_i2t += (rank[:, None] < k_values).sum(0)
    rows = chunk_size or max(1, _PAIRS_PER_CHUNK // scores.num_images)
    for start in range(0, scores.num_texts, rows):
        block = scores.text_rows(slice(start, start + rows))
        greater, earlier_equal, equal = _rank_counts(block, gt_img[start : start + rows, None], tie_break)
        hits_t2i += ((greater + earlier_equal) < k_values).sum(0)
        hits_tie += ((k_values - greater).clamp(min=0) / equal).clamp(max=1).sum(0)
    for i, k in enumerate(ks):
        out[f"i2t_R@{k}"] = 100.0 * float(hits_i2t[i]) / scores.num_images
    for i, k in enumerate(ks):
        out[f"t2i_R@{k}"] = 100.0 * float(hits_t2i[i]) / scores.num_texts
        out[f"t2i_R@{k}[tie]"] = 100.0 * float(hits_tie[i]) / scores.num_texts
    standard = [v for name, v in out.items() if not name.endswith("[tie]")]
    out["rsum"] = sum(standard)
    out["r_mean"] = out["rsum"] / len(standard)
    return out


class _CaptionScores:
    """Rows of the image x caption similarity, from a given matrix or from hash codes (inner product)."""

    def __init__(self, similarity_or_image_codes, text_codes):
        first = _as_tensor(similarity_or_image_codes, "similarity_or_image_codes")
        if text_codes is None:
            _check_matrix(first, "similarity_or_image_codes")
            self.images = first if first.is_floating_point() else first.to(torch.float64)
            self.texts = None
            self.num_images, self.num_texts = first.shape
        else:
            second = _as_tensor(text_codes, "text_codes")
            device = _common_device(
                {"similarity_or_image_codes": first, "text_codes": second},
                {"similarity_or_image_codes": similarity_or_image_codes, "text_codes": text_codes},
            )
            _check_codes_pair(first, second, "similarity_or_image_codes", "text_codes")
            # The inner product <a, b> = K - 2 * Hamming orders (and ties) exactly like -Hamming.
            self.images = first.to(device=device, dtype=_product_dtype(device))
            self.texts = second.to(device=device, dtype=_product_dtype(device))
            self.num_images, self.num_texts = first.shape[0], second.shape[0]
        self.device = self.images.device

    def image_rows(self, rows: slice) -> Tensor:
        if self.texts is None:
            return self.images[rows]
        return _products(self.images[rows], self.texts)

    def text_rows(self, rows: slice) -> Tensor:
        if self.texts is None:
            return self.images[:, rows].T
        return _products(self.texts[rows], self.images)


def _caption_maps(img2txt, txt2img, num_images: int, num_texts: int) -> tuple[Tensor, Tensor]:
    """img2txt padded with -1 into a (images x max captions) matrix, and txt2img as a vector; validated."""
    if len(img2txt) != num_images:
        raise ValueError(f"img2txt must have one entry per image ({num_images}), got {len(img2txt)}")
    if len(txt2img) != num_texts:
        raise ValueError(f"txt2img must have one entry per caption ({num_texts}), got {len(txt2img)}")
    width = max(len(captions) for captions in img2txt)
    padded = torch.full((num_images, width), -1, dtype=torch.int64)
    for i, captions in enumerate(img2txt):
        if len(captions) == 0:
            raise ValueError(f"img2txt[{i}] must list at least one caption index, got none")
        padded[i, : len(captions)] = torch.as_tensor(list(captions), dtype=torch.int64)
    if padded.max() >= num_texts or (padded.min() < -1):
        raise ValueError(f"img2txt must hold caption indices in 0..{num_texts - 1}")
    images = torch.as_tensor(list(txt2img), dtype=torch.int64)
    if images.numel() and (images.min() < 0 or images.max() >= num_images):
        raise ValueError(f"txt2img must hold image indices in 0..{num_images - 1}")
    return padded, images


def _rank_counts(scores: Tensor, gt: Tensor, tie_break: str) -> tuple[Tensor, ...]:
    """For each row and ground-truth column of gt (rows x g): candidates scoring higher, candidates scoring
    equal that the tie rule puts first, and all candidates scoring equal (itself included)."""
    gt_scores = scores.gather(1, gt)[:, :, None]
    row = scores[:, None, :]
    equal = row == gt_scores
    index = torch.arange(scores.shape[1], device=scores.device)
    first = index < gt[:, :, None] if tie_break == "index" else index > gt[:, :, None]
    return (row > gt_scores).sum(2), (equal & first).sum(2), equal.sum(2)
