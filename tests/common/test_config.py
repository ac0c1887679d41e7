import textwrap

import pytest

from common.config import ConfigError, build, load_config
from common.register import registry


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def tree(tmp_path):
    write(tmp_path / "_base_/run.yaml", """
        run:
          epochs: 100
          batch_size: 64
        """)
    write(tmp_path / "_base_/model.yaml", """
        model:
          name: Toy
          bits: 16
          head: {width: 8, depth: 2}
        """)
    return tmp_path


def test_base_inheritance_deep_merge_and_replacement(tree):
    cfg_path = write(tree / "m/exp.yaml", """
        _base_: [../_base_/run.yaml, ../_base_/model.yaml]
        model:
          bits: 32
          head: {width: 4}
        run:
          epochs: 3
        """)
    cfg = load_config(cfg_path)
    assert cfg["model"] == {"name": "Toy", "bits": 32, "head": {"width": 4, "depth": 2}}
    assert cfg["run"] == {"epochs": 3, "batch_size": 64}
    assert cfg.origin("run.batch_size").endswith("_base_/run.yaml")
    assert cfg.origin("model.bits").endswith("m/exp.yaml")


def test_delete_replaces_whole_dict(tree):
    cfg_path = write(tree / "exp.yaml", """
        _base_: [_base_/model.yaml]
        model:
          head: {_delete_: true, width: 2}
        """)
    assert load_config(cfg_path)["model"]["head"] == {"width": 2}


def test_sibling_bases_with_same_key_are_an_error(tree):
    write(tree / "_base_/run2.yaml", "run:\n  epochs: 5\n")
    cfg_path = write(tree / "exp.yaml", "_base_: [_base_/run.yaml, _base_/run2.yaml]\n")
    with pytest.raises(ConfigError, match="both set 'run.epochs'"):
        load_config(cfg_path)


def test_overrides_parse_yaml_scalars_and_must_exist(tree):
    cfg_path = write(tree / "exp.yaml", "_base_: [_base_/run.yaml, _base_/model.yaml]\n")
    cfg = load_config(cfg_path, ["run.epochs=3", "model.head.width=1e-3", "model.name=Other"])
    assert cfg["run"]["epochs"] == 3 and cfg["model"]["head"]["width"] == 1e-3
    assert cfg["model"]["name"] == "Other"
    with pytest.raises(ConfigError, match=r"override 'run.epoch': no key 'epoch' under run .*did you mean 'epochs'"):
        load_config(cfg_path, ["run.epoch=3"])
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        load_config(cfg_path, ["run.epochs"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file '.*nope.yaml' not found"):
        load_config(tmp_path / "nope.yaml")
    bad = write(tmp_path / "bad.yaml", "model: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    section = write(tmp_path / "sec.yaml", "modle: {}\n")
    with pytest.raises(ConfigError, match="unknown section 'modle'.*did you mean 'model'"):
        load_config(section)


def test_unknown_key_names_key_section_file_and_closest(tree):
    class Toy:
        def __init__(self, bits: int = 16, head: dict | None = None):
            self.bits, self.head = bits, head

    registry.register_tokenizer("Toy")(Toy)
    try:
        cfg_path = write(tree / "exp.yaml", """
            _base_: [_base_/model.yaml]
            model:
              bitz: 8
            """)
        cfg = load_config(cfg_path)
        with pytest.raises(ConfigError, match=r"unknown key 'model.bitz'; did you mean 'bits'\? in '.*exp.yaml'"):
            build("tokenizer", cfg["model"], "model", cfg)
        cfg["model"].pop("bitz")
        assert build("tokenizer", cfg["model"], "model", cfg).bits == 16
    finally:
        registry.unregister("tokenizer", "Toy")


def test_every_shipped_config_resolves_with_known_keys():
    """Strict keys make this a typo detector for configs/: every key must be accepted by its class."""
    from pathlib import Path

    from common.config import check_keys, from_section
    from main import register_all
    from runners.base import RunConfig
    from common.evaluation import EvalConfig
    from models.base import FRAMEWORK_MODEL_KEYS

    reg = register_all()
    root = Path(__file__).resolve().parents[2] / "configs"
    files = [p for p in root.rglob("*.yaml") if "_base_" not in p.parts]
    assert files
    for path in files:
        cfg = load_config(path)
        from_section(RunConfig, cfg.get("run"), "run", cfg)
        from_section(EvalConfig, cfg.get("eval"), "eval", cfg)
        for section in ("model", "optimizer", "dataset"):
            kind = {"model": "model", "optimizer": "optimizer", "dataset": "dataset"}[section]
            keys = {k: v for k, v in cfg[section].items()
                    if k != "name" and not k.endswith("backbone") and k not in FRAMEWORK_MODEL_KEYS}
            check_keys(keys, reg.get(kind, cfg[section]["name"]), section, cfg)
        for key, sub in cfg["model"].items():
            if key.endswith("backbone") and isinstance(sub, dict):
                check_keys({k: v for k, v in sub.items() if k != "name"}, reg.get("backbone", sub["name"]),
                           f"model.{key}", cfg)
