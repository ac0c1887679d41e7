import itertools
import json

import numpy as np
import pytest
import scipy.linalg
import torch

from common.config import load_config
from main import main, register_all
from models.backbones.clip import CLIPBackbone
from models.TwDH.centers import (bernoulli_centers, center_targets, hamming_distances, hash_centers, map_centers,
                                 pair_onehot, save_codebook, sylvester_hadamard)
from models.TwDH.model import TwDH
from models.losses import pair_quantization
from models.TwDH.transform import learn_transform
from tests.stubs import TinyBackbone

CONFIG = "configs/TwDH/synthetic.yaml"



def pairs_of(logits):
    return torch.softmax(logits.view(len(logits), -1, 2), -1).view(len(logits), -1)


def pair_distances(codes):
    return [int((a != b).sum()) for a, b in itertools.combinations(codes, 2)]


# ---------------------------------------------------------------------------------------------- centers
def test_hadamard_is_scipys_sylvester_matrix():
    for n in (1, 2, 8, 64):
        assert torch.equal(sylvester_hadamard(n), torch.from_numpy(scipy.linalg.hadamard(n)).float())
    with pytest.raises(ValueError, match="power of two"):
        sylvester_hadamard(12)


def test_hadamard_centers_are_exactly_half_the_bits_apart():
    for classes, bits in ((24, 64), (80, 512), (21, 32)):
        centers = hash_centers(classes, bits)
        assert centers.shape == (classes, bits)
        assert set(pair_distances(centers)) == {bits // 2}
        assert (centers.sum(1) == 0).all()  # no constant row: every center is balanced


def test_more_classes_than_rows_use_the_negated_rows_at_least_half_apart():
    centers = hash_centers(24, 16)  # 15 Hadamard rows + 9 negated ones
    dist = pair_distances(centers)
    assert min(dist) == 8 and set(dist) == {8, 16}
    assert sum(d == 16 for d in dist) == 9  # only a row and its own negation are 16 apart
    assert (centers.sum(1) == 0).all() and len(set(map(tuple, centers.tolist()))) == 24


def test_bernoulli_centers_meet_the_csq_thresholds_when_they_can():
    centers = bernoulli_centers(10, 64)
    assert (centers.sum(1) == 0).all()
    assert min(pair_distances(centers)) >= 20 and np.mean(pair_distances(centers)) >= 32
    odd = hash_centers(5, 24)  # not a power of two: random balanced rows, 5/16 * 24 -> 8 apart
    assert (odd.sum(1) == 0).all() and min(pair_distances(odd)) >= 8
    crowded = hash_centers(80, 16)  # 80 > 2*16 - 2 and no draw can reach distance 5: best draw
    assert (crowded.sum(1) == 0).all() and min(pair_distances(crowded)) >= 2
    assert np.mean(pair_distances(crowded)) >= 8
    assert torch.equal(crowded, hash_centers(80, 16)) and not torch.equal(crowded, hash_centers(80, 16, seed=1))
    assert torch.equal(hamming_distances(odd).diagonal(), torch.zeros(5))


def reference_targets(labels, centers, ties):
    """CSQ's multi-label rule written out per sample: sign of the mean of the positive centers, ties random."""
    rows = []
    for y in labels:
        mean = centers[y == 1].mean(0)
        rows.append([float(ties[k]) if m == 0 else (1.0 if m > 0 else -1.0) for k, m in enumerate(mean)])
    return torch.tensor(rows)


def test_targets_follow_the_multi_label_center_rule():
    centers = hash_centers(6, 16)
    ties = torch.tensor([1.0, -1.0] * 8)
    labels = torch.tensor([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1.0]])
    targets = center_targets(labels, centers, ties)
    assert torch.equal(targets[0], centers[0])
    pair = centers[0] == centers[1]  # two labels: agreeing bits keep their sign, the other half are ties
    assert torch.equal(targets[1][pair], centers[0][pair]) and torch.equal(targets[1][~pair], ties[~pair])
    assert int((~pair).sum()) == 8
    assert torch.equal(targets, reference_targets(labels, centers, ties))
    assert pair_onehot(torch.tensor([[-1.0, 1.0]])).tolist() == [[1.0, 0.0, 0.0, 1.0]]


# ---------------------------------------------------------------------------------------------- loss
def spec_bce(p, target):
    p = p.double()
    return float(-(target * p.log().clamp(min=-100) + (1 - target) * (1 - p).log().clamp(min=-100)).mean())


def spec_quant(p):
    return float(1 - ((2 * p.double() - 1) ** 2).mean())


def test_every_loss_term_equals_the_spec_formula_on_random_inputs():
    torch.manual_seed(0)
    model = TwDH(TinyBackbone(), bits=4, num_classes=5, long_bits=16, short_bits=(4, 8), quan_alpha=0.5,
                 low_rate=0.3)
    transforms = {s: torch.randn(32, 2 * s) for s in (4, 8)}
    model.codebook.set_transforms(transforms)
    for _ in range(3):
        x, t = pairs_of(torch.randn(7, 32)), pairs_of(torch.randn(7, 32))
        labels = (torch.rand(7, 5) < 0.4).float()
        labels[0] = 0  # no label: left out of the BCE terms
        labels[1] = torch.tensor([1.0, 1, 0, 0, 0])  # two labels: half of the long bits are ties
        labels[2] = torch.tensor([0.0, 0, 1, 0, 0])
        ties = model.draw_ties()
        losses = model.loss({"image": x, "text": t}, {"label": labels})
        keep = labels.sum(1) > 0
        tau = pair_onehot(reference_targets(labels[keep], model.codebook.long, ties[16]))
        expected = {"bce": (spec_bce(x[keep], tau) + spec_bce(t[keep], tau)) / 2,
                    "quant": (spec_quant(x) + spec_quant(t)) / 2}
        total = expected["bce"] + 0.5 * expected["quant"]
        for s in (4, 8):
            xs, ts = pairs_of(x @ transforms[s]), pairs_of(t @ transforms[s])
            tau_s = pair_onehot(reference_targets(labels[keep], model.codebook.short(s), ties[s]))
            expected[f"bce_{s}"] = (spec_bce(xs[keep], tau_s) + spec_bce(ts[keep], tau_s)) / 2
            expected[f"quant_{s}"] = (spec_quant(xs) + spec_quant(ts)) / 2
            total += 0.3 * (expected[f"bce_{s}"] + expected[f"quant_{s}"])
        expected["total"] = total
        assert set(losses) == set(expected)
        for name, value in expected.items():
            assert float(losses[name]) == pytest.approx(value, rel=1e-5), name
    assert int(model.codebook.tie_step) == 3
    assert not torch.equal(model.draw_ties()[16], ties[16])  # a new vector every batch


def test_default_trains_only_the_long_code():
    model = TwDH(TinyBackbone(), bits=16, num_classes=3, long_bits=16, short_bits=())
    x = pairs_of(torch.randn(4, 32))
    losses = model.loss({"image": x, "text": x}, {"label": torch.eye(3)[[0, 1, 2, 0]]})
    assert set(losses) == {"bce", "quant", "total"}
    assert float(losses["total"]) == pytest.approx(float(losses["bce"] + 0.5 * losses["quant"]))


def test_hand_checkable_values():
    p = torch.tensor([[0.9, 0.1, 0.5, 0.5]])
    assert float(pair_quantization(p)) == pytest.approx(0.68)
    model = TwDH(TinyBackbone(), bits=2, num_classes=2, long_bits=2, short_bits=(), quan_alpha=0.0)
    assert model.codebook.long.tolist() == [[1.0, -1.0], [-1.0, 1.0]]  # class 1 -> target pairs (1,0),(0,1)
    losses = model.loss({"image": p, "text": p}, {"label": torch.tensor([[0.0, 1.0]])})
    assert float(losses["bce"]) == pytest.approx(0.399254, abs=1e-6)
    model = TwDH(TinyBackbone(), bits=2, num_classes=2, long_bits=4, short_bits=(2,))
    transform = torch.zeros(8, 4)
    transform[:4, :2] = torch.tensor([[0.0, 2], [0, 0], [1, 0], [0, 0]])
    model.codebook.set_transforms({2: transform})
    long_pairs = torch.tensor([[0.8, 0.2, 0.3, 0.7, 0.5, 0.5, 0.5, 0.5]])
    short = model.short_code(long_pairs, 2)  # z = [0.3, 1.6, 0, 0]
    assert short[0, :2].tolist() == pytest.approx([0.2142, 0.7858], abs=1e-4)
    assert model.binarize(long_pairs).tolist() == [[1.0, -1.0]]


# ---------------------------------------------------------------------------------------------- model
def test_codes_are_pm1_of_the_chosen_length():
    torch.manual_seed(0)
    backbone = CLIPBackbone(arch="tiny")
    model = TwDH(backbone, bits=8, num_classes=4, long_bits=32, short_bits=(8, 16))
    tokenizer = backbone.tokenizer()
    batch = {"image": torch.randn(3, 3, 32, 32), "text": tokenizer(["a red circle", "blue square", "x"])}
    out = model(batch)
    assert out["image"].shape == out["text"].shape == (3, 64)
    assert torch.allclose(out["text"].view(3, 32, 2).sum(-1), torch.ones(3, 32))
    with pytest.raises(RuntimeError, match="before_training"):
        model.binarize(out["image"])
    model.codebook.set_transforms({8: torch.randn(64, 16), 16: torch.randn(64, 32)})
    for bits in (8, 16, 32):
        model.bits = bits
        for codes in (model.binarize(out["image"]), model.binarize(out["text"])):
            assert codes.shape == (3, bits) and set(codes.unique().tolist()) <= {-1.0, 1.0}
    losses = model.loss(out, {"label": torch.eye(4)[:3]})
    losses["total"].backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith(("image_hash", "text_hash")))
    model.eval()
    assert model.encode_image(torch.randn(1, 3, 32, 32)).shape == (1, 64)


def test_bad_settings_fail_with_the_key():
    with pytest.raises(ValueError, match="model.bits must be model.long_bits"):
        TwDH(TinyBackbone(), bits=128, num_classes=3, long_bits=64, short_bits=(16, 32))
    with pytest.raises(ValueError, match="model.num_classes"):
        TwDH(TinyBackbone(), bits=16, long_bits=64, short_bits=(16,))
    with pytest.raises(ValueError, match="model.short_bits"):
        TwDH(TinyBackbone(), bits=16, num_classes=3, long_bits=16, short_bits=(16,))
    with pytest.raises(FileNotFoundError, match="model.codebook"):
        TwDH(TinyBackbone(), bits=16, num_classes=3, long_bits=32, short_bits=(16,), codebook="/missing.safetensors")


def test_codebook_file_round_trip(tmp_path):
    model = TwDH(TinyBackbone(), bits=8, num_classes=3, long_bits=16, short_bits=(8,))
    model.codebook.set_transforms({8: torch.randn(32, 16)})
    save_codebook(tmp_path / "cb.safetensors", model.codebook.tensors())
    other = TwDH(TinyBackbone(), bits=8, num_classes=3, long_bits=16, short_bits=(8,), center_seed=5,
                 codebook=str(tmp_path / "cb.safetensors"))
    for name, value in model.codebook.tensors().items():
        assert torch.equal(getattr(other.codebook, name), value), name
    assert bool(other.codebook.learned)
    with pytest.raises(ValueError, match=r"needs array 'long' of shape \(4, 16\), got \(3, 16\)"):
        TwDH(TinyBackbone(), bits=8, num_classes=4, long_bits=16, short_bits=(8,),
             codebook=str(tmp_path / "cb.safetensors"))
    save_codebook(tmp_path / "bits.safetensors", {**model.codebook.tensors(), "long": (model.codebook.long > 0) * 1.0})
    with pytest.raises(ValueError, match="must hold only -1 and \\+1"):
        TwDH(TinyBackbone(), bits=8, num_classes=3, long_bits=16, short_bits=(8,),
             codebook=str(tmp_path / "bits.safetensors"))


# ---------------------------------------------------------------------------------------------- step two
def test_learned_transform_maps_long_centers_onto_short_centers_on_a_toy_case():
    long_centers, short_centers = hash_centers(4, 32), hash_centers(4, 8)
    labels = torch.eye(4)[torch.arange(120) % 4]
    labels[::3, 2] = 1  # multi-label samples too, with their tie bits
    start = (torch.rand(64, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert not torch.equal(map_centers(long_centers, start), short_centers)
    transform, epoch = learn_transform(labels, long_centers, short_centers, epochs=100, batch_size=40, lr=0.03)
    assert epoch is not None and transform.shape == (64, 16)
    assert torch.equal(map_centers(long_centers, transform), short_centers)


# ---------------------------------------------------------------------------------------------- runner
def test_synthetic_run_learns_and_codebook_survives_resume(small_run, make_runner, tmp_path):
    """A 64-bit long code (the 512 of the config learns more slowly) with 16/32-bit codes derived from it."""
    register_all()
    opts = small_run(epochs=3, **{
        "dataset.num_samples": 600, "dataset.query_num": 100, "dataset.train_num": 500, "run.eval_every": 3,
        "optimizer.lr": 0.005, "optimizer.backbone_lr": 0.005, "model.long_bits": 64, "model.short_bits": "[16,32]",
        "model.transform_lr": 0.03})
    run = tmp_path / "run"
    runner = make_runner(CONFIG, opts, run)
    chance = runner.random_code_baseline()
    last = runner.fit()["last"]
    runner.close()
    for direction in ("i2t", "t2i"):
        assert last[direction]["mAP@all"] >= chance[direction] + 0.2, (direction, last, chance)
    codebook = runner.model.codebook
    for s in (16, 32):
        assert torch.equal(map_centers(codebook.long, codebook.transform(s)), codebook.short(s))
    assert (run / "codebook.safetensors").is_file()
    resumed = make_runner(CONFIG, opts, tmp_path / "resumed")
    assert not bool(resumed.model.codebook.learned)
    resumed.load_checkpoint(run / "checkpoints" / "last.pt", resume=True)
    for name, value in codebook.state_dict().items():
        assert torch.equal(resumed.model.codebook.state_dict()[name], value), name
    resumed.close()
    for bits in (32, 64):  # the other short code and the long code of the same checkpoint
        out = tmp_path / f"eval{bits}"
        assert main(["--config-file", CONFIG, "--save-dir", str(out), "--eval-only", "--checkpoint",
                     str(run / "checkpoints" / "last.pt"), "--opts", *opts, f"model.bits={bits}"]) == 0
        scores = json.loads((out / "eval" / "last-1" / "metrics.json").read_text())["last"]
        assert scores["i2t"]["mAP@all"] > chance["i2t"] + 0.1 and scores["t2i"]["mAP@all"] > chance["t2i"] + 0.1


@pytest.mark.parametrize("name", ["mirflickr", "nuswide", "coco", "synthetic"])
def test_configs_resolve_to_the_paper_defaults(name):
    from common.config import resolve
    from runners.base import config_sections

    register_all()
    cfg = resolve(load_config(f"configs/TwDH/{name}.yaml"), config_sections())
    model = cfg["model"]
    assert cfg["run"]["runner"] == "BaseRunner"
    assert (model["long_bits"], model["quan_alpha"], model["low_rate"]) == (512, 0.5, 0.0)
    if name != "synthetic":
        assert (cfg["run"]["epochs"], cfg["run"]["batch_size"], cfg["optimizer"]["backbone_lr"]) == (100, 128, 1e-5)
        assert (cfg["dataset"]["split"], model["transform_lr"]) == ("clip_hash", 0.001)
