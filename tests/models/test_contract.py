"""The model contract, checked for every registered model from its own ``configs/<NAME>/synthetic.yaml``.

As timm's suite runs over its registry: a new registered model is tested here without writing a test (it only
needs its synthetic config). Per model: codes in {-1, +1} of shape (B, bits) for each modality its data
yields (image and text for cross-modal data, the image for single-modal data) and for a batch of one, a
finite loss with ``total`` whose gradient reaches every trainable parameter, an exact state_dict round trip,
a short run that learns far above the random-code level in the evaluator's ranked directions, and a resumed
run that ends where the uninterrupted one does.
"""
from pathlib import Path

import pytest
import torch

from dataset.tokenizers import text_inputs
from main import register_all

REGISTRY = register_all()
MODELS = REGISTRY.list("model")

# How each model is shown to learn: epochs on 500 training pairs at batch 50 with a constant rate after
# warm-up (one evaluation, at the end), the margin over random codes it must clear in both directions, and
# what the model needs beyond that. The tiny CLIP is trained from scratch, so methods whose losses only pay
# off once its features separate the concepts need more steps; the two pairwise-likelihood-only models
# (CLIPBaseline, DCMHT) learn slowly from 500 pairs (the 30-epoch demo reaches ~0.8 for DCMHT).
LEARNING = {
    "CLIPBaseline": (12, 0.04, {"model.dropout": 0.0}),
    "DCMHT": (12, 0.1, {"optimizer.lr": 0.003, "optimizer.backbone_lr": 0.003}),
    "DIMCH": (14, 0.2, {}),  # the triplet terms need ~100 steps of the random tiny CLIP
    "DNPH": (3, 0.2, {"dataset.num_samples": 600, "run.batch_size": 25, "optimizer.schedule": "warmup_cosine",
                      "optimizer.lr": 0.003, "optimizer.backbone_lr": 0.003}),
    "DSPH": (20, 0.2, {"dataset.num_samples": 300, "dataset.query_num": 50, "dataset.train_num": 150,
                       "run.batch_size": 25, "optimizer.schedule": "warmup_cosine"}),
    "MITH": (5, 0.2, {}),
    "TwDH": (3, 0.2, {"dataset.num_samples": 600, "run.batch_size": 25, "optimizer.schedule": "warmup_cosine",
                      "optimizer.lr": 0.005, "optimizer.backbone_lr": 0.005, "model.long_bits": 64,
                      "model.short_bits": "[16,32]", "model.transform_lr": 0.03}),
    "UMoED": (24, 0.2, {}),  # the 4-bit words separate the concepts after ~100 steps
    "WCH": (3, 0.2, {}),  # unsupervised: two views of 500 single-concept images, i->i (~0.49 vs 0.11)
    # The frozen MiniLM encodes every caption of every epoch, so fewer pairs; the tiny ResNet learns from scratch.
    "TwoTower": (4, 0.2, {"dataset.num_samples": 400, "dataset.query_num": 50, "dataset.train_num": 250,
                          "run.batch_size": 25}),
}
DEFAULT_LEARNING = (10, 0.1, {})


def config_of(name: str) -> str:
    path = Path("configs") / name / "synthetic.yaml"
    assert path.is_file(), f"registered model {name} has no {path}: every model ships a synthetic config"
    return str(path)


@pytest.mark.parametrize("name", MODELS)
def test_codes_gradients_and_state_round_trip(name, small_run, make_runner, tmp_path, one_thread):
    runner = make_runner(config_of(name), small_run(), None)
    model, bits = runner.model, runner.model.bits
    model.before_training(runner.training_context())
    model.train()
    batch = next(iter(runner.train_loader))
    losses = model.loss(model(batch), batch)
    assert "total" in losses and all(torch.isfinite(v) for v in losses.values()), losses
    losses["total"].backward()
    silent = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not silent, f"no gradient reaches {silent}"
    model.eval()
    encoders = {"image": lambda rows: model.encode_image(batch["image"][rows]),
                "text": lambda rows: model.encode_text(**{k: v[rows] for k, v in text_inputs(batch).items()})}
    with torch.no_grad():
        for key in (key for key in encoders if key in batch):
            for rows in (slice(None), slice(0, 1)):
                codes = model.binarize(encoders[key](rows).float())
                assert codes.shape == (len(batch["index"][rows]), bits)
                assert set(codes.unique().tolist()) <= {-1.0, 1.0}
        expected = model.binarize(model.encode_image(batch["image"]).float())
    copy = make_runner(config_of(name), small_run(), None).model
    copy.load_state_dict(model.state_dict())
    copy.eval()
    with torch.no_grad():
        assert torch.equal(copy.binarize(copy.encode_image(batch["image"]).float()), expected)
    restored = copy.state_dict()
    assert all(torch.equal(restored[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", MODELS)
def test_short_run_learns_far_above_random_codes(name, small_run, make_runner, tmp_path):
    epochs, margin, extra = LEARNING.get(name, DEFAULT_LEARNING)
    opts = small_run(epochs=epochs, batch_size=50, **{
        "dataset.num_samples": 700, "dataset.query_num": 100, "dataset.train_num": 500,
        "optimizer.schedule": "warmup_constant", "run.eval_every": epochs, "run.save_codes": False, **extra})
    runner = make_runner(config_of(name), opts, tmp_path / "run")
    chance = runner.random_code_baseline()
    last = runner.fit()["last"]
    runner.close()
    assert set(chance) == set(runner.evaluator.ranked)  # i2t and t2i for cross-modal data, i2i for single-modal
    for direction in chance:
        assert last[direction]["mAP@all"] > chance[direction] + margin, (direction, last[direction], chance)


@pytest.mark.parametrize("name", MODELS)
def test_resumed_run_ends_where_the_uninterrupted_one_does(name, small_run, make_runner, interrupted_run,
                                                           tmp_path, one_thread):
    opts = small_run(epochs=2, **{"dataset.num_samples": 150, "dataset.query_num": 30, "dataset.train_num": 50,
                                  "run.save_codes": False})
    straight = make_runner(config_of(name), opts, tmp_path / "straight")
    straight.fit()
    interrupted, resumed = interrupted_run(config_of(name), opts)
    assert resumed.epoch == 1
    resumed.fit()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())
    assert worst <= 1e-6, worst
    direction = straight.evaluator.ranked[0]
    assert straight.history[-1][direction]["mAP@all"] == pytest.approx(resumed.history[-1][direction]["mAP@all"],
                                                                       abs=1e-9)
