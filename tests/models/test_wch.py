"""WCH's pieces against the worked numbers of its spec (§16) and against independent loop computations.

The model as a whole (codes, gradients to every parameter, learning, resume) is covered by
tests/models/test_contract.py from configs/WCH/synthetic.yaml.
"""
import itertools

import numpy as np
import pytest
import torch

from models.WCH.losses import (bit_regularizer, mutual_attention, patch_similarity, similarity_weights,
                               straight_through_sign, weighted_contrastive)

# Spec §16: B = 2 images, N = 2 patches, D = 2.
Z1 = torch.tensor([[[1.0, 0], [0, 1]], [[1, 2], [-1, 0]]], dtype=torch.float64)
Z2 = torch.tensor([[[1.0, 1], [0, 1]], [[0, 1], [2, 0]]], dtype=torch.float64)
H1 = torch.tensor([[1.0, 1, -1, -1], [1, -1, 1, -1]])
H2 = torch.tensor([[1.0, 1, -1, 1], [-1, -1, 1, -1]])


def test_worked_numbers_of_the_spec():
    at_view2, at_view1 = mutual_attention(Z1, Z2)
    assert at_view2.numpy() == pytest.approx(np.array([[[0.5, 0.5], [0.268941, 0.731059]],
                                                       [[0.419606, 1.419606], [0.619138, 1.619138]]]), abs=1e-6)
    assert at_view1.numpy() == pytest.approx(np.array([[[0.669762, 1], [0.427296, 1]],
                                                       [[0.780047, 0.609977], [0.537883, 0.731059]]]), abs=1e-6)
    s = patch_similarity(at_view2, at_view1)
    assert s.numpy() == pytest.approx(np.array([[0.989841, 0.976576], [0.996243, 0.952217]]), abs=1e-6)
    assert (s / 0.2).softmax(1).numpy() == pytest.approx(np.array([[0.516575, 0.483425], [0.554811, 0.445189]]),
                                                         abs=1e-6)
    weights = similarity_weights(s)
    assert weights.numpy() == pytest.approx(np.array([[1, 1.085888], [1.074018, 1]]), abs=1e-5)
    assert similarity_weights(s, norm="row").numpy() == pytest.approx(np.array([[1, 0.935825], [1.246241, 1]]),
                                                                      abs=1e-5)
    contrastive = weighted_contrastive(H1, H2, weights)
    assert float(contrastive) == pytest.approx(3.672751, abs=1e-5)
    assert float(bit_regularizer(H1)) == pytest.approx(-0.5)
    assert float(contrastive + bit_regularizer(H1)) == pytest.approx(3.172751, abs=1e-5)
    assert float(weighted_contrastive(H1, H2, torch.eye(2))) == pytest.approx(0.035052, abs=1e-6)
    assert float(weighted_contrastive(H1, H2, weights, alpha_distill=0.0)) == pytest.approx(0.035052, abs=1e-6)


def _attention_by_loops(z1: np.ndarray, z2: np.ndarray, tau: float):
    """Spec §5 written out element by element."""
    out1, out2 = np.zeros_like(z1), np.zeros_like(z2)
    for n in range(len(z1)):
        a = z1[n] / np.maximum(np.linalg.norm(z1[n], axis=1, keepdims=True), 1e-12)
        b = z2[n] / np.maximum(np.linalg.norm(z2[n], axis=1, keepdims=True), 1e-12)
        s = np.array([[a[i] @ b[j] for j in range(len(b))] for i in range(len(a))]) / tau
        for j in range(len(b)):
            column = np.exp(s[:, j]) / np.exp(s[:, j]).sum()
            out1[n, j] = sum(column[i] * z1[n, i] for i in range(len(a)))
        for i in range(len(a)):
            row = np.exp(s[i]) / np.exp(s[i]).sum()
            out2[n, i] = sum(row[j] * z2[n, j] for j in range(len(b)))
    return out1, out2


def _weights_by_loops(a: np.ndarray, b: np.ndarray, tau: float, norm: str) -> np.ndarray:
    """Spec §6 written out: best match per patch, averaged; row softmax; divided by a diagonal entry."""
    unit = lambda x: x / np.linalg.norm(x)  # noqa: E731
    count = len(a)
    s = np.array([[np.mean([max(unit(a[n, i]) @ unit(b[m, j]) for j in range(b.shape[1])) for i in range(a.shape[1])])
                   for m in range(count)] for n in range(count)])
    p = np.exp(s / tau) / np.exp(s / tau).sum(axis=1, keepdims=True)
    return np.array([[p[n, m] / (p[m, m] if norm == "column" else p[n, n]) for m in range(count)]
                     for n in range(count)])


@pytest.mark.parametrize("norm", ["column", "row"])
def test_attention_and_weights_match_independent_loops_on_random_tokens(norm):
    generator = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64), torch.randn(3, 5, 4, generator=generator,
                                                                                          dtype=torch.float64)
    at_view2, at_view1 = mutual_attention(z1, z2, temperature=0.7)
    loop2, loop1 = _attention_by_loops(z1.numpy(), z2.numpy(), 0.7)
    assert at_view2.numpy() == pytest.approx(loop2, abs=1e-12) and at_view1.numpy() == pytest.approx(loop1, abs=1e-12)
    weights = similarity_weights(patch_similarity(at_view2, at_view1), 0.2, norm)
    assert weights.numpy() == pytest.approx(_weights_by_loops(at_view2.numpy(), at_view1.numpy(), 0.2, norm), abs=1e-5)
    assert torch.equal(weights.diagonal(), torch.ones(3))
    order = torch.tensor([2, 0, 1])
    permuted = similarity_weights(patch_similarity(at_view2[order], at_view1[order]), 0.2, norm)
    assert torch.allclose(permuted, weights[order][:, order], atol=1e-6)


def test_mutual_attention_rows_are_convex_combinations_of_the_same_view():
    z1, z2 = torch.randn(2, 6, 3).abs(), -torch.randn(2, 6, 3).abs()  # view 1 positive, view 2 negative
    at_view2, at_view1 = mutual_attention(z1, z2)
    assert (at_view2 >= 0).all() and (at_view1 <= 0).all()
    assert (at_view2 <= z1.amax(1, keepdim=True) + 1e-6).all() and (at_view2 >= z1.amin(1, keepdim=True) - 1e-6).all()


def test_straight_through_sign_is_sign_forward_and_identity_backward():
    u = torch.tensor([[-0.7, 0.2, 0.0, 3.0]], requires_grad=True)
    h = straight_through_sign(u)
    assert h.tolist() == [[-1.0, 1.0, 0.0, 1.0]]
    upstream = torch.tensor([[0.5, -2.0, 1.5, 4.0]])
    (h * upstream).sum().backward()
    assert torch.equal(u.grad, upstream)


def test_weights_carry_gradient_unless_detached():
    """The official code lets the loss reach the patch features through W (spec §8); detach_weights stops it."""
    patches = torch.randn(4, 3, 5, requires_grad=True)
    relaxed = torch.randn(4, 8, requires_grad=True)
    for detach in (False, True):
        patches.grad = relaxed.grad = None
        weights = similarity_weights(patch_similarity(patches, patches.flip(0)))
        codes = straight_through_sign(relaxed)
        weighted_contrastive(codes, codes.flip(0), weights.detach() if detach else weights).backward()
        assert relaxed.grad.abs().sum() > 0
        assert (patches.grad is not None and patches.grad.abs().sum() > 0) != detach


def test_contrastive_loss_is_cross_entropy_with_soft_targets():
    """Against PyTorch's CrossEntropyLoss with probability targets, which the official code calls."""
    generator = torch.Generator().manual_seed(0)
    h1, h2 = (torch.randint(0, 2, (6, 16), generator=generator).float() * 2 - 1 for _ in range(2))
    weights = torch.rand(6, 6, generator=generator) * 2
    weights.fill_diagonal_(1.0)
    reference = torch.nn.CrossEntropyLoss()(h1 @ h2.T / (16 * 0.3), weights)
    assert float(weighted_contrastive(h1, h2, weights)) == pytest.approx(float(reference), rel=1e-6)
    half = weighted_contrastive(h1, h2, weights, alpha_distill=0.5)
    targets = weights * 0.5 + torch.eye(6) * 0.5
    assert float(half) == pytest.approx(float(torch.nn.CrossEntropyLoss()(h1 @ h2.T / 4.8, targets)), rel=1e-6)


def test_bit_regularizer_against_its_definition():
    h = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=3))[:5])
    expected = np.mean(h.numpy().mean(axis=0) ** 2) - np.mean(h.numpy() ** 2)
    assert float(bit_regularizer(h)) == pytest.approx(expected)


def test_model_trains_on_attended_tokens_and_encodes_the_plain_mean():
    """Spec §2 (training step) and §9 (codes of single images), with the head initialised as §7 says."""
    from models.backbones.vit import ViTBackbone
    from models.WCH.model import WCH

    torch.manual_seed(0)
    model = WCH(ViTBackbone(arch="tiny"), bits=16, hidden=1024).eval()
    assert float(model.head.fc.bias.detach().std()) == pytest.approx(1.0, abs=0.1)
    assert model.head.fc.weight.abs().max() <= (6 / 1024) ** 0.5
    assert model.head.hash.weight.abs().max() <= (6 / 16) ** 0.5
    assert model.head.norm.eps == 1e-6
    views = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        out = model({"image": views[0], "image2": views[1]})
        z1, z2 = (model.backbone.image_tokens(v)[:, 1:] for v in views)
        attended1, attended2 = mutual_attention(z1, z2)
        assert torch.allclose(out["patches1"], attended1, atol=1e-5) and torch.allclose(out["patches2"], attended2,
                                                                                       atol=1e-5)
        assert torch.equal(out["codes1"], torch.sign(model.head(out["patches1"].mean(1))))
        assert set(out["codes2"].unique().tolist()) <= {-1.0, 1.0}
        assert torch.allclose(model.encode_image(views[0]), model.head(z1.mean(1)), atol=1e-6)
