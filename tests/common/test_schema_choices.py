"""Choices and bounds of config keys are annotations on the signatures; resolving a config checks them."""
from __future__ import annotations

import typing
from pathlib import Path

import pytest

from common import schema
from common.config import ConfigError, load_config, resolve
from main import register_all
from runners.base import config_sections

register_all()

CAPTION_PAIRS = "caption_pairs"  # DCMHT/synthetic.yaml with the caption_pairs dataset, written per test


@pytest.mark.parametrize("config, override, expected", [
    ("DCMHT/synthetic", "model.head=x", "model.head = x .* must be one of 'canonical', 'framework'"),
    ("DCMHT/synthetic", "model.loss_type=l3", "model.loss_type = l3 .* must be one of 'l2', 'l1'"),
    ("DIMCH/synthetic", "model.distance=cosine", "model.distance = cosine .* must be one of 'smooth_chamfer', "
                                                 "'chamfer', 'max', 'avg'"),
    ("DIMCH/synthetic", "model.diversity_scope=all", "model.diversity_scope = all .* must be one of 'batch', 'sample'"),
    ("DIMCH/synthetic", "model.set_size=0", "model.set_size = 0 .* must be a positive integer"),
    ("DNPH/synthetic", "model.head_init=xavier", "model.head_init = xavier .* must be one of 'default', 'kaiming'"),
    ("DSPH/synthetic", "model.alpha=-1", "model.alpha = -1 .* must be a non-negative number"),
    ("MITH/synthetic", "model.activation=swish", "model.activation = swish .* must be one of 'gelu', 'relu'"),
    ("TwDH/synthetic", "model.low_rate=-0.5", "model.low_rate = -0.5 .* must be a non-negative number"),
    ("UMoED/synthetic", "model.word_bits=3", "model.word_bits = 3 .* must be one of 1, 2, 4, 8, 16"),
    ("UMoED/synthetic", "model.num_experts=0", "model.num_experts = 0 .* must be a positive integer"),
    ("UMoED/synthetic", "model.extreme_temperature=0", "model.extreme_temperature = 0 .* must be a positive "
                                                       "number or null"),
    ("CLIPBaseline/synthetic", "model.bits=0", "model.bits = 0 .* must be a positive integer"),
    ("CLIPBaseline/synthetic", "model.backbone.context_length=0", "model.backbone.context_length = 0 .* positive"),
    ("DCMHT/synthetic", "optimizer.lr=0", "optimizer.lr = 0 .* must be a positive number"),
    ("DCMHT/coco", "dataset.train_caption=all", "dataset.train_caption = all .* must be one of 'random', 'first'"),
    ("DCMHT/synthetic", "dataset.noise=-1", "dataset.noise = -1 .* must be a non-negative number"),
    (CAPTION_PAIRS, "dataset.format=precomp", "dataset.format = precomp .* must be one of 'karpathy', 'albef'"),
])
def test_a_value_outside_the_annotation_fails_naming_the_key_and_the_choices(config, override, expected, tmp_path):
    if config == CAPTION_PAIRS:
        path = tmp_path / "captions.yaml"
        path.write_text(f"_base_: [{Path('configs/DCMHT/synthetic.yaml').resolve()}]\n"
                        "dataset:\n  _delete_: true\n  name: caption_pairs\n  image_root: images\n"
                        "eval:\n  _delete_: true\n")
    else:
        path = Path(f"configs/{config}.yaml")
    resolve(load_config(path), config_sections())
    with pytest.raises(ConfigError, match=expected):
        resolve(load_config(path, [override]), config_sections())


def test_mith_activation_choices_are_the_head_table():
    """The head builds its activation from a name table; the signature's choices must be that table's keys."""
    from models.MITH.head import ACTIVATIONS
    from models.MITH.model import MITH

    assert typing.get_args(schema.fields(MITH)["activation"].annotation) == tuple(ACTIVATIONS)
