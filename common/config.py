"""YAML configs with ``_base_`` inheritance, command-line overrides, and the constructor signatures as schema.

Rules (as in mmengine, stricter where mmengine is silent):

* ``_base_: [a.yaml, b.yaml]`` paths are relative to the including file; bases merge in order, then the file
  itself merges on top. Dicts merge deeply; lists and scalars replace. ``_delete_: true`` inside a dict makes
  it replace the inherited dict instead of merging; a dict over an inherited scalar or list is an error that
  suggests it. Two sibling bases setting the same key is an error.
* ``--opts model.bits=32 run.epochs=3``: values are parsed as YAML scalars; any key the schema knows may be
  overridden, whether or not a YAML file mentions it.
* :func:`resolve` walks every section through its schema (a :class:`Section`: the registered class the
  section's ``name`` picks, or a fixed class), fills every omitted key from the signature, checks every value
  against its annotation (:mod:`common.schema`), and reports every problem of the config at once, each naming
  the key, the value, the file it came from, what is expected and the closest valid key. Nothing is built
  before that, and nothing is read with ``cfg.get(key, default)``.
"""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from common import schema
from common.register import closest, registry
from utils.io import atomic_write_text

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


def yaml_value(value) -> str:
    """``value`` as one line of YAML flow text (``16``, ``null``, ``[1, 2]``, ``'a: b'``)."""
    text = yaml.safe_dump(_plain(value), default_flow_style=True, width=2**31 - 1, allow_unicode=True)
    return text.removesuffix("\n...\n").rstrip("\n")


def _plain(value):
    """Tuples as lists, recursively: what YAML holds and what a resolved config stores."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _is_plain(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key, the file and the fix."""


class Config(dict):
    """A config: a nested dict plus, for every dotted key, where its value came from (a file, ``--opts``,
    or ``default``)."""

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

    def to_yaml(self) -> str:
        """The config as YAML, every value followed by a comment naming where it came from."""
        lines = [f"# resolved from {self.path}"]

        def emit(node: dict, prefix: str, indent: str) -> None:
            for key, value in node.items():
                dotted = f"{prefix}{key}"
                if isinstance(value, dict) and value:
                    lines.append(f"{indent}{yaml_value(key)}:")
                    emit(value, dotted + ".", indent + "  ")
                else:
                    lines.append(f"{indent}{yaml_value(key)}: {yaml_value(value)}  # {self.origin(dotted)}")

        emit(self, "", "")
        return "\n".join(lines) + "\n"

    def dump(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_yaml` atomically (no ``_base_``: the file stands alone)."""
        atomic_write_text(path, self.to_yaml())


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file '{_shown(path)}' not found")
    try:
        data = parse_yaml(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file '{_shown(path)}'{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file '{_shown(path)}' is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if data is None:
        raise ConfigError(f"config file '{_shown(path)}' is empty: expected a mapping with _base_ and/or the sections "
                          f"{', '.join(SECTIONS)}")
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{_shown(path)}' must hold a mapping at the top level, got {type(data).__name__}")
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
            inherited = out.get(key)
            if not replace and isinstance(inherited, dict):
                out[key] = _merge(inherited, value, origins, file, dotted + ".")
                origins[dotted] = file
                continue
            if not replace and inherited is not None:
                raise ConfigError(f"config file '{file}': '{dotted}' is a mapping but '{origins.get(dotted, file)}' "
                                  f"sets it to {yaml_value(inherited)}; add '_delete_: true' to the mapping to "
                                  f"replace the inherited value")
            for stale in [k for k in origins if k.startswith(dotted + ".")]:
                del origins[stale]
            origins.update(_leaf_origins(value, file, dotted + "."))
        out[key] = copy.deepcopy(value)
        origins[dotted] = file
    return out


def _shown(path: Path) -> str:
    """``path`` as messages show it: relative to the working directory when below it."""
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else relative


def _load(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict, dict[str, str]]:
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"config file '{_shown(path)}' includes itself through _base_")
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
            raise ConfigError(f"config file '{_shown(path)}': sibling bases '{origins[clash[0]]}' and "
                              f"'{base_origins[clash[0]]}' both set '{clash[0]}'; set it in only one base "
                              f"or in '{path.name}' itself")
        merged = _merge(merged, base_data, origins, _shown(path))
        origins.update(base_origins)
    merged = _merge(merged, data, origins, _shown(path))
    return merged, origins


def _lookup(data: dict, dotted: str):
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def apply_override(cfg: Config, item: str) -> None:
    """Apply one ``key.sub=value`` override in place; :func:`resolve` then checks the key and the value."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override '{item}' must look like key.sub=value")
    parts = key.split(".")
    if parts[0] not in SECTIONS:
        raise ConfigError(f"override '{key}': no section '{parts[0]}'{closest(parts[0], SECTIONS)} "
                          f"(sections: {', '.join(SECTIONS)})")
    node: Any = cfg
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{key}': '{'.'.join(parts[:depth + 1])}' is {yaml_value(child)} in "
                              f"'{cfg.origin('.'.join(parts[:depth + 1]))}', not a section with keys")
        node = child
    try:
        value = parse_yaml(raw) if raw else None
    except yaml.YAMLError:
        value = raw
    node[parts[-1]] = value
    cfg.origins[key] = "--opts"


def load_config(path: str | os.PathLike, overrides=()) -> Config:
    """Load ``path`` with its bases and apply overrides (not yet checked: see :func:`resolve`)."""
    data, origins = _load(Path(path))
    cfg = Config(data, origins, str(path))
    for item in overrides:
        apply_override(cfg, item)
    return cfg


@dataclass(frozen=True)
class Section:
    """The schema of one config section.

    Attributes:
        kind: registry kind whose entry the section's ``name`` key picks (``model``, ``dataset``, ...).
        target: otherwise, a function of the already resolved sections that returns the class to check
            against (``run`` always gets the runner's options; ``eval`` gets the dataset's evaluator).
        context: arguments the framework supplies at build time; they cannot be set in YAML.
        extra: keys the framework itself reads from the section (e.g. ``model.freeze_backbone``).
    """

    kind: str | None = None
    target: Callable[[dict], Any] | None = None
    context: tuple[str, ...] = ()
    extra: tuple[schema.Field, ...] = field(default_factory=tuple)


def resolve(cfg: Config, sections: dict[str, Section]) -> Config:
    """The complete, checked config: every key of every section, defaults filled in, all problems at once.

    Raises:
        ConfigError: one line listing every problem (unknown section or key with the closest valid one,
            a value that does not fit its annotation, a missing required key, an unknown registered name),
            each naming the key, the value and the file it came from.
    """
    problems: list[str] = []
    origins = dict(cfg.origins)
    resolved: dict = {}
    for name in cfg:
        if name not in sections:
            problems.append(f"unknown section '{name}' in '{cfg.origin(name)}'{closest(name, sections)} "
                            f"(sections: {', '.join(sections)})")
    for name, spec in sections.items():
        raw = cfg.get(name, {})
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            problems.append(f"section '{name}' in '{cfg.origin(name)}' must be a mapping, got {yaml_value(raw)}")
            continue
        target = _target(spec, raw, name, resolved, cfg, problems)
        if target is not None:
            resolved[name] = _resolve_section(raw, target, spec, name, cfg, origins, problems)
    if problems:
        raise ConfigError(f"{cfg.path}: " + "; ".join(problems))
    return Config(resolved, origins, cfg.path)


def _target(spec: Section, raw: dict, where: str, resolved: dict, cfg: Config, problems: list[str]):
    """The class a section is checked against, or None (with a problem recorded) if it cannot be found."""
    if spec.kind is None:
        try:
            return spec.target(resolved)
        except (KeyError, ValueError) as err:
            problems.append(str(err))
            return None
    if "name" not in raw:
        problems.append(f"section '{where}' in '{cfg.origin(where)}' needs a 'name' key naming a registered "
                        f"{spec.kind} (registered: {', '.join(registry.list(spec.kind))})")
        return None
    try:
        return registry.get(spec.kind, raw["name"])
    except KeyError as err:
        problems.append(f"{where}.name in '{cfg.origin(where + '.name')}': {err}")
        return None


def _resolve_section(raw: dict, target, spec: Section, where: str, cfg: Config, origins: dict,
                     problems: list[str]) -> dict:
    keys = {name: f for name, f in schema.fields(target).items() if name not in spec.context}
    keys.update({f.name: f for f in spec.extra})
    out = {"name": raw["name"]} if spec.kind is not None else {}
    for key in raw:
        if key not in keys and not (key == "name" and spec.kind is not None):
            problems.append(f"unknown key '{where}.{key}' in '{cfg.origin(f'{where}.{key}')}'{closest(key, keys)} "
                            f"(keys of {where}: {', '.join(keys)})")
    for key, f in keys.items():
        dotted = f"{where}.{key}"
        nested = registry.kind_of(f.annotation)
        if key in raw:
            value = raw[key]
            if nested is not None and isinstance(value, dict):
                sub = Section(kind=nested)
                found = _target(sub, value, dotted, {}, cfg, problems)
                if found is not None:
                    out[key] = _resolve_section(value, found, sub, dotted, cfg, origins, problems)
            elif not schema.check(value, f.annotation):
                origin = cfg.origin(dotted)
                source = "by --opts" if origin == "--opts" else f"in '{origin}'"
                problems.append(f"{dotted} = {yaml_value(value)} (set {source}) must be "
                                f"{schema.expected(f.annotation)}")
            else:
                out[key] = _plain(value)
        elif nested is not None and f.required:
            problems.append(f"section '{where}' in '{cfg.origin(where)}' needs a '{key}' section naming a "
                            f"registered {nested} (registered: {', '.join(registry.list(nested))})")
        elif f.required:
            problems.append(f"section '{where}' in '{cfg.origin(where)}' misses the required key '{key}' "
                            f"({schema.expected(f.annotation)})")
        elif _is_plain(f.default):
            out[key] = _plain(copy.deepcopy(f.default))
            origins[dotted] = f"default of {target.__qualname__}"
    return out


def nested_sections(kind: str, section: dict) -> dict[str, tuple[str, dict]]:
    """The sub-sections of a resolved section that are built through the registry: key -> (kind, section)."""
    target = registry.get(kind, section["name"])
    return {key: (registry.kind_of(f.annotation), section[key]) for key, f in schema.fields(target).items()
            if registry.kind_of(f.annotation) is not None and isinstance(section.get(key), dict)}


def build(kind: str, section: dict, **context):
    """Build the registered ``kind`` named by a resolved ``section['name']`` from the section's other keys.

    ``context`` holds what the framework supplies (already built sub-sections, the number of classes, ...);
    each is passed only if the target takes it. Sub-sections not in ``context`` are built here.
    """
    target = registry.get(kind, section["name"])
    takes = schema.fields(target)
    kwargs = {k: v for k, v in section.items() if k != "name" and k in takes and k not in context}
    for key, (sub_kind, sub) in nested_sections(kind, section).items():
        if key not in context:
            kwargs[key] = build(sub_kind, sub)
    kwargs.update({k: v for k, v in context.items() if k in takes})
    return target(**kwargs)


def from_section(cls, section: dict):
    """Build a class of plain options (``run``, an evaluator's options) from a resolved section."""
    return cls(**section)
