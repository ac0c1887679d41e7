"""Argument checks shared across packages, so that every wrong option fails with the same one-line message."""
from __future__ import annotations

from typing import Sequence


def check_choice(name: str, value, choices: Sequence[str], error: type[ValueError] = ValueError) -> None:
    """Raise ``error`` unless value is one of choices: ``<name> must be one of 'a', 'b', got 'c'``.

    ``error`` is ValueError or a subclass of it, for callers whose errors have a type of their own (the dataset
    readers raise DatasetError).
    """
    if value not in choices:
        raise error(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
