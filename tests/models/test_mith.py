import math

import pytest
import torch

from models.backbones.clip import CLIPBackbone
from models.MITH import head as mith_head
from models.MITH.head import BitwiseHashing, localized_token_aggregation, sinusoid_positions
from models.MITH.losses import bank_likelihood, distillation, instance_contrast, token_contrast
from models.MITH.model import MITH

BITS = 16


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return CLIPBackbone(arch="tiny")


def make_model(backbone, num_train=12, num_classes=4, **kwargs):
    torch.manual_seed(1)
    return MITH(backbone, num_train=num_train, bits=BITS, num_classes=num_classes, **kwargs)


def make_batch(backbone, index=(0, 3, 5, 7)):
    gen = torch.Generator().manual_seed(2)
    captions = ["a red circle", "blue square and a green cross !!", "x", "a photo of some big yellow triangle"]
    b = len(index)
    return {"image": torch.randn(b, 3, 32, 32, generator=gen), "text": backbone.tokenizer()(captions[:b]),
            "label": torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0], [1, 1, 0, 0]])[:b],
            "index": torch.tensor(index)}


# ---------------------------------------------------------------------- independent spec formulas (§2-3)
def spec_lta(x, a, top_k, mask):
    """LTA with explicit loops over samples, tokens and concepts (spec §2.2 LCT step 1)."""
    b_size, length, k_size = a.shape
    kept = torch.full_like(a, float("-inf"))
    for b in range(b_size):
        for l in range(length):
            if mask is not None and mask[b, l]:
                continue
            positive = [float(v) for v in a[b, l] if v > 0]
            if not positive:
                continue
            kth = sorted(positive, reverse=True)[min(top_k, len(positive)) - 1]
            for k in range(k_size):
                if a[b, l, k] > 0 and a[b, l, k] >= kth:
                    kept[b, l, k] = a[b, l, k]
    out = torch.zeros(b_size, k_size, x.shape[-1])
    for b in range(b_size):
        for k in range(k_size):
            column = kept[b, :, k]
            if torch.isinf(column).all():
                continue
            weights = torch.exp(column - column.max())
            weights = weights / weights.sum()
            out[b, k] = (weights[:, None] * x[b]).sum(0)
    return out


def spec_nll(bank, h, s):
    theta = 0.5 * torch.clamp(bank @ h.t(), -64, 64)
    return -(s * theta - torch.log(1 + torch.exp(theta))).mean()


def spec_ce(logits, target):
    return -(logits.log_softmax(-1)[torch.arange(len(target)), target]).mean()


def spec_terms(out, banks, s, batch_size):
    vg, vl, tg, tl = out["image_global"], out["image_local"], out["text_global"], out["text_local"]
    bc = torch.sign(0.99 * vg + 0.01 * vl + 0.99 * tg + 0.01 * tl)
    m = out["image_feature"] @ out["text_feature"].t() / 0.07
    diag = torch.arange(batch_size)
    inst = 0.5 * (spec_ce(m, diag) + spec_ce(m.t(), diag))
    rows, cols = [], []
    for b in range(batch_size):
        mb = out["image_concepts"][b] @ out["text_concepts"][b].t() / 0.07
        rows.append(mb)
        cols.append(mb.t())
    tok_target = torch.arange(BITS).repeat(batch_size)
    tok = 0.5 * (spec_ce(torch.cat(rows), tok_target) + spec_ce(torch.cat(cols), tok_target))
    sq = lambda a, b: ((a - b) ** 2).sum()  # noqa: E731
    return {
        "intra": 1.0 * (spec_nll(banks["image_local"], vl, s) + spec_nll(banks["text_local"], tl, s)),
        "inter": 10.0 * (spec_nll(banks["image_global"], tg, s) + spec_nll(banks["text_global"], vg, s)),
        "quant": 8.0 * ((((0.5 * vg + 0.5 * vl) - bc) ** 2).sum() / (batch_size * BITS)
                        + (((0.5 * tg + 0.5 * tl) - bc) ** 2).sum() / (batch_size * BITS)),
        "contrast": 50.0 * (inst + 0.01 * tok),
        "distill": 1.0 * (sq(vl, vg) + sq(tl, tg) + 0.1 * (sq(vg, vl) + sq(tg, tl))) / batch_size,
    }


def random_outputs(batch_size, dim=64, seed=3):
    gen = torch.Generator().manual_seed(seed)

    def unit(*shape):
        v = torch.randn(*shape, generator=gen)
        return v / v.norm(dim=-1, keepdim=True)

    out = {}
    for m in ("image", "text"):
        out[f"{m}_global"] = torch.tanh(2 * torch.randn(batch_size, BITS, generator=gen))
        out[f"{m}_local"] = torch.tanh(2 * torch.randn(batch_size, BITS, generator=gen))
        out[f"{m}_feature"] = unit(batch_size, dim)
        out[f"{m}_concepts"] = unit(batch_size, BITS, dim)
    return out


# ---------------------------------------------------------------------- tests
def test_shapes_codes_and_batch_of_one(backbone):
    model = make_model(backbone).eval()
    batch = make_batch(backbone)
    out = model(batch)
    for m in ("image", "text"):
        assert out[f"{m}_global"].shape == out[f"{m}_local"].shape == (4, BITS)
        assert out[f"{m}_feature"].shape == (4, 64) and out[f"{m}_concepts"].shape == (4, BITS, 64)
        assert torch.allclose(out[f"{m}_concepts"].norm(dim=-1), torch.ones(4, BITS))
    for m, codes in (("image", model.encode_image(batch["image"])), ("text", model.encode_text(batch["text"]))):
        assert torch.allclose(codes, out[f"{m}_global"] + out[f"{m}_local"], atol=1e-6)  # sign(h^g + h^l)
        binary = model.binarize(codes)
        assert binary.shape == (4, BITS) and set(binary.unique().tolist()) <= {-1.0, 1.0}
    assert model.encode_text(batch["text"][:1]).shape == (1, BITS)
    assert model.encode_image(batch["image"][:1]).shape == (1, BITS)


def test_lta_matches_loops_with_masks_ties_and_empty_concepts():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 5, generator=gen)
    a = torch.randn(3, 6, 10, generator=gen)
    a[0, 1] = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, -0.1])  # nine-way tie: all kept
    a[1, 2] = -a[1, 2].abs()  # a token with no positive score votes for nothing
    a[:, :, 9] = -1.0  # a concept no token votes for -> zero vector
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[2, 4:] = True
    for m in (None, mask):
        got = localized_token_aggregation(x, a, 3, m)
        assert torch.allclose(got, spec_lta(x, a, 3, m), atol=1e-6)
    assert (localized_token_aggregation(x, a, 3, mask)[:, 9] == 0).all()
    # Tokens that are masked or vote for nothing take no part.
    y = x.clone()
    y[2, 4:] += 100.0
    assert torch.allclose(localized_token_aggregation(y, a, 3, mask), localized_token_aggregation(x, a, 3, mask))


def test_positional_encoding_values():
    pe = sinusoid_positions(16, 64)
    k, i = 5, 3
    assert float(pe[k, 2 * i]) == pytest.approx(math.sin(k / 10000 ** (2 * i / 64)) / 8, abs=1e-7)
    assert float(pe[k, 2 * i + 1]) == pytest.approx(math.cos(k / 10000 ** (2 * i / 64)) / 8, abs=1e-7)


def test_bit_k_reads_concept_token_k_alone():
    torch.manual_seed(0)
    layer = BitwiseHashing(8, 5)
    assert layer.weight.abs().max() <= 1 / math.sqrt(8) and layer.bias.abs().max() <= 1 / math.sqrt(8)
    concepts = torch.randn(3, 5, 8)
    moved = concepts.clone()
    moved[:, 2] += 1.0
    changed = (layer(moved) != layer(concepts)).any(0)
    assert changed.tolist() == [False, False, True, False, False]
    expected = torch.tanh(torch.stack([concepts[:, k] @ layer.weight[k] + layer.bias[k] for k in range(5)], 1))
    assert torch.allclose(layer(concepts), expected, atol=1e-6)


def test_text_masks_follow_the_reference(backbone, monkeypatch):
    model = make_model(backbone)
    batch = make_batch(backbone)
    seen = {}
    encode_text = backbone.encode_text

    def spy_encode(text, return_tokens=False, key_padding_mask=None):
        seen["clip"] = key_padding_mask
        return encode_text(text, return_tokens=return_tokens, key_padding_mask=key_padding_mask)

    def spy_lta(tokens, scores, top_k, mask=None):
        seen["lta"] = mask
        assert not scores.requires_grad and top_k == 8
        return localized_token_aggregation(tokens, scores, top_k, mask)

    monkeypatch.setattr(backbone, "encode_text", spy_encode)
    monkeypatch.setattr(mith_head, "localized_token_aggregation", spy_lta)
    model.text_parts(batch["text"])
    text = batch["text"]
    assert torch.equal(seen["clip"], text == 0)
    assert torch.equal(seen["lta"], (text == 0) | (text == 49407))
    assert not seen["lta"][:, 0].any()  # SOT stays a candidate


def test_every_loss_term_equals_the_spec_formula(backbone):
    model = make_model(backbone, num_train=10, num_classes=4)
    gen = torch.Generator().manual_seed(4)
    train_labels = (torch.rand(10, 4, generator=gen) < 0.4).float()
    model.set_train_labels(train_labels)
    banks = {n: getattr(model, f"{n}_bank").clone() for n in ("image_local", "image_global", "text_local",
                                                                "text_global")}
    index = torch.tensor([2, 7, 0, 9, 4])
    labels = (torch.rand(5, 4, generator=gen) < 0.5).float()
    out = random_outputs(5)
    losses = model.loss(out, {"label": labels, "index": index})
    for name, bank in banks.items():  # the batch rows are written before the loss
        bank[index] = out[name]
        assert torch.equal(getattr(model, f"{name}_bank"), bank)
    s = (train_labels @ labels.t() > 0).float()
    expected = spec_terms(out, banks, s, 5)
    assert set(losses) == {*expected, "total"}
    for name, value in expected.items():
        assert float(losses[name]) == pytest.approx(float(value), rel=1e-5), name
    assert float(losses["total"]) == pytest.approx(float(sum(expected.values())), rel=1e-5)


def test_hand_checkable_values():
    # Spec §7.3: bank row and code all +1 (K = 16), similar: log(1 + e^8) - 8.
    ones = torch.ones(1, 16, dtype=torch.float64)
    assert float(bank_likelihood(ones, ones, torch.ones(1, 1))) == pytest.approx(3.3541e-4, rel=1e-4)
    # float32 keeps ~1e-6 of log(1 + e^8) ~ 8, so the difference is good to ~1e-3 relative (as in the reference).
    assert float(bank_likelihood(ones.float(), ones.float(), torch.ones(1, 1))) == pytest.approx(3.3541e-4, rel=3e-3)
    # Inner products beyond +-64 are clamped before halving: theta = 32.
    big = torch.ones(1, 100)
    assert float(bank_likelihood(big, big, torch.zeros(1, 1))) == pytest.approx(32.0, rel=1e-6)
    # Spec §7.3: identical, perfectly aligned unit vectors -> log B in each direction.
    same = torch.nn.functional.normalize(torch.ones(6, 8), dim=-1)
    assert float(instance_contrast(same, same, 0.07)) == pytest.approx(math.log(6), rel=1e-6)
    tokens = torch.nn.functional.normalize(torch.ones(2, 5, 8), dim=-1)
    assert float(token_contrast(tokens, tokens, 0.07)) == pytest.approx(math.log(5), rel=1e-6)


def test_distillation_gradients_are_one_way_full_and_feedback_tenth():
    teacher = torch.tensor([[0.5, -0.2]], requires_grad=True)
    student = torch.tensor([[0.1, 0.3]], requires_grad=True)
    distillation(teacher, student).backward()
    diff = (student - teacher).detach()
    assert torch.allclose(student.grad, 2 * diff)
    assert torch.allclose(teacher.grad, -0.2 * diff)


def test_banks_start_as_four_independent_normal_draws_and_gradients_reach_every_parameter(backbone):
    model = make_model(backbone, num_train=500)
    banks = [getattr(model, f"{n}_bank") for n in ("image_local", "image_global", "text_local", "text_global")]
    for i, bank in enumerate(banks):
        assert bank.shape == (500, BITS) and abs(float(bank.std()) - 1) < 0.05
        assert all(not torch.equal(bank, other) for other in banks[i + 1:])
    assert all(f"{n}_bank" in model.state_dict() for n in ("image_local", "text_global"))
    assert "train_labels" not in model.state_dict()
    model.set_train_labels((torch.rand(500, 4) < 0.3).float())
    batch = make_batch(backbone)
    model.loss(model(batch), batch)["total"].backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_labels_required_and_unlabelled_data(backbone):
    model = make_model(backbone)
    batch = make_batch(backbone)
    with pytest.raises(RuntimeError, match="before_training"):
        model.loss(model(batch), batch)
    with pytest.raises(ValueError, match="shape"):
        model.set_train_labels(torch.zeros(5, 4))
    pairs = make_model(backbone, num_classes=None)
    sim = pairs.similarity({"index": torch.tensor([1, 4])})
    assert sim.shape == (12, 2) and sim.sum() == 2 and sim[1, 0] == 1 and sim[4, 1] == 1


def test_bad_config_values(backbone):
    with pytest.raises(ValueError, match="model.top_k_label"):
        MITH(backbone, num_train=4, bits=4)


def test_banks_survive_resume_and_the_hook_hands_the_training_labels_again(small_run, make_runner, tmp_path):
    """Learning is checked by tests/models/test_contract.py; here the MITH-specific state."""
    opts = small_run(epochs=1)
    runner = make_runner("configs/MITH/synthetic.yaml", opts, tmp_path / "run")
    runner.fit()
    runner.close()
    resumed = make_runner("configs/MITH/synthetic.yaml", opts, tmp_path / "resumed")
    assert not torch.equal(resumed.model.image_local_bank, runner.model.image_local_bank)
    resumed.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", resume=True)
    for name in ("image_local", "image_global", "text_local", "text_global"):
        assert torch.equal(getattr(resumed.model, f"{name}_bank"), getattr(runner.model, f"{name}_bank"))
    resumed.model.before_training(resumed.training_context())
    assert torch.equal(resumed.model.train_labels, runner.data.train.labels)
    resumed.close()
