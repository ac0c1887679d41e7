import pytest
import torch

from models.baseline.clip_baseline import CLIPBaseline, likelihood_loss
from tests.stubs import TinyBackbone



def test_hand_checkable_likelihood_value():
    hv = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    ht = torch.tensor([[1.0, 1.0], [-1.0, 1.0]])
    sim = torch.eye(2)
    pair = (likelihood_loss(hv, ht, sim) + likelihood_loss(ht, hv, sim.t())) / 2
    assert float(pair) == pytest.approx(0.753204, abs=1e-6)


def test_loss_terms_against_independent_formula():
    torch.manual_seed(0)
    model = CLIPBaseline(TinyBackbone(), bits=6, quan_alpha=0.5)
    hv, ht = torch.tanh(torch.randn(7, 6)), torch.tanh(torch.randn(7, 6))
    labels = (torch.rand(7, 4) < 0.4).float()
    sim = (labels @ labels.t() > 0).float()
    expected_pair = 0.0
    for a, b, s in ((hv, ht, sim), (ht, hv, sim.t())):
        theta = torch.clamp(0.5 * a @ b.t(), -64, 64)
        expected_pair += -(s * theta - torch.log1p(torch.exp(theta))).mean() / 2
    quant = (((hv - hv.sign()) ** 2).mean() + ((ht - ht.sign()) ** 2).mean()) / 2
    losses = model.loss({"image": hv, "text": ht}, {"label": labels})
    assert float(losses["pair"]) == pytest.approx(float(expected_pair), rel=1e-6)
    assert float(losses["quant"]) == pytest.approx(float(quant), rel=1e-6)
    assert float(losses["total"]) == pytest.approx(float(expected_pair + 0.5 * quant), rel=1e-6)


def test_separate_heads_by_default_and_shared_option():
    assert CLIPBaseline(TinyBackbone(), bits=4).text_hash is not CLIPBaseline(TinyBackbone(), bits=4).image_hash
    shared = CLIPBaseline(TinyBackbone(), bits=4, share_hash_mlp=True)
    assert shared.text_hash is shared.image_hash
    codes = shared.binarize(torch.tensor([[0.0, -0.1, 0.3]]))
    assert codes.tolist() == [[1.0, -1.0, 1.0]]
