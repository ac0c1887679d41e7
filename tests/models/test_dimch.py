import math

import pytest
import torch
import torch.nn.functional as F

from models.backbones.clip import CLIPBackbone
from models.DIMCH.losses import diversity, mmd, set_similarity
from models.DIMCH.model import DIMCH, InstanceHashHead
from models.losses import ranking_gains, weighted_triplet

WEIGHTS = {"token_triplet": 50.0, "mmd": 1.0, "diversity": 0.3, "hash_triplet": 50.0, "quant": 1.0}


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return CLIPBackbone(arch="tiny")


def make_batch(backbone, size, seed=0):
    gen = torch.Generator().manual_seed(seed)
    text = torch.randint(1, 400, (size, backbone.context_length), generator=gen)
    lengths = torch.randint(3, backbone.context_length, (size,), generator=gen)
    for row, n in enumerate(lengths.tolist()):
        text[row, 0], text[row, n], text[row, n + 1:] = 49406, 49407, 0
    labels = (torch.rand(size, 5, generator=gen) < 0.4).float()
    labels[torch.arange(size), torch.randint(0, 5, (size,), generator=gen)] = 1.0
    return {"image": torch.randn(size, 3, 32, 32, generator=gen), "text": text, "label": labels,
            "index": torch.arange(size)}


# ---------------------------------------------------------------------- independent spec formulas
def spec_set_similarity(x, y, m, mode, tau=16.0, s=1.0, delta=2.0):
    """Spec §2.3 with explicit loops over item pairs."""
    bx, by = x.shape[0] // m, y.shape[0] // m
    out = torch.zeros(bx, by, dtype=torch.float64)
    for i in range(bx):
        for j in range(by):
            c = x[i * m:(i + 1) * m].double() @ y[j * m:(j + 1) * m].double().t()  # c[a, b]
            if mode == "smooth_chamfer":
                left = sum(math.log(sum(math.exp(tau * s * float(c[a, b])) for b in range(m))) for a in range(m))
                right = sum(math.log(sum(math.exp(tau * float(c[a, b])) for a in range(m))) for b in range(m))
                out[i, j] = (left / (m * tau * s) + right / (m * tau)) / delta
            elif mode == "chamfer":
                out[i, j] = (c.max(dim=1).values.mean() + c.max(dim=0).values.mean()) / delta
            elif mode == "max":
                out[i, j] = c.max()
            else:
                out[i, j] = torch.sigmoid(c).mean()
    return out


def spec_triplet(dist, labels, margin):
    """Spec §3.1 as an explicit triple sum with gains from a sorted ideal DCG."""
    n = (labels @ labels.t()).double()
    b = len(n)
    total, active = 0.0, 0
    for i in range(b):
        ideal = sorted(n[i].tolist(), reverse=True)
        z = sum((2 ** v - 1) / math.log2(r + 2) for r, v in enumerate(ideal))
        for j in range(b):
            for k in range(b):
                if n[i, j] > 0 and n[i, k] == 0:
                    g = (2 ** float(n[i, j]) - 1) / z
                    value = max(0.0, g * (float(dist[i, j]) - float(dist[i, k]) + margin))
                    total += value
                    active += value > 1e-16
    return total / (active + 1e-16)


def spec_mmd(x, y, gamma):
    def mean_kernel(a, b):
        return sum(math.exp(-gamma * float((p.double() - q.double()).norm())) for p in a for q in b) / (len(a) * len(b))
    return mean_kernel(x, x) - 2 * mean_kernel(x, y) + mean_kernel(y, y)


def spec_diversity_pairs(e, m):
    """Spec §3.4: pairs a < c of all B*M rows."""
    rows = e.double()
    total = sum(math.exp(-20 * float((rows[a] - rows[c]).pow(2).sum()))
                for a in range(len(rows)) for c in range(a + 1, len(rows)))
    return total / (m * (m - 1) / 2)


def reference_cubic_diversity(embs, num_embeds, t=20):
    """The reference's batchwise_uniformity_loss on a 2-D input, re-typed with its (BM)^3 mask tensor."""
    rbf = torch.exp(-t * torch.cdist(embs, embs).pow(2))
    n = rbf.shape[1]
    upper = torch.triu(torch.ones(n, n), diagonal=1)[None].repeat(rbf.shape[0], 1, 1)
    masked = torch.where(upper == 1, rbf, torch.zeros_like(rbf))
    return (torch.stack([r.sum() for r in masked]) / (num_embeds * (num_embeds - 1) * 0.5)).mean()


def spec_terms(out, labels, m):
    ev = F.normalize(out["image_instances"].reshape(-1, out["image_instances"].shape[-1]), dim=-1)
    et = F.normalize(out["text_instances"].reshape(-1, out["text_instances"].shape[-1]), dim=-1)
    sim = spec_set_similarity(ev, et, m, "smooth_chamfer")
    sim_t = spec_set_similarity(et, ev, m, "smooth_chamfer")
    hv, ht = out["image"].double(), out["text"].double()
    cos = (hv / hv.norm(dim=1, keepdim=True)) @ (ht / ht.norm(dim=1, keepdim=True)).t()
    dh = (1 - cos).clamp(min=0)
    dh_t = (1 - cos.t()).clamp(min=0)
    quant = [((h - torch.where(h >= 0, 1.0, -1.0).double()) ** 2).mean() for h in (hv, ht)]
    return {
        "token_triplet": (spec_triplet((1 - sim).clamp(min=0), labels, 0.3)
                          + spec_triplet((1 - sim_t).clamp(min=0), labels, 0.3)) / 2,
        "mmd": spec_mmd(ev, et, 0.5),
        "diversity": spec_diversity_pairs(ev, m) + spec_diversity_pairs(et, m),
        "hash_triplet": (spec_triplet(dh, labels, 0.3) + spec_triplet(dh_t, labels, 0.3)) / 2,
        "quant": float(sum(quant) / 2),
    }


def random_outputs(b, m, k, seed):
    gen = torch.Generator().manual_seed(seed)
    return {"image_instances": torch.randn(b, m, k, generator=gen),
            "text_instances": torch.randn(b, m, k, generator=gen),
            "image": torch.tanh(torch.randn(b, k, generator=gen)), "text": torch.tanh(torch.randn(b, k, generator=gen))}


# ---------------------------------------------------------------------- model
def test_shapes_binarisation_and_pooling(backbone):
    model = DIMCH(backbone, bits=12, set_size=4).eval()
    batch = make_batch(backbone, 3)
    out = model(batch)
    assert out["image_instances"].shape == (3, 4, 12) and out["text_instances"].shape == (3, 4, 12)
    assert torch.allclose(out["image"], torch.tanh(out["image_instances"].mean(dim=1)))
    assert torch.allclose(out["text"], torch.tanh(out["text_instances"].mean(dim=1)))
    for code in (model.encode_image(batch["image"]), model.encode_text(batch["text"])):
        binary = model.binarize(code)
        assert binary.shape == (3, 12) and set(binary.unique().tolist()) <= {-1.0, 1.0}
    assert model.encode_image(batch["image"][:1]).shape == (1, 12)  # a batch of one keeps its batch axis
    assert model.image_head.instances.in_channels == 17 and model.text_head.instances.in_channels == 32
    assert model.supports_feature_cache
    cached = model({"image_features": model.image_features(batch["image"]),
                    "text_features": model.text_features(batch["text"])})
    assert all(torch.equal(cached[k], out[k]) for k in out)


@pytest.mark.parametrize("size", [17, 32, 50])
def test_batches_as_large_as_a_token_count_are_encoded_like_any_other(backbone, size):
    # The reference swaps axes when the batch equals the token count (50 image tokens, 32 text positions);
    # the tiny CLIP has 17 image tokens and 32 text positions.
    model = DIMCH(backbone, bits=8).eval()
    batch = make_batch(backbone, size)
    with torch.no_grad():
        for encode, inputs in ((model.encode_image, batch["image"]), (model.encode_text, batch["text"])):
            whole = encode(inputs)
            parts = torch.cat([encode(inputs[i:i + 7]) for i in range(0, size, 7)])
            assert torch.allclose(whole, parts, atol=1e-5)


def test_head_rejects_a_wrong_token_layout():
    head = InstanceHashHead(tokens=50, dim=16, bits=8, set_size=4, dropout=0.0)
    assert head(torch.randn(3, 50, 16))[0].shape == (3, 4, 8)
    with pytest.raises(ValueError, match=r"\(batch, 50, dim\)"):
        head(torch.randn(50, 3, 16))


def test_head_init_follows_the_reference():
    torch.manual_seed(0)
    head = InstanceHashHead(tokens=50, dim=512, bits=64, set_size=8, dropout=0.3)
    assert head.instances.weight.std().item() == pytest.approx(math.sqrt(2 / 150), rel=0.05)
    first, last = head.mlp.net[0], head.mlp.net[3]
    assert first.weight.shape == (256, 512) and last.weight.shape == (64, 256)
    assert first.weight.abs().max() <= math.sqrt(6 / 256) and last.weight.abs().max() <= math.sqrt(6 / 64)
    assert head.instances.bias.abs().sum() == 0 and first.bias.abs().sum() == 0 and last.bias.abs().sum() == 0


# ---------------------------------------------------------------------- loss pieces
@pytest.mark.parametrize("mode", ["smooth_chamfer", "chamfer", "max", "avg"])
def test_set_similarity_equals_the_spec_formula(mode):
    gen = torch.Generator().manual_seed(1)
    x = F.normalize(torch.randn(3 * 4, 6, generator=gen), dim=-1)
    y = F.normalize(torch.randn(2 * 4, 6, generator=gen), dim=-1)
    got = set_similarity(x, y, 4, mode)
    assert torch.allclose(got.double(), spec_set_similarity(x, y, 4, mode), atol=1e-5)
    if mode == "smooth_chamfer":
        assert float(got.max()) <= 1 + math.log(4) / 16
        scaled = set_similarity(x, y, 4, mode, txt_scale=0.5, denominator=3.0)
        assert torch.allclose(scaled.double(), spec_set_similarity(x, y, 4, mode, s=0.5, delta=3.0), atol=1e-5)


def test_set_similarity_is_symmetric_under_swap():
    gen = torch.Generator().manual_seed(2)
    x = F.normalize(torch.randn(5 * 3, 8, generator=gen), dim=-1)
    y = F.normalize(torch.randn(5 * 3, 8, generator=gen), dim=-1)
    assert torch.allclose(set_similarity(y, x, 3), set_similarity(x, y, 3).t(), atol=1e-6)


def test_triplet_hand_checkable_values():
    labels = torch.tensor([[1.0, 1, 0], [1, 0, 0], [0, 0, 1]])
    dist = torch.tensor([[0.30, 0.45, 0.50], [0.20, 0.10, 0.60], [0.70, 0.20, 0.25]])
    gains = ranking_gains(labels @ labels.t())
    assert float(gains[0, 0]) == pytest.approx(3 / (3 + 1 / math.log2(3)), abs=1e-4)
    assert [round(float(gains[i, j]), 4) for i, j in ((0, 1), (1, 0), (1, 1), (2, 2))] == [0.2754, 0.6131, 0.6131, 1.0]
    assert float(weighted_triplet(dist, labels @ labels.t(), 0.3)) == pytest.approx(0.167159, abs=1e-5)
    assert float(weighted_triplet(dist, labels @ labels.t(), 0.1)) == pytest.approx(0.081885, abs=1e-5)


def test_triplet_equals_the_explicit_triple_sum_and_skips_unlabelled_anchors():
    gen = torch.Generator().manual_seed(3)
    labels = (torch.rand(9, 4, generator=gen) < 0.4).float()
    labels[0] = 0.0  # no label: forms no triplet, never NaN
    labels[1:, 0] = 1.0
    labels[8] = torch.tensor([0.0, 0, 0, 1])
    dist = torch.rand(9, 9, generator=gen)
    got = weighted_triplet(dist, labels @ labels.t(), 0.2)
    assert torch.isfinite(got)
    assert float(got) == pytest.approx(spec_triplet(dist, labels, 0.2), rel=1e-5)  # anchor 0 has no positive


@pytest.mark.parametrize("rows,cols,margin", [(40, 40, 0.1), (30, 45, 0.3)])
def test_triplet_value_and_gradient_equal_the_full_triplet_tensor(rows, cols, margin):
    """The O(B^2) sorted form against the reference's (B, B', B') tensor of every triplet, gradient included."""
    gen = torch.Generator().manual_seed(rows)
    anchors, candidates = (torch.rand(rows, 6, generator=gen) < 0.3).double(), (torch.rand(cols, 6, generator=gen) < 0.3)
    shared = anchors @ candidates.double().t()
    dist = torch.rand(rows, cols, generator=gen, dtype=torch.float64, requires_grad=True)
    relevant = (shared > 0).double()
    triplets = torch.relu((ranking_gains(shared) * relevant)[:, :, None] * (1 - relevant[:, None, :])
                          * (dist[:, :, None] - dist[:, None, :] + margin))
    want = triplets.sum() / (triplets.gt(1e-16).sum() + 1e-16)
    got = weighted_triplet(dist, shared, margin)
    assert float(got) == pytest.approx(float(want), rel=1e-12)
    assert torch.allclose(torch.autograd.grad(got, dist)[0], torch.autograd.grad(want, dist)[0], rtol=0, atol=1e-15)


def test_mmd_equals_the_spec_formula():
    gen = torch.Generator().manual_seed(4)
    x = F.normalize(torch.randn(10, 5, generator=gen), dim=-1)
    y = F.normalize(torch.randn(8, 5, generator=gen), dim=-1)
    assert float(mmd(x, y, 0.5)) == pytest.approx(spec_mmd(x, y, 0.5), rel=1e-5)
    assert float(mmd(x, x, 0.5)) == pytest.approx(0.0, abs=1e-6)


def test_diversity_closed_form_equals_the_reference_routine_and_the_pair_sum():
    gen = torch.Generator().manual_seed(5)
    e = F.normalize(torch.randn(4 * 3, 6, generator=gen), dim=-1)
    e[5] = e[2]  # duplicates count fully
    got = float(diversity(e, 3))
    assert got == pytest.approx(float(reference_cubic_diversity(e, 3)), rel=1e-5)
    assert got == pytest.approx(spec_diversity_pairs(e, 3), rel=1e-5)
    per_item = sum(spec_diversity_pairs(e[i * 3:(i + 1) * 3], 3) for i in range(4)) / 4
    assert float(diversity(e, 3, "sample")) == pytest.approx(per_item, rel=1e-5)
    assert float(diversity(e, 1)) == 0.0
    # hand-checkable: two identical instances of one item and nothing else -> exp(0) / 1 = 1
    assert float(diversity(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), 2)) == pytest.approx(1.0)


def test_every_loss_term_equals_the_spec_formula(backbone):
    model = DIMCH(backbone, bits=6, set_size=3)
    gen = torch.Generator().manual_seed(6)
    for seed in range(2):
        out = random_outputs(5, 3, 6, seed)
        labels = (torch.rand(5, 4, generator=gen) < 0.4).float()
        labels[torch.arange(5), torch.randint(0, 4, (5,), generator=gen)] = 1.0
        losses = model.loss(out, {"label": labels, "index": torch.arange(5)})
        expected = spec_terms(out, labels, 3)
        assert set(losses) == {*expected, "total"}
        for name, value in expected.items():
            assert float(losses[name]) == pytest.approx(value, rel=1e-4, abs=1e-6), name
        total = sum(WEIGHTS[name] * value for name, value in expected.items())
        assert float(losses["total"]) == pytest.approx(total, rel=1e-4)


def test_unlabelled_data_uses_each_pair_as_its_own_class(backbone):
    model = DIMCH(backbone, bits=6, set_size=3)
    out = random_outputs(4, 3, 6, 7)
    without = model.loss(out, {"index": torch.tensor([5, 9, 2, 7])})
    with_eye = model.loss(out, {"label": torch.eye(4), "index": torch.arange(4)})
    for name in without:
        assert float(without[name]) == pytest.approx(float(with_eye[name]), rel=1e-6)


def test_gradients_reach_every_parameter(backbone):
    model = DIMCH(CLIPBackbone(arch="tiny"), bits=8, set_size=4)
    batch = make_batch(backbone, 6)
    losses = model.loss(model(batch), batch)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["total"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_state_round_trip_is_exact(backbone):
    model = DIMCH(backbone, bits=8, set_size=4).eval()
    restored = DIMCH(CLIPBackbone(arch="tiny"), bits=8, set_size=4).eval()
    restored.load_state_dict(model.state_dict())
    batch = make_batch(backbone, 4)
    assert torch.equal(model.encode_image(batch["image"]), restored.encode_image(batch["image"]))
    assert torch.equal(model.encode_text(batch["text"]), restored.encode_text(batch["text"]))
    assert not list(model.buffers()) or all(name.startswith("backbone.") for name, _ in model.named_buffers())


def test_bad_config_values(backbone):
    with pytest.raises(ValueError, match="model.dropout"):
        DIMCH(backbone, bits=8, dropout=1.0)
