import textwrap

import pytest

from common.config import ConfigError, Section, build, load_config, resolve
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


def test_overrides_parse_yaml_scalars_and_may_set_keys_no_file_mentions(tree):
    cfg_path = write(tree / "exp.yaml", "_base_: [_base_/run.yaml, _base_/model.yaml]\n")
    cfg = load_config(cfg_path, ["run.epochs=3", "model.head.width=1e-3", "model.name=Other", "run.seed=5"])
    assert cfg["run"] == {"epochs": 3, "batch_size": 64, "seed": 5} and cfg["model"]["head"]["width"] == 1e-3
    assert cfg["model"]["name"] == "Other" and cfg.origin("run.seed") == "--opts"
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        load_config(cfg_path, ["run.epochs"])
    with pytest.raises(ConfigError, match=r"override 'runn.epochs': no section 'runn'; did you mean 'run'"):
        load_config(cfg_path, ["runn.epochs=3"])
    with pytest.raises(ConfigError, match=r"override 'model.bits.x': 'model.bits' is 16 in '.*model.yaml'"):
        load_config(cfg_path, ["model.bits.x=3"])


def test_a_mapping_over_an_inherited_scalar_is_an_error_that_suggests_delete(tree):
    cfg_path = write(tree / "exp.yaml", "_base_: [_base_/model.yaml]\nmodel:\n  bits: {value: 32}\n")
    with pytest.raises(ConfigError, match=r"exp.yaml': 'model.bits' is a mapping but '.*model.yaml' sets it to 16; "
                                          r"add '_delete_: true'"):
        load_config(cfg_path)
    fixed = write(tree / "fixed.yaml", "_base_: [_base_/model.yaml]\nmodel:\n  bits: {_delete_: true, value: 32}\n")
    assert load_config(fixed)["model"]["bits"] == {"value": 32}


def test_empty_and_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match=r"config file '.*empty.yaml' is empty: expected a mapping"):
        load_config(write(tmp_path / "empty.yaml", "# nothing here\n"))
    with pytest.raises(ConfigError, match="must hold a mapping at the top level, got list"):
        load_config(write(tmp_path / "list.yaml", "- 1\n"))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file '.*nope.yaml' not found"):
        load_config(tmp_path / "nope.yaml")
    bad = write(tmp_path / "bad.yaml", "model: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    section = write(tmp_path / "sec.yaml", "modle: {}\n")
    with pytest.raises(ConfigError, match="unknown section 'modle'.*did you mean 'model'"):
        resolve(load_config(section), {"model": Section(target=lambda resolved: Toy)})


class Toy:
    def __init__(self, bits: int = 16, head: dict | None = None):
        self.bits, self.head = bits, head


@pytest.fixture
def toy_tokenizer():
    registry.register_tokenizer("Toy")(Toy)
    yield {"model": Section(kind="tokenizer")}
    registry.unregister("tokenizer", "Toy")


def test_unknown_key_names_key_section_file_and_closest(tree, toy_tokenizer):
    cfg_path = write(tree / "exp.yaml", """
        _base_: [_base_/model.yaml]
        model:
          bitz: 8
        """)
    cfg = load_config(cfg_path)
    with pytest.raises(ConfigError, match=r"unknown key 'model.bitz' in '.*exp.yaml'; did you mean 'bits'\?"):
        resolve(cfg, toy_tokenizer)
    cfg["model"].pop("bitz")
    resolved = resolve(cfg, toy_tokenizer)
    assert build("tokenizer", resolved["model"]).bits == 16

