"""The registry: one place where every buildable piece is found by name.

A method plugs into the framework by decorating its classes::

    from common.register import registry

    @registry.register_model("MyMethod")
    class MyMethod(HashModel):
        ...

and naming them in YAML (``model: {name: MyMethod, ...}``). Registration happens when the package is
imported; each package ``__init__`` imports its modules by name, one line each.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable

KINDS = ("model", "runner", "optimizer", "scheduler", "dataset", "backbone", "tokenizer", "evaluator")


class RegistryError(KeyError):
    """A name is missing or registered twice. The message says what to do."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


def closest(name: str, choices) -> str:
    """The closest valid spelling of ``name`` among ``choices``, phrased for an error message.

    Compared without case, so that a wrong capital finds its name ('Adamw' -> 'AdamW', not 'Adam').
    """
    lowered = {str(c).lower(): str(c) for c in choices}
    match = difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.5)
    return f"; did you mean '{lowered[match[0]]}'?" if match else ""


class Registry:
    """Maps (kind, name) to a class or factory function.

    An instance, not a class-level dict, so tests can build throwaway registries. A kind may be given a
    base class: registering something that is not a subclass of it fails at import time, not at build
    time.
    """

    def __init__(self, kinds=KINDS):
        self._entries: dict[str, dict[str, Any]] = {kind: {} for kind in kinds}
        self._meta: dict[tuple[str, str], dict[str, Any]] = {}
        self._bases: dict[str, type] = {}

    def set_base(self, kind: str, base: type) -> None:
        """Require every entry of ``kind`` to subclass ``base``."""
        self._table(kind)
        self._bases[kind] = base

    def register(self, kind: str, name: str, **meta) -> Callable:
        """Decorator that registers a class or function under ``name``; ``meta`` is kept beside it
        (a dataset names the evaluator of its task: ``register_dataset("x", evaluator="cross_modal")``)."""
        table = self._table(kind)

        def decorator(obj):
            if name in table:
                old = table[name]
                raise RegistryError(
                    f"{kind} '{name}' is registered twice: by {old.__module__}.{old.__qualname__} and by "
                    f"{obj.__module__}.{obj.__qualname__}; rename one of them")
            base = self._bases.get(kind)
            if base is not None and not (inspect.isclass(obj) and issubclass(obj, base)):
                raise RegistryError(f"{kind} '{name}' ({obj.__qualname__}) must subclass {base.__name__}")
            table[name] = obj
            self._meta[(kind, name)] = dict(meta)
            return obj

        return decorator

    def get(self, kind: str, name: str):
        """The entry ``name`` of ``kind``; an unknown name lists the known ones and the closest match."""
        table = self._table(kind)
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise RegistryError(f"unknown {kind} '{name}'{closest(name, table)} (registered {kind}s: {known})")
        return table[name]

    def meta(self, kind: str, name: str) -> dict[str, Any]:
        """What was registered beside the entry ``name`` of ``kind`` (an unknown name raises as :meth:`get`)."""
        self.get(kind, name)
        return self._meta.get((kind, name), {})

    def kind_of(self, annotation) -> str | None:
        """The kind whose base class is exactly ``annotation`` (a constructor argument built from a
        sub-section, e.g. ``backbone: nn.Module``), or None."""
        return next((kind for kind, base in self._bases.items() if base is annotation), None)

    def list(self, kind: str) -> list[str]:
        return sorted(self._table(kind))

    def kinds(self) -> list[str]:
        return list(self._entries)

    def unregister(self, kind: str, name: str) -> None:
        """Remove an entry (tests that register throwaway classes clean up with this)."""
        self._table(kind).pop(name, None)
        self._meta.pop((kind, name), None)

    def _table(self, kind: str) -> dict[str, Any]:
        if kind not in self._entries:
            raise RegistryError(f"unknown registry kind '{kind}'{closest(kind, self._entries)} "
                                f"(kinds: {', '.join(self._entries)})")
        return self._entries[kind]

    def __getattr__(self, attr: str):
        """``register_model``, ``register_dataset``, ... as shorthands of ``register(kind, name)``."""
        if attr.startswith("register_"):
            kind = attr[len("register_"):]
            if kind in self.__dict__.get("_entries", {}):
                return lambda name, **meta: self.register(kind, name, **meta)
        raise AttributeError(attr)

    def __repr__(self) -> str:
        lines = []
        for kind, table in self._entries.items():
            lines.append(f"{kind}: {', '.join(sorted(table)) if table else '(none)'}")
        return "\n".join(lines)


registry = Registry()
