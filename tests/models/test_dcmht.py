import math

import pytest
import torch

from models.DCMHT.model import DCMHT, pair_loss
from models.heads import SelectHead, argmax_codes
from tests.stubs import TinyBackbone



def spec_loss(x, t, labels, bits, vartheta):
    """DCMHT.md §3.2-3.3 written out independently: cdist, masks, means over all B^2 entries."""
    sim = (labels @ labels.t() > 0).float()
    m = math.sqrt(2 * bits * vartheta)
    total = 0.0
    for a, b in ((x, t), (x, x), (t, t)):
        d = torch.cdist(a, b)
        total = total + (sim * d ** 2).mean() + ((1 - sim) * torch.clamp(m - d, min=0) ** 2).mean()
    return total


def test_loss_equals_spec_formula_on_random_inputs():
    torch.manual_seed(0)
    model = DCMHT(TinyBackbone(), bits=6, vartheta=0.5)
    for _ in range(3):
        x = torch.softmax(torch.randn(10, 6, 2), -1).view(10, 12)
        t = torch.softmax(torch.randn(10, 6, 2), -1).view(10, 12)
        labels = (torch.rand(10, 5) < 0.3).float()
        losses = model.loss({"image": x, "text": t}, {"label": labels})
        assert float(losses["total"]) == pytest.approx(float(spec_loss(x, t, labels, 6, 0.5)), rel=1e-5)
        assert set(losses) == {"i2t_pos", "i2t_neg", "i2i_pos", "i2i_neg", "t2t_pos", "t2t_neg", "total"}


def test_hand_checkable_cases():
    disjoint = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sim = (disjoint @ disjoint.t() > 0).float()
    one_hot = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos, neg = pair_loss(one_hot, one_hot, sim, margin=1.0)
    assert float(pos) == 0.0 and float(neg) == 0.0
    half = torch.full((2, 2), 0.5)
    pos, neg = pair_loss(half, half, sim, margin=1.0)
    assert float(pos) == 0.0 and float(neg) == pytest.approx(0.5)


def test_perfect_one_hot_codes_give_zero_loss():
    model = DCMHT(TinyBackbone(), bits=4, vartheta=0.5)
    codes = {0: [1, 1, 0, 0], 1: [0, 0, 1, 1]}  # classes differ in all 4 bits >= vartheta*K
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    rows = [codes[0], codes[0], codes[1]]
    x = torch.stack([torch.nn.functional.one_hot(torch.tensor(r), 2).float().view(-1) for r in rows])
    assert float(model.loss({"image": x, "text": x.clone()}, {"label": labels})["total"]) == pytest.approx(0.0, abs=1e-10)


def test_binarize_is_argmax_of_each_pair_with_tie_to_minus_one():
    pairs = torch.tensor([[0.2, 0.8, 0.9, 0.1, 0.5, 0.5]])
    assert argmax_codes(pairs).tolist() == [[1.0, -1.0, -1.0]]


def test_select_head_shapes_init_and_gradients_without_nan():
    torch.manual_seed(0)
    head = SelectHead(8, bits=16)
    bound = math.sqrt(3.0)
    assert head.select.weight.abs().max() <= bound and head.select.weight.abs().max() > 1.0
    out = head(torch.randn(5, 8))
    assert out.shape == (5, 32)
    assert torch.allclose(out.view(5, 16, 2).sum(-1), torch.ones(5, 16))
    model = DCMHT(TinyBackbone(), bits=16)
    x = model.encode_image(torch.randn(5, 4))
    loss = model.loss({"image": x, "text": x}, {"label": torch.eye(5)})["total"]
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_framework_head_option_adds_quantisation_and_handles_batch_of_one():
    model = DCMHT(TinyBackbone(), bits=4, head="framework")
    assert model.quan_alpha == 0.001
    model.eval()
    out = model.encode_image(torch.randn(1, 4))
    assert out.shape == (1, 8)
    losses = model.loss({"image": out, "text": out}, {"label": torch.ones(1, 2)})
    q = 1 - (2 * out - 1).pow(2).mean()
    assert float(losses["quant"]) == pytest.approx(float(q))
