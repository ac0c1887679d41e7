"""The frozen-backbone fast path trains exactly like the frozen backbone run without a cache."""
import pytest
import torch

from common.config import ConfigError, load_config
from main import register_all
from runners.base import BaseRunner

CONFIG = "configs/DCMHT/synthetic.yaml"


def trained(opts, save_dir):
    register_all()
    runner = BaseRunner(load_config(CONFIG, opts), save_dir)
    runner.fit()
    runner.close()
    return runner


def test_cached_features_train_the_heads_like_the_frozen_backbone(small_run, tmp_path, caplog):
    frozen = small_run(epochs=2, **{"model.freeze_backbone": "true"})
    cache = frozen + [f"run.feature_cache_dir={tmp_path / 'cache'}", "run.feature_cache=true"]
    plain = trained(frozen, tmp_path / "plain")
    cached = trained(cache, tmp_path / "cached")
    initial = BaseRunner(load_config(CONFIG, frozen), None).model.state_dict()
    a, b = plain.model.state_dict(), cached.model.state_dict()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
        if key.startswith("backbone."):
            assert torch.equal(a[key], initial[key]), f"frozen {key} changed"
    assert any(not torch.equal(a[k], initial[k]) for k in a if not k.startswith("backbone."))
    assert plain.history[-1]["i2t"]["mAP@all"] == pytest.approx(cached.history[-1]["i2t"]["mAP@all"], abs=1e-6)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3
    again = BaseRunner(load_config(CONFIG, cache), None)
    assert isinstance(again.data.train.image, torch.Tensor)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3


def test_feature_cache_needs_a_frozen_backbone(small_run, tmp_path):
    register_all()
    with pytest.raises(ConfigError, match="run.feature_cache needs model.freeze_backbone: true"):
        BaseRunner(load_config(CONFIG, small_run(**{"run.feature_cache": "true"})), None)
