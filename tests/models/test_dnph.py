import itertools
import math

import numpy as np
import pytest
import torch

from models.backbones.clip import CLIPBackbone
from models.DNPH.model import DNPH, random_vertices
from tests.stubs import TinyBackbone, check_codes_and_gradients, tiny_clip_batch

CONFIG = "configs/DNPH/synthetic.yaml"



def spec_proxy(codes, labels, proxies, mrg=1.0):
    """DNPH.md §3.2 written out: squared distances of unit vectors, margin, softmax per row, sum, mean."""
    total = 0.0
    for f, y in zip(codes.double(), labels.double()):
        f = f / f.norm()
        d = torch.stack([((f - p / p.norm()) ** 2).sum() for p in proxies.double()]) + mrg * y
        log_norm = torch.log(torch.exp(-d).sum())
        total += float(sum(-y[c] * (-d[c] - log_norm) for c in range(len(y))))
    return total / len(codes)


def spec_cls(zv, zt, labels):
    """DNPH.md §3.3: mean CE of each classifier on the lowest-index positive class."""
    total = 0.0
    for z in (zv, zt):
        for row, y in zip(z.double(), labels):
            a = int(torch.nonzero(y)[0]) if y.any() else 0
            total += float(torch.log(torch.exp(row).sum()) - row[a]) / len(z)
    return total


def brute_force_targets(codes, vertices):
    """The vertex permutation with the least total Euclidean distance, found by trying all of them."""
    c = codes.double().numpy()
    best = min(itertools.permutations(range(len(c))),
               key=lambda p: sum(np.linalg.norm(c[i] - vertices[j]) for i, j in enumerate(p)))
    return torch.from_numpy(vertices[list(best)].astype(np.float64))


def test_every_loss_term_equals_the_spec_formula_on_random_inputs():
    torch.manual_seed(0)
    model = DNPH(TinyBackbone(), bits=6, num_classes=5)
    for seed in range(3):
        x, t = torch.tanh(torch.randn(6, 6)), torch.tanh(torch.randn(6, 6))
        zv, zt = torch.randn(6, 5), torch.randn(6, 5)
        labels = (torch.rand(6, 5) < 0.4).float()
        labels[0] = 0
        labels[0, 3] = 1
        np.random.seed(seed)
        vertices = np.where(np.random.randint(0, 2, size=(6, 6)) == 0, -1, 1)
        np.random.seed(seed)
        losses = model.loss({"image": x, "text": t, "image_logits": zv, "text_logits": zt}, {"label": labels})
        proxy = spec_proxy(torch.cat([x, t]), torch.cat([labels, labels]), model.proxies.detach())
        cls = spec_cls(zv, zt, labels)
        uniform = float((x.double() * brute_force_targets(x, vertices)).sum(1).mean()
                        + (t.double() * brute_force_targets(t, vertices)).sum(1).mean())
        assert set(losses) == {"proxy", "cls", "uniform", "total"}
        assert float(losses["proxy"]) == pytest.approx(proxy, rel=1e-5)
        assert float(losses["cls"]) == pytest.approx(cls, rel=1e-5)
        assert float(losses["uniform"]) == pytest.approx(uniform, rel=1e-5)
        assert float(losses["total"]) == pytest.approx(proxy + cls - 0.1 * uniform, rel=1e-5, abs=1e-6)


def test_random_vertices_follow_the_reference_draw():
    np.random.seed(3)
    expected = np.random.randint(0, 2, size=(4, 7)) * 2 - 1
    np.random.seed(3)
    assert np.array_equal(random_vertices(4, 7), expected)


@pytest.mark.parametrize("other, expected", [("orthogonal", 2.2473), ("antipodal", 0.7632)])
def test_hand_checkable_proxy_rows(other, expected):
    classes, bits = 24, 32
    model = DNPH(TinyBackbone(), bits=bits, num_classes=classes)
    target = torch.eye(classes, bits)
    proxies = target.clone() if other == "orthogonal" else -target[3].repeat(classes, 1)
    proxies[3] = target[3]
    model.proxies.data.copy_(proxies / 8)
    labels = torch.zeros(1, classes)
    labels[0, 3] = 1
    code = target[3:4] * 0.7
    outputs = {"image": code, "text": code, "image_logits": torch.zeros(1, classes),
               "text_logits": torch.zeros(1, classes)}
    losses = model.loss(outputs, {"label": labels})
    assert float(losses["proxy"]) == pytest.approx(expected, abs=1e-4)
    assert float(losses["proxy"]) == pytest.approx(
        math.log(1 + (classes - 1) * math.exp(-1 if other == "orthogonal" else -3)), rel=1e-6)
    assert float(losses["cls"]) == pytest.approx(2 * math.log(classes), rel=1e-6)


def test_saturated_codes_on_their_vertices_give_minus_point_two_k():
    bits = 8
    model = DNPH(TinyBackbone(), bits=bits, num_classes=3)
    np.random.seed(7)
    vertices = torch.from_numpy(random_vertices(5, bits)).float()
    x, t = vertices[[2, 0, 4, 1, 3]].requires_grad_(), vertices[[4, 3, 2, 1, 0]]
    labels = torch.eye(3)[[0, 1, 2, 0, 1]]
    np.random.seed(7)
    losses = model.loss({"image": x, "text": t, "image_logits": torch.zeros(5, 3),
                         "text_logits": torch.zeros(5, 3)}, {"label": labels})
    assert float(losses["uniform"].detach()) == pytest.approx(2 * bits)
    assert float((losses["total"] - losses["proxy"] - losses["cls"]).detach()) == pytest.approx(-0.2 * bits, rel=1e-6)
    losses["uniform"].backward()
    assert torch.equal(x.grad, x.detach() / 5)  # targets are constants: d<x_i, v_i>/dx_i = v_i / B


def test_tiny_clip_shapes_binarisation_and_gradients():
    torch.manual_seed(0)
    model = DNPH(CLIPBackbone(arch="tiny"), bits=16, num_classes=24)
    batch = tiny_clip_batch(size=4, num_classes=24)
    out = model(batch)
    assert out["image"].shape == out["text"].shape == (4, 16)
    assert out["image_logits"].shape == out["text_logits"].shape == (4, 24)
    check_codes_and_gradients(model, batch, out, bits=16)


def test_proxies_frozen_by_default_and_sgd_option():
    frozen = DNPH(TinyBackbone(), bits=4, num_classes=3)
    assert not frozen.proxies.requires_grad and frozen.extra_optimizers() == {}
    trained = DNPH(TinyBackbone(), bits=4, num_classes=3, update_proxies=True, proxy_lr=0.5)
    for model in (frozen, trained):
        grouped = [p for g in model.param_groups() for p in g["params"]]
        assert all(p is not model.proxies for p in grouped)
        assert len(grouped) == sum(1 for p in model.parameters() if p is not model.proxies)
    opt = trained.extra_optimizers()
    assert trained.extra_optimizers() is opt and opt["proxies"].param_groups[0]["params"][0] is trained.proxies
    before = trained.proxies.detach().clone()
    (trained.proxies ** 2).sum().backward()
    opt["proxies"].step()
    assert torch.allclose(trained.proxies.detach(), before - 0.5 * 2 * before)


def test_bad_values_fail_clearly():
    with pytest.raises(ValueError, match="num_classes"):
        DNPH(TinyBackbone(), bits=4)
    model = DNPH(TinyBackbone(), bits=4, num_classes=3, head_init="kaiming")
    assert float(model.image_classifier.weight.detach().abs().max()) <= math.sqrt(6 / 3)
    assert float(model.image_hash.fc.weight.detach().abs().max()) > 1 / math.sqrt(8)
    with pytest.raises(ValueError, match="needs class labels"):
        model.loss({"image": torch.zeros(2, 4), "text": torch.zeros(2, 4), "image_logits": torch.zeros(2, 3),
                    "text_logits": torch.zeros(2, 3)}, {"index": torch.arange(2)})


def test_classifiers_sized_from_the_data_and_proxy_state_resumes_exactly(small_run, make_runner, interrupted_run,
                                                                        tmp_path):
    opts = small_run(epochs=2, **{"model.update_proxies": True, "model.proxy_lr": 0.1, "dataset.num_samples": 150,
                                  "dataset.query_num": 30, "dataset.train_num": 50, "run.save_codes": False})
    straight = make_runner(CONFIG, opts, tmp_path / "a")
    assert straight.model.image_classifier.out_features == straight.data.num_classes == 10
    assert straight.model.proxies.shape == (10, 16)
    initial = straight.model.proxies.detach().clone()
    straight.fit()
    assert not torch.equal(straight.model.proxies.detach(), initial)
    half, resumed = interrupted_run(CONFIG, opts)
    assert torch.equal(resumed.model.proxies, half.model.proxies)
    assert resumed.extra_optimizers["proxies"].state_dict() == half.extra_optimizers["proxies"].state_dict()
    resumed.fit()
    a, c = straight.model.state_dict(), resumed.model.state_dict()
    assert max(float((a[k] - c[k]).abs().max()) for k in a) <= 1e-6
