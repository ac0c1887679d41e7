"""The README's "Adding a method" section, run exactly as written: its model files and its config."""
import importlib
import json
import re
import sys
from pathlib import Path

import models
from common.register import registry
from main import main

REPO = Path(__file__).resolve().parents[2]


def section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def files_of(block: str) -> dict[str, str]:
    """Split a code block into the files its ``# path`` comment lines name."""
    files, current = {}, None
    for line in block.splitlines(keepends=True):
        match = re.fullmatch(r"# ((?:models|configs)/\S+)\n?", line)
        if match:
            current = match.group(1)
            files[current] = ""
        elif current is not None:
            files[current] += line
    return files


def test_adding_a_method_works_as_written(tmp_path, small_run):
    text = section("Adding a method")
    sources = files_of(code_blocks(text, "python")[0])
    assert set(sources) == {"models/MyHash/__init__.py", "models/MyHash/model.py"}
    config_path = re.search(r"write `(configs/MyHash/synthetic\.yaml)`", text).group(1)
    (yaml_text,) = code_blocks(text, "yaml")
    for relative, content in {**sources, config_path: yaml_text}.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    (tmp_path / "configs" / "_base_").symlink_to(REPO / "configs" / "_base_")
    models.__path__.append(str(tmp_path / "models"))  # as if the folder were added under models/
    try:
        importlib.import_module("models.MyHash")
        assert "MyHash" in registry.list("model")
        run = tmp_path / "run"
        assert main(["--config-file", str(tmp_path / config_path), "--save-dir", str(run),
                     "--opts", *small_run(epochs=2)]) == 0
        last = json.loads((run / "metrics.json").read_text())["last"]
        assert 0.0 < last["i2t"]["mAP@all"] <= 1.0 and 0.0 < last["t2i"]["mAP@all"] <= 1.0
    finally:
        models.__path__.remove(str(tmp_path / "models"))
        registry.unregister("model", "MyHash")
        for name in [m for m in sys.modules if m == "models.MyHash" or m.startswith("models.MyHash.")]:
            del sys.modules[name]
