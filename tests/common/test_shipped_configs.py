"""The YAML files under configs/: every runnable config resolves, and every file writes only what differs.

A file that restates the value it would inherit anyway (from its ``_base_`` files, or else from the signature
of the class its section configures) is a second copy of that default, which drifts when the first changes.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from torch.nn import Module

from common import schema
from common.config import Section, load_config, parse_yaml, resolve
from common.register import registry
from main import register_all
from runners.base import config_sections

ROOT = Path(__file__).resolve().parents[2] / "configs"
FILES = sorted(ROOT.rglob("*.yaml"))
SKIPPED = ("name", "_delete_", "_base_")

register_all()
SECTIONS = config_sections()


def own_data(path: Path) -> dict:
    """What ``path`` itself writes (its ``_base_`` list apart)."""
    return parse_yaml(path.read_text()) or {}


def bases(path: Path) -> list[Path]:
    listed = own_data(path).get("_base_", [])
    return [(path.parent / b).resolve() for b in ([listed] if isinstance(listed, str) else listed)]


INCLUDED = {base for path in FILES for base in bases(path)}
# A runnable config is neither a shared base (under _base_) nor a method's recipe.yaml that others include.
RUNNABLE = [p for p in FILES if "_base_" not in p.relative_to(ROOT).parts and p.resolve() not in INCLUDED]


def shown(path: Path) -> str:
    return path.relative_to(ROOT.parent).as_posix() if path.is_relative_to(ROOT.parent) else path.as_posix()


def same(a, b) -> bool:
    """Equal as config values: lists and tuples alike, 1 and 1.0 alike, but never a bool and a number."""
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b)
                and all(same(x, y) for x, y in zip(a, b)))
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() and all(
            same(a[k], b[k]) for k in a)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def merged_bases(path: Path) -> dict:
    """The config ``path`` inherits: its bases loaded and merged (sibling bases never share a key)."""
    def merge(into: dict, update: dict) -> dict:
        for key, value in update.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value
        return into

    out: dict = {}
    for base in bases(path):
        merge(out, dict(load_config(base)))
    return out


def section_class(name: str, spec: Section, full: dict):
    """The class a section's keys belong to, or None where this file (with its bases) does not say."""
    section = full.get(name) if isinstance(full.get(name), dict) else {}
    try:
        if spec.kind is not None:
            return registry.get(spec.kind, section["name"]) if "name" in section else None
        return spec.target({k: v for k, v in full.items() if isinstance(v, dict) and "name" in v})
    except (KeyError, ValueError):
        return None


def restatements(path: Path) -> list[str]:
    """Every key ``path`` writes whose value it would have anyway, plus every key no class takes."""
    own, inherited, full = own_data(path), merged_bases(path), dict(load_config(path))
    problems: list[str] = []

    def walk(where: str, written: dict, base: dict, merged: dict, target, spec: Section) -> None:
        extra = {f.name: f for f in spec.extra}
        keys = None if target is None else {k: f for k, f in schema.fields(target).items() if k not in spec.context}
        if written.get("_delete_"):
            base = {}
        for key, value in written.items():
            if key in SKIPPED:
                continue
            dotted = f"{where}.{key}"
            field = (keys or {}).get(key) or extra.get(key)
            if keys is not None and field is None:
                problems.append(f"{shown(path)}: {dotted} is not a key of {target.__qualname__}")
                continue
            if field is not None:  # a sub-section built through the registry (the backbone) or a plain value
                nested = registry.kind_of(field.annotation)
            else:  # the model is not named here: its mappings are backbones, known by their own name
                nested = registry.kind_of(Module) if where == "model" else None
            if isinstance(value, dict) and nested is not None:
                sub = merged.get(key) if isinstance(merged.get(key), dict) else {}
                walk(dotted, value, base.get(key) if isinstance(base.get(key), dict) else {}, sub,
                     registry.get(nested, sub["name"]) if "name" in sub else None, Section(kind=nested))
            elif key in base:
                if same(value, base[key]):
                    problems.append(f"{shown(path)}: {dotted} = {value!r} restates the value of its bases")
            elif field is not None and not field.required and same(value, field.default):
                owner = target.__qualname__ if key not in extra else "the framework"
                problems.append(f"{shown(path)}: {dotted} = {value!r} restates the default of {owner}")

    for name, written in own.items():
        if name in SECTIONS and isinstance(written, dict):
            spec = SECTIONS[name]
            walk(name, written, inherited.get(name) or {}, full.get(name) or {}, section_class(name, spec, full),
                 spec)
    return problems


@pytest.mark.parametrize("path", RUNNABLE, ids=shown)
def test_shipped_config_resolves(path):
    resolve(load_config(path), SECTIONS)


def test_every_method_folder_ships_runnable_configs():
    folders = {p.parent.name for p in RUNNABLE}
    assert folders == {p.name for p in ROOT.iterdir() if p.is_dir() and p.name != "_base_"}
    assert all((ROOT / folder / "synthetic.yaml") in RUNNABLE for folder in folders)


@pytest.mark.parametrize("path", FILES, ids=shown)
def test_no_file_restates_an_inherited_value(path):
    assert restatements(path) == []


@pytest.mark.parametrize("path", FILES, ids=shown)
def test_no_file_names_a_runner(path):
    """The method runners are gone (MITH and TwDH use their model's before_training hook)."""
    run = own_data(path).get("run") or {}
    assert "runner" not in run, f"{shown(path)} sets run.runner"


def test_restatements_are_found(tmp_path):
    (tmp_path / "base.yaml").write_text("run:\n  epochs: 30\noptimizer:\n  name: BertAdam\n")
    child = tmp_path / "child.yaml"
    child.write_text("_base_: [base.yaml]\nrun:\n  epochs: 30\n  seed: 1814\n  batch_size: 8\n"
                     "optimizer:\n  lr: 0.002\n  warmup: 0.1\nmodel:\n  name: DCMHT\n  bits: 16\n  bitz: 3\n"
                     "  freeze_backbone: false\n  backbone:\n    name: CLIP\n    arch: ViT-B-32\n")
    found = "\n".join(restatements(child))
    for key in ("run.epochs", "run.seed", "optimizer.warmup", "model.bits", "model.freeze_backbone",
                "model.backbone.arch", "model.bitz"):
        assert key in found, (key, found)
    for key in ("run.batch_size", "optimizer.lr"):
        assert key not in found, (key, found)
