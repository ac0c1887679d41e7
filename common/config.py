"""YAML configs with ``_base_`` inheritance, command-line overrides and strict keys.

Rules (as in mmengine, stricter where mmengine is silent):

* ``_base_: [a.yaml, b.yaml]`` paths are relative to the including file; bases merge in order, then the file
  itself merges on top. Dicts merge deeply; lists and scalars replace. ``_delete_: true`` inside a dict makes
  it replace the inherited dict instead of merging. Two sibling bases setting the same key is an error.
* ``--opts model.bits=32 run.epochs=3``: values are parsed as YAML scalars, and the key must already exist
  (a typo in an override is an error, never a new key).
* Every registered class declares its keys in its signature; :func:`build` rejects any other key, naming the
  key, the section, the file it came from and the closest valid key. Nothing is read with
  ``cfg.get(key, default)``: a misspelt key never silently falls back to a default.
"""
from __future__ import annotations

import copy
import inspect
import os
import re
from pathlib import Path
from typing import Any

import yaml

from common.register import closest, registry

SECTIONS = ("model", "optimizer", "dataset", "run", "eval")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3`` and would give a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                 |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                 |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                 |[-+]?\.(?:inf|Inf|INF)
                 |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def parse_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key, the file and the fix."""


class Config(dict):
    """A resolved config: a nested dict plus, for every dotted key, the file that set it."""

    def __init__(self, data: dict, origins: dict[str, str], path: str):
        super().__init__(data)
        self.origins = origins
        self.path = path

    def origin(self, dotted: str) -> str:
        """The file that set ``dotted`` (or its closest set parent), for error messages."""
        key = dotted
        while key:
            if key in self.origins:
                return self.origins[key]
            key = key.rpartition(".")[0]
        return self.path

    def dump(self, path: str | os.PathLike) -> None:
        """Write the resolved config (no ``_base_``) atomically."""
        atomic_write_text(path, yaml.safe_dump(dict(self), sort_keys=False))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found")
    try:
        data = parse_yaml(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file '{path}'{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping at the top level, got {type(data).__name__}")
    return data


def _leaf_origins(data: dict, file: str, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        out[dotted] = file
        if isinstance(value, dict):
            out.update(_leaf_origins(value, file, dotted + "."))
    return out


def _merge(base: dict, update: dict, origins: dict, file: str, prefix: str = "") -> dict:
    """Deep-merge ``update`` into a copy of ``base``; ``_delete_: true`` replaces instead."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            value = dict(value)
            replace = value.pop("_delete_", False)
            if not replace and isinstance(out.get(key), dict):
                out[key] = _merge(out[key], value, origins, file, dotted + ".")
                origins[dotted] = file
                continue
            for stale in [k for k in origins if k.startswith(dotted + ".")]:
                del origins[stale]
            origins.update(_leaf_origins(value, file, dotted + "."))
        out[key] = copy.deepcopy(value)
        origins[dotted] = file
    return out


def _load(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict, dict[str, str]]:
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"config file '{path}' includes itself through _base_")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    merged: dict = {}
    origins: dict[str, str] = {}
    for base in bases:
        base_data, base_origins = _load(path.parent / base, chain + (path,))
        clash = sorted(k for k in base_origins if k in origins and not isinstance(_lookup(merged, k), dict))
        if clash:
            raise ConfigError(f"config file '{path}': sibling bases '{origins[clash[0]]}' and "
                              f"'{base_origins[clash[0]]}' both set '{clash[0]}'; set it in only one base "
                              f"or in '{path.name}' itself")
        merged = _merge(merged, base_data, origins, str(path))
        origins.update(base_origins)
    merged = _merge(merged, data, origins, str(path))
    return merged, origins


def _lookup(data: dict, dotted: str):
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def apply_override(cfg: Config, item: str) -> None:
    """Apply one ``key.sub=value`` override in place; the key must already exist."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override '{item}' must look like key.sub=value")
    node: Any = cfg
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:depth]) or "top level"
            choices = node.keys() if isinstance(node, dict) else []
            raise ConfigError(f"override '{key}': no key '{part}' under {where} in '{cfg.path}'"
                              f"{closest(part, choices)}")
        if depth < len(parts) - 1:
            node = node[part]
    try:
        value = parse_yaml(raw) if raw else None
    except yaml.YAMLError:
        value = raw
    node[parts[-1]] = value
    cfg.origins[key] = "--opts"


def load_config(path: str | os.PathLike, overrides=()) -> Config:
    """Load ``path`` with its bases, apply overrides and check the top-level sections."""
    data, origins = _load(Path(path))
    cfg = Config(data, origins, str(path))
    unknown = [k for k in cfg if k not in SECTIONS]
    if unknown:
        raise ConfigError(f"unknown section '{unknown[0]}' in '{cfg.origin(unknown[0])}'"
                          f"{closest(unknown[0], SECTIONS)} (sections: {', '.join(SECTIONS)})")
    for item in overrides:
        apply_override(cfg, item)
    return cfg


def accepted_keys(target) -> dict[str, inspect.Parameter]:
    """The keyword arguments a class (its ``__init__``) or function takes: its config keys."""
    params = inspect.signature(target).parameters
    return {name: p for name, p in params.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "self"}


def check_keys(section: dict, target, where: str, cfg: Config | None = None, reserved=()) -> None:
    """Reject every key of ``section`` that ``target`` does not take, all at once."""
    valid = [k for k in accepted_keys(target) if k not in reserved]
    unknown = [k for k in section if k not in valid]
    if not unknown:
        return
    file = cfg.origin(f"{where}.{unknown[0]}") if cfg is not None else "the config"
    problems = "; ".join(f"'{where}.{k}'{closest(k, valid)}" for k in unknown)
    raise ConfigError(f"unknown key {problems} in '{file}' (valid keys of {where}: {', '.join(valid)})")


def build(kind: str, section: dict, where: str, cfg: Config | None = None, **context):
    """Build the registered ``kind`` named by ``section['name']`` from the other keys of ``section``.

    ``context`` holds what the framework supplies (e.g. the number of classes); those names cannot be
    set from YAML, and each is passed only if the target takes it.
    """
    if not isinstance(section, dict) or "name" not in section:
        file = cfg.origin(where) if cfg is not None else "the config"
        raise ConfigError(f"section '{where}' in '{file}' needs a 'name' key naming a registered {kind} "
                          f"(registered: {', '.join(registry.list(kind))})")
    target = registry.get(kind, section["name"])
    keys = {k: v for k, v in section.items() if k != "name"}
    check_keys(keys, target, where, cfg, reserved=context)
    takes = accepted_keys(target)
    context = {k: v for k, v in context.items() if k in takes}
    missing = [n for n, p in takes.items()
               if p.default is inspect.Parameter.empty and n not in keys and n not in context]
    if missing:
        raise ConfigError(f"section '{where}' ({section['name']}) misses required key '{missing[0]}'")
    return target(**keys, **context)


def from_section(cls, section: dict | None, where: str, cfg: Config | None = None):
    """Build a dataclass of plain options (``run``, ``eval``) strictly from a config section."""
    section = dict(section or {})
    check_keys(section, cls, where, cfg)
    return cls(**section)
