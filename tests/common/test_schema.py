"""The constructor signatures as schema: annotation checks, defaults, and the command line's errors."""
import os
from dataclasses import dataclass
from typing import Literal, Sequence

import pytest
import yaml

from common import schema
from common.config import ConfigError, Section, load_config, resolve
from common.schema import NonNegativeFloat, PositiveInt
from main import main, register_all

COCO = "configs/DCMHT/coco.yaml"


@pytest.mark.parametrize("annotation, good, bad", [
    (int, [0, -3, 7], [True, 1.5, "1", None]),
    (bool, [True, False], [0, 1, "yes", None]),
    (float, [1, 0.5, -2.0], [True, "1e-3", [1, 2]]),
    (str, ["a", ""], [1, None, ["a"]]),
    (int | None, [None, 4], [False, 2.0]),
    (Literal["a", "b"], ["a", "b"], ["c", 1]),
    (Literal[1, 2], [1, 2], [True, 1.0, 3]),
    (PositiveInt, [1, 99], [0, -1, True]),
    (NonNegativeFloat, [0, 0.0, 2.5], [-0.1, False]),
    (Sequence[PositiveInt | None], [[], [None, 5], (1,)], [[0], "ab", 5, [True]]),
    (tuple[float, float], [[0.9, 0.99], (1, 2)], [[0.9], [0.9, "x"]]),
    (tuple[int, ...], [[], [1, 2, 3]], [[1.5]]),
    (dict | None, [None, {}, {"a": 1}], [[], "a"]),
])
def test_check_accepts_exactly_what_the_annotation_says(annotation, good, bad):
    assert all(schema.check(v, annotation) for v in good), good
    assert not any(schema.check(v, annotation) for v in bad), bad


def test_expected_says_it_in_words():
    assert schema.expected(PositiveInt | None) == "a positive integer or null"
    assert schema.expected(Literal["none", "fp16"]) == "one of 'none', 'fp16'"
    assert schema.expected(Sequence[int]) == "a list, each item an integer"
    assert schema.expected(tuple[float, float]) == "a list of 2 values (a number, a number)"
    assert schema.expected(bool) == "true or false"


@dataclass
class Options:
    epochs: PositiveInt = 10
    mode: Literal["fast", "exact"] = "fast"
    ks: Sequence[int] = (1, 5)


def test_resolve_fills_defaults_reports_every_problem_at_once_and_dumps_origins(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("run:\n  epochs: 3\n")
    sections = {"run": Section(target=lambda resolved: Options)}
    cfg = resolve(load_config(path), sections)
    assert dict(cfg) == {"run": {"epochs": 3, "mode": "fast", "ks": [1, 5]}}
    assert cfg.origin("run.mode") == "default of Options"
    text = cfg.to_yaml()
    assert "epochs: 3  # " in text and "ks: [1, 5]  # default of Options" in text
    assert yaml.safe_load(text) == dict(cfg)
    path.write_text("run:\n  epochs: 3\nother: {x: 1}\n")
    bad = load_config(path, ["run.epochs=0", "run.mode=slow", "run.kz=[1]"])
    with pytest.raises(ConfigError) as err:
        resolve(bad, sections)
    message = str(err.value)
    assert "\n" not in message
    for part in ("run.epochs = 0 (set by --opts) must be a positive integer",
                 "run.mode = slow (set by --opts) must be one of 'fast', 'exact'",
                 "unknown key 'run.kz' in '--opts'; did you mean 'ks'?",
                 "unknown section 'other' in"):
        assert part in message, (part, message)


@pytest.mark.parametrize("override, fragment", [
    ("model.bits=true", "model.bits = true (set by --opts) must be a"),
    ("run.epochs=yes", "run.epochs = true (set by --opts) must be a positive integer"),
    ("run.epochs=abc", "run.epochs = abc (set by --opts) must be a positive integer"),
    ("run.epochs=1.5", "run.epochs = 1.5 (set by --opts) must be a positive integer"),
    ("optimizer.lr=[1,2]", "optimizer.lr = [1, 2] (set by --opts) must be a"),
    ("dataset.split_fil=x.npz", "unknown key 'dataset.split_fil' in '--opts'; did you mean 'split_file'?"),
])
def test_bad_values_on_the_command_line_are_one_line_naming_key_file_value_and_type(override, fragment, tmp_path,
                                                                                      capsys):
    run_dir = tmp_path / "run"
    assert main(["--config-file", COCO, "--save-dir", str(run_dir), "--opts", override]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {COCO}: ") and len(err.splitlines()) == 1, err
    assert fragment in err, err
    assert not run_dir.exists()


def test_bad_files_are_one_line_naming_the_file(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert main(["--config-file", str(empty)]) == 1
    assert capsys.readouterr().err.strip() == (f"error: config file '{empty.as_posix()}' is empty: expected a mapping "
                                               "with _base_ and/or the sections model, optimizer, dataset, run, eval")
    (tmp_path / "base.yaml").write_text(f"_base_: [{os.path.abspath(COCO)}]\nmodel:\n  bits: 32\n")
    over = tmp_path / "over.yaml"
    over.write_text("_base_: [base.yaml]\nmodel:\n  bits: {value: 32}\n")
    assert main(["--config-file", str(over)]) == 1
    err = capsys.readouterr().err.strip()
    assert f"'model.bits' is a mapping but '{(tmp_path / 'base.yaml').as_posix()}' sets it to 32" in err, err
    assert "_delete_: true" in err


def test_any_constructor_argument_can_be_overridden_whether_or_not_the_yaml_mentions_it():
    from runners.base import config_sections

    register_all()
    cfg = resolve(load_config(COCO, ["dataset.split_file=splits/mine.npz", "eval.tie_break=reverse",
                                     "dataset.zero_label_rows=drop"]), config_sections())
    assert cfg["dataset"]["split_file"] == "splits/mine.npz" and cfg.origin("dataset.split_file") == "--opts"
    assert cfg["eval"]["tie_break"] == "reverse" and cfg["dataset"]["zero_label_rows"] == "drop"
    assert cfg["run"]["epochs"] == 100 and cfg["model"]["backbone"]["arch"] == "ViT-B-32"
