"""Constructor signatures as the one config schema: keys, defaults, types and choices come from the code.

A registered class (or builder function) declares its config keys once, in its signature::

    def __init__(self, backbone: nn.Module, bits: PositiveInt = 16, head: Literal["canonical", "select"] = ...)

:func:`fields` reads that signature (resolving postponed annotations), :func:`check` tests a YAML value
against an annotation and :func:`expected` says in words what an annotation accepts, for error messages.
Supported annotations: ``bool`` (never an int), ``int`` (never a bool), ``float`` (an int is accepted),
``str``, ``None``, unions (``int | None``), ``Literal[...]``, lists / tuples / sequences of any of these,
dicts, ``os.PathLike`` (a string), and ``Annotated[T, AtLeast(n)]`` / ``Annotated[T, Above(n)]`` bounds.
Anything else (no annotation, ``Any``, a class) is accepted as given.
"""
from __future__ import annotations

import collections.abc
import inspect
import os
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

REQUIRED = inspect.Parameter.empty


@dataclass(frozen=True)
class AtLeast:
    """Bound of an ``Annotated`` number: value >= ``low``."""

    low: float

    def holds(self, value) -> bool:
        return value >= self.low

    def __str__(self) -> str:
        return f"at least {self.low:g}"


@dataclass(frozen=True)
class Above:
    """Bound of an ``Annotated`` number: value > ``low``."""

    low: float

    def holds(self, value) -> bool:
        return value > self.low

    def __str__(self) -> str:
        return f"greater than {self.low:g}"


PositiveInt = Annotated[int, AtLeast(1)]
NonNegativeInt = Annotated[int, AtLeast(0)]
PositiveFloat = Annotated[float, Above(0)]
NonNegativeFloat = Annotated[float, AtLeast(0)]


@dataclass(frozen=True)
class Field:
    """One config key of a class: its annotation (``Any`` if none) and default (``REQUIRED`` if none)."""

    name: str
    annotation: Any
    default: Any

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def fields(target) -> dict[str, Field]:
    """The keyword arguments of a class (its ``__init__``; a dataclass's fields) or function, in order."""
    function = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except (NameError, TypeError):  # an annotation that does not evaluate is treated as absent
        hints = {}
    out = {}
    for name, param in inspect.signature(target).parameters.items():
        if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) and name != "self":
            out[name] = Field(name, hints.get(name, Any), param.default)
    return out


def _is_union(annotation) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def check(value, annotation) -> bool:
    """True if the YAML ``value`` fits ``annotation``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is REQUIRED:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    if origin is Annotated:
        return check(value, args[0]) and all(b.holds(value) for b in args[1:] if hasattr(b, "holds"))
    if _is_union(annotation):
        return any(check(value, arm) for arm in args)
    if origin is Literal:
        return any(value == choice and type(value) is type(choice) for choice in args)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str or annotation is os.PathLike:
        return isinstance(value, str)
    sequence = origin or annotation
    if sequence in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if not args:
            return True
        if sequence is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(check(v, a) for v, a in zip(value, args))
        return all(check(v, args[0]) for v in value)
    if sequence in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            return False
        return not args or all(check(k, args[0]) and check(v, args[1]) for k, v in value.items())
    return True


_BOUND_NAMES = {(int, AtLeast(1)): "a positive integer", (int, AtLeast(0)): "a non-negative integer",
                (float, Above(0)): "a positive number", (float, AtLeast(0)): "a non-negative number"}
_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", os.PathLike: "a path"}


def expected(annotation) -> str:
    """What ``annotation`` accepts, in words: 'an integer or null', "one of 'none', 'fp16'", ..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is None or annotation is type(None):
        return "null"
    if origin is Annotated:
        bounds = [b for b in args[1:] if hasattr(b, "holds")]
        if len(bounds) == 1 and (args[0], bounds[0]) in _BOUND_NAMES:
            return _BOUND_NAMES[args[0], bounds[0]]
        return " ".join([expected(args[0]), *map(str, bounds)])
    if _is_union(annotation):
        return " or ".join(expected(arm) for arm in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in args)
    if annotation in _NAMES:
        return _NAMES[annotation]
    sequence = origin or annotation
    if sequence in (list, tuple, collections.abc.Sequence):
        if args and sequence is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} values ({', '.join(expected(a) for a in args)})"
        return f"a list, each item {expected(args[0])}" if args else "a list"
    if sequence in (dict, collections.abc.Mapping):
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))



def validate(obj) -> None:
    """Check every field of a dataclass instance against its annotation, for options built in Python.

    Raises:
        ValueError: naming the class, the field, the value and what is expected.
    """
    for f in fields(type(obj)).values():
        value = getattr(obj, f.name)
        if not check(value, f.annotation):
            raise ValueError(f"{type(obj).__name__}.{f.name} = {value!r} must be {expected(f.annotation)}")
