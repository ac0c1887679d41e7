"""Input checks: arrays or tensors to torch on one device, {-1, +1} codes, 0/1 labels, matching shapes, positive
cut-offs, and the four validated inputs in product form (:class:`_Data`).

Every metric runs these before any work, so a bad argument fails at once with one ValueError that names it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from common.metrics import products
from common.metrics.products import _bit_halves

# Entries of a code or label matrix validated at once (bounds the temporaries of the value check).
_VALIDATE_ELEMENTS = 2**22


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
    dtype = products._product_dtype(device)
    return _Data(
        query_codes=_bit_halves(tensors["query_codes"].to(device), "query", dtype),
        db_codes=_bit_halves(tensors["db_codes"].to(device), "db", dtype),
        query_labels=tensors["query_labels"].to(device=device, dtype=dtype),
        db_labels=tensors["db_labels"].to(device=device, dtype=dtype),
    )


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_ks(ks, name: str = "ks") -> list[int]:
    values = [ks] if isinstance(ks, (int, np.integer)) and not isinstance(ks, bool) else list(ks)
    if not values:
        raise ValueError(f"{name} must name at least one cut-off")
    return [_check_positive_int(k, f"each entry of {name}") for k in values]
