import math

import pytest
import torch

from models.backbones.clip import CLIPBackbone
from models.DSPH.model import DSPH, code_threshold, init_proxies
from models.heads import TanhHashHead
from tests.stubs import TinyBackbone, check_codes_and_gradients, tiny_clip_batch

CONFIG = "configs/DSPH/synthetic.yaml"
TERMS = ("image_pos", "image_neg", "text_pos", "text_neg", "irrelevant_ii", "irrelevant_tt", "irrelevant_it")


def cosine(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def loss_values(model, x, t, labels):
    with torch.no_grad():
        return {k: float(v) for k, v in model.loss({"image": x, "text": t}, {"label": labels}).items()}


def spec_terms(x, t, labels, proxies, delta, alpha):
    """DSPH.md §3.2 written out element by element in float64."""
    x, t, proxies, labels = x.double(), t.double(), proxies.double(), labels.double()
    batch, classes = labels.shape
    n_pos = sum(1 for i in range(batch) for c in range(classes) if labels[i, c] == 1)
    n_neg = sum(1 for i in range(batch) for c in range(classes) if labels[i, c] == 0)
    out = {}
    for name, codes in (("image", x), ("text", t)):
        out[f"{name}_pos"] = sum(1 - cosine(codes[i], proxies[c]) for i in range(batch) for c in range(classes)
                                 if labels[i, c] == 1) / n_pos
        out[f"{name}_neg"] = sum(max(0.0, cosine(codes[i], proxies[c]) - delta) for i in range(batch)
                                 for c in range(classes) if labels[i, c] == 0) / n_neg
    multi = [i for i in range(batch) if labels[i].sum() > 1]
    pairs = [(i, j) for i in multi for j in multi if float(labels[i] @ labels[j]) == 0]
    for name, (a, b) in (("ii", (x, x)), ("tt", (t, t)), ("it", (x, t))):
        out[f"irrelevant_{name}"] = (sum(alpha * max(0.0, cosine(a[i], b[j]) - delta) for i, j in pairs)
                                     / len(pairs) if pairs else 0.0)
    return out


@pytest.mark.parametrize("bits, classes, threshold", [(16, 5, None), (8, 20, None), (12, 7, 0.3), (16, 6, -0.2)])
def test_every_loss_term_equals_the_spec_formula_on_random_inputs(bits, classes, threshold):
    torch.manual_seed(bits + classes)
    model = DSPH(TinyBackbone(), bits=bits, num_classes=classes, threshold=threshold)
    delta = code_threshold(bits, classes) if threshold is None else threshold
    assert model.threshold == delta
    for _ in range(3):
        x, t = torch.tanh(torch.randn(12, bits)), torch.tanh(torch.randn(12, bits))
        labels = (torch.rand(12, classes) < 0.35).float()
        labels[:2] = 0
        labels[0, :2] = 1  # two multi-label samples sharing no label: the irrelevant terms are active
        labels[1, 2:4] = 1
        losses = loss_values(model, x, t, labels)
        expected = spec_terms(x, t, labels, model.proxies.detach(), delta, alpha=0.8)
        assert set(losses) == {*TERMS, "total"}
        for name in TERMS:
            assert losses[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-7), name
        assert losses["total"] == pytest.approx(sum(expected.values()), rel=1e-5)


def test_irrelevant_terms_need_multi_label_pairs_without_shared_labels():
    torch.manual_seed(0)
    model = DSPH(TinyBackbone(), bits=16, num_classes=4)
    x, t = torch.randn(4, 16), torch.randn(4, 16)
    single = torch.eye(4)  # disjoint, but single-label samples never enter the irrelevant terms
    overlapping = torch.tensor([[1.0, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 0], [1, 1, 1, 1]])
    for labels in (single, overlapping):
        losses = loss_values(model, x, t, labels)
        assert all(losses[f"irrelevant_{n}"] == 0.0 for n in ("ii", "tt", "it"))
    disjoint = torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0], [0, 1, 0, 0]])
    same = torch.ones(4, 16)  # cosine 1 between every pair, delta 0: each of the 2 ordered pairs costs alpha
    losses = loss_values(DSPH(TinyBackbone(), bits=16, num_classes=4, alpha=0.5, threshold=0.0), same, same, disjoint)
    assert all(losses[f"irrelevant_{n}"] == pytest.approx(0.5) for n in ("ii", "tt", "it"))


def test_hand_checkable_cases():
    """DSPH.md §7.3: codes on orthogonal proxies give L = 0; a code orthogonal to every proxy gives Lpos = 1."""
    classes, bits = 4, 16
    model = DSPH(TinyBackbone(), bits=bits, num_classes=classes, threshold=0.0)
    model.proxies.data.copy_(torch.eye(classes, bits) * 0.3)
    labels = torch.eye(classes)[[0, 1, 2, 3, 1]]
    codes = 0.7 * torch.eye(classes, bits)[[0, 1, 2, 3, 1]]
    losses = loss_values(model, codes, codes * 2, labels)
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in losses.values())
    one = torch.zeros(1, bits)
    one[0, classes] = 0.5
    losses = loss_values(model, one, one, torch.eye(classes)[:1])
    assert losses["image_pos"] == 1.0 and losses["image_neg"] == 0.0


@pytest.mark.parametrize("classes, column", [(24, 5), (21, 5), (80, 7)])
def test_threshold_table_gives_the_specs_values(classes, column):
    spec = {24: [0.5, 0.0, 0.0, 0.0, 0.0], 21: [0.5, 0.0, 0.0, 0.0, 0.0], 80: [0.5, 0.25, 0.125, 0.0, 0.0]}
    assert [code_threshold(k, classes) for k in (8, 16, 32, 64, 128)] == spec[classes]
    assert column == math.ceil(math.log(classes, 2))


def test_threshold_table_rows_and_column_rule():
    rows = {16: [-1, -0.25, 0, 0, 0, 0.25, 0.25, 0.375, 0.5, 0.5],
            32: [-1, -0.3125, -0.125, 0, 0, 0, 0.125, 0.1875, 0.25, 0.25],
            64: [-1, -0.3125, -0.125, -0.03125, 0, 0, 0, 0.09375, 0.125, 0.125],
            128: [-1, -0.328125, -0.125, -0.0625, 0, 0, 0, 0, 0.0625, 0.0625]}
    for bits, values in rows.items():
        assert [code_threshold(bits, 2 ** j) for j in range(1, 11)] == values
    for classes in range(2, 3000):  # the reference's float ceil(log2 C) column, including exact powers of two
        assert code_threshold(64, classes) == code_threshold(64, 2 ** math.ceil(math.log(classes, 2)))
    with pytest.raises(ValueError, match="no threshold for model.bits=4 with 24 classes"):
        code_threshold(4, 24)
    with pytest.raises(ValueError, match="set model.threshold"):
        DSPH(TinyBackbone(), bits=300, num_classes=24)
    assert DSPH(TinyBackbone(), bits=300, num_classes=24, threshold=0.1).threshold == 0.1


def test_proxies_reproduce_the_framework_init_without_touching_the_global_rng():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        expected = torch.randn(24, 16)
        torch.nn.init.kaiming_normal_(expected, mode="fan_out")
    state = torch.get_rng_state()
    model = DSPH(TinyBackbone(), bits=16, num_classes=24)
    assert torch.equal(model.proxies.detach(), expected)
    assert torch.equal(init_proxies(24, 16, 0), expected)
    assert not torch.equal(init_proxies(24, 16, 1), expected)
    torch.set_rng_state(state)
    big = init_proxies(80, 4096, 0)
    assert float(big.std()) == pytest.approx(math.sqrt(2 / 80), rel=0.02)  # N(0, 2/C)


def test_proxies_have_their_own_sgd_and_stay_out_of_the_main_groups():
    model = DSPH(TinyBackbone(), bits=4, num_classes=3)
    grouped = [p for g in model.param_groups() for p in g["params"]]
    assert all(p is not model.proxies for p in grouped)
    assert len(grouped) == sum(1 for p in model.parameters() if p is not model.proxies)
    opts = model.extra_optimizers()
    assert model.extra_optimizers() is opts and list(opts) == ["proxies"]
    group = opts["proxies"].param_groups[0]
    assert group["params"][0] is model.proxies
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.02, 0.9, 0.0005)
    before = model.proxies.detach().clone()
    buffer = torch.zeros_like(before)
    for _ in range(2):  # SGD with momentum and L2 decay: b = 0.9 b + (g + 5e-4 p); p -= 0.02 b
        opts["proxies"].zero_grad()
        (model.proxies ** 2).sum().backward()
        buffer = 0.9 * buffer + (2 * before + 0.0005 * before)
        before = before - 0.02 * buffer
        opts["proxies"].step()
        assert torch.allclose(model.proxies.detach(), before, atol=1e-7)


def test_head_applies_dropout_before_tanh():
    torch.manual_seed(0)
    head = TanhHashHead(8, 32, dropout=0.5).train()
    x = torch.randn(6, 8)
    out, pre = head(x), head.fc(x).detach()
    assert torch.all((out == 0) | torch.isclose(out, torch.tanh(2 * pre), atol=1e-6))
    assert torch.equal(head.eval()(x), torch.tanh(pre))


def test_tiny_clip_shapes_binarisation_and_gradients():
    torch.manual_seed(0)
    model = DSPH(CLIPBackbone(arch="tiny"), bits=16, num_classes=24)
    batch = tiny_clip_batch(size=4, num_classes=24)
    out = model(batch)
    assert out["image"].shape == out["text"].shape == (4, 16)
    assert model.proxies.shape == (24, 16) and model.threshold == 0.0
    check_codes_and_gradients(model, batch, out, bits=16)


def test_bad_values_fail_clearly():
    with pytest.raises(ValueError, match="num_classes"):
        DSPH(TinyBackbone(), bits=4)
    with pytest.raises(ValueError, match="model.threshold must be a cosine"):
        DSPH(TinyBackbone(), bits=4, num_classes=3, threshold=2)
    with pytest.raises(ValueError, match="needs class labels"):
        DSPH(TinyBackbone(), bits=4, num_classes=3).loss({"image": torch.zeros(2, 4), "text": torch.zeros(2, 4)},
                                                        {"index": torch.arange(2)})


def test_proxies_sized_from_the_data_train_and_their_optimiser_is_restored(small_run, make_runner, interrupted_run,
                                                                          tmp_path, one_thread):
    """Resuming to the same weights is the contract test's; here the proxies' own SGD state."""
    opts = small_run(epochs=2)
    initial = make_runner(CONFIG, opts, None).model.proxies.detach().clone()
    half, resumed = interrupted_run(CONFIG, opts)
    assert half.model.proxies.shape == (half.data.num_classes, 16) == (10, 16)
    assert not torch.equal(half.model.proxies.detach(), initial)
    assert torch.equal(resumed.model.proxies, half.model.proxies)
    saved, loaded = half.extra_optimizers["proxies"].state_dict(), resumed.extra_optimizers["proxies"].state_dict()
    assert torch.equal(saved["state"][0]["momentum_buffer"], loaded["state"][0]["momentum_buffer"])
    assert saved["param_groups"] == loaded["param_groups"]
