import itertools
import math

import pytest
import torch

from models.backbones.clip import CLIPBackbone
from models.UMoED.decoder import DecoderLayer, SoftMoE, UnifiedDecoder
from models.UMoED.losses import sharpen, slot_distance
from models.UMoED.model import UMoED, word_codes

TINY = dict(hidden_dim=32, decoder_layers=2, decoder_heads=2, ffn_dim=48, num_experts=3, slots_per_expert=2)


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return CLIPBackbone(arch="tiny")


def make_batch(backbone, size=4):
    gen = torch.Generator().manual_seed(2)
    captions = ["a red circle", "blue square and a green cross", "x", "a photo of some big yellow triangle"]
    return {"image": torch.randn(size, 3, 32, 32, generator=gen), "text": backbone.tokenizer()(captions[:size]),
            "label": torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0]])[:size],
            "index": torch.arange(size)}


# ---------------------------------------------------------------------- the spec's formulas, written out (§2.2, §3)
def spec_soft_moe(u, phi, weight, bias):
    """Soft-MoE for one sample with explicit sums over tokens m and expert slots (e, s)."""
    tokens, experts, slots = u.shape[0], phi.shape[1], phi.shape[2]
    a = torch.stack([torch.stack([u @ phi[:, e, s] for s in range(slots)], -1) for e in range(experts)], 1)
    out = torch.zeros(tokens, weight.shape[-1], dtype=u.dtype)
    combine = torch.softmax(a.reshape(tokens, -1), dim=-1).reshape(tokens, experts, slots)
    for e in range(experts):
        for s in range(slots):
            dispatch = torch.softmax(a[:, e, s], dim=0)
            slot_input = sum(dispatch[m] * u[m] for m in range(tokens))
            slot_output = slot_input @ weight[e] + bias[e]
            out += combine[:, e, s, None] * slot_output[None]
    return out


def spec_gains(n):
    """G_ij = (2^N_ij - 1) / Z_i, Z_i the ideal DCG of row i with discount log2(r + 1), r = 1..B."""
    rows = []
    for row in n.tolist():
        z = sum((2 ** v - 1) / math.log2(r + 2) for r, v in enumerate(sorted(row, reverse=True)))
        rows.append([(2 ** v - 1) / z for v in row])
    return rows


def spec_triplet(d, n, margin):
    g = spec_gains(n)
    size = len(g)
    losses = []
    for i, j, k in itertools.product(range(size), repeat=3):
        s_ij, s_ik = float(n[i, j] > 0), float(n[i, k] > 0)
        losses.append(max(0.0, (g[i][j] - g[i][k]) * s_ij * (1 - s_ik) * float(d[i, j] - d[i, k] + margin)))
    return sum(losses) / (sum(v > 1e-16 for v in losses) + 1e-16)


def spec_terms(lv, lt, labels, temperature=0.3, margin=0.1, w_trip=1.0, w_unif=0.8):
    batch, slots, _ = lv.shape
    unit_v = [[lv[i, m] / lv[i, m].norm() for m in range(slots)] for i in range(batch)]
    unit_t = [[lt[i, m] / lt[i, m].norm() for m in range(slots)] for i in range(batch)]
    p_v = [[torch.softmax(x / temperature, 0) for x in row] for row in unit_v]
    p_t = [[torch.softmax(x / temperature, 0) for x in row] for row in unit_t]
    d = torch.tensor([[sum(1 - max(0.0, float(p_v[i][m] @ p_t[j][m])) for m in range(slots)) / slots
                       for j in range(batch)] for i in range(batch)])
    n = labels @ labels.t()

    def uniformity(unit):
        per_sample = [sum(math.exp(-20 * float((row[a] - row[c]).pow(2).sum()))
                          for a in range(slots) for c in range(a + 1, slots)) / (slots * (slots - 1) / 2)
                      for row in unit]
        return sum(per_sample) / batch

    terms = {"triplet_i2t": spec_triplet(d, n, margin), "triplet_t2i": spec_triplet(d.t(), n, margin),
             "uniformity_image": uniformity(unit_v), "uniformity_text": uniformity(unit_t)}
    terms["total"] = (w_trip * (terms["triplet_i2t"] + terms["triplet_t2i"]) / 4
                      + w_unif * (terms["uniformity_image"] + terms["uniformity_text"]) / 3)
    return terms


# ---------------------------------------------------------------------- model
def test_shapes_codes_and_gradients(backbone):
    torch.manual_seed(1)
    model = UMoED(backbone, bits=8, **TINY)
    batch = make_batch(backbone)
    out = model(batch)
    assert model.num_queries == 8
    assert out["image"].shape == out["text"].shape == (4, 8, 2)
    for logits in out.values():
        codes = model.binarize(logits)
        assert codes.shape == (4, 8) and set(codes.unique().tolist()) <= {-1.0, 1.0}
        assert torch.equal(codes, torch.where(logits.argmax(-1) == 1, 1.0, -1.0))  # V = 2: bit = [l_1 > l_0]
    losses = model.loss(out, batch)
    assert set(losses) == {"triplet_i2t", "triplet_t2i", "uniformity_image", "uniformity_text", "total"}
    losses["total"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    model.eval()
    one = {k: v[:1] for k, v in batch.items()}
    assert model.binarize(model.encode_text(one["text"])).shape == (1, 8)


def test_word_bits_set_slots_and_vocabulary(backbone):
    model = UMoED(backbone, bits=16, word_bits=4, **TINY).eval()
    logits = model.encode_image(make_batch(backbone)["image"])
    assert model.num_queries == 4 and logits.shape == (4, 4, 16)
    assert model.binarize(logits).shape == (4, 16)
    with pytest.raises(ValueError, match="model.bits=20 must be a multiple of model.word_bits=8"):
        UMoED(backbone, bits=20, word_bits=8, **TINY)
    with pytest.raises(ValueError, match="model.decoder_heads=3 must divide model.hidden_dim=32"):
        UMoED(backbone, bits=8, **{**TINY, "decoder_heads": 3})


def test_word_codes_hand_values():
    v4 = torch.tensor([[[0.1, 2.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.5], [0.0, 0.0, 1.0, 1.0]]])
    assert word_codes(v4).tolist() == [[-1, 1, -1, -1, 1, -1]]  # words 1, 0 and the tie 2|3 -> 2
    v16 = torch.zeros(1, 1, 16)
    v16[0, 0, 11] = 1.0  # 11 = 1011b
    assert word_codes(v16).tolist() == [[1, -1, 1, 1]]
    assert word_codes(torch.tensor([[[0.5, 0.5]]])).tolist() == [[-1]]


# ---------------------------------------------------------------------- loss
def test_loss_equals_spec_formulas_on_random_inputs(backbone):
    model = UMoED(backbone, bits=4, word_bits=1, **TINY)
    gen = torch.Generator().manual_seed(3)
    for word_bits, slots in ((1, 4), (2, 3)):
        model.extreme_temperature = 0.3
        lv = torch.randn(6, slots, 2 ** word_bits, generator=gen, dtype=torch.float64)
        lt = torch.randn(6, slots, 2 ** word_bits, generator=gen, dtype=torch.float64)
        labels = (torch.rand(6, 5, generator=gen) < 0.4).double()
        labels[labels.sum(1) == 0, 0] = 1
        got = model.loss({"image": lv, "text": lt}, {"label": labels})
        want = spec_terms(lv, lt, labels)
        for name, value in want.items():
            assert float(got[name]) == pytest.approx(value, rel=1e-5, abs=1e-7), name


def test_loss_without_labels_treats_pairs_as_the_only_positives(backbone):
    model = UMoED(backbone, bits=3, triplet_weight=2.0, uniformity_weight=0.5, **TINY)
    gen = torch.Generator().manual_seed(4)
    lv, lt = torch.randn(5, 3, 2, generator=gen), torch.randn(5, 3, 2, generator=gen)
    got = model.loss({"image": lv, "text": lt}, {"index": torch.tensor([4, 0, 9, 2, 7])})
    want = spec_terms(lv, lt, torch.eye(5), w_trip=2.0, w_unif=0.5)
    for name, value in want.items():
        assert float(got[name]) == pytest.approx(value, rel=1e-4, abs=1e-6), name


def test_distance_hand_value_and_transpose():
    image, text = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]])
    d = slot_distance(sharpen(image, 0.3), sharpen(text, 0.3))
    assert float(d) == pytest.approx(0.93348, abs=1e-5)
    gen = torch.Generator().manual_seed(5)
    a, b = torch.softmax(torch.randn(4, 3, 4, generator=gen), -1), torch.softmax(torch.randn(5, 3, 4, generator=gen), -1)
    assert torch.allclose(slot_distance(b, a), slot_distance(a, b).t())
    assert torch.equal(sharpen(image, None), image)


# ---------------------------------------------------------------------- decoder
def test_soft_moe_equals_the_formula_and_reference_init():
    torch.manual_seed(6)
    moe = SoftMoE(6, 5, num_experts=3, slots_per_expert=2).double()
    u = torch.randn(2, 4, 6, dtype=torch.float64)
    out = moe(u)
    for b in range(2):
        want = spec_soft_moe(u[b], moe.phi, moe.expert_weight, moe.expert_bias)
        assert torch.allclose(out[b], want, atol=1e-10)
    full = SoftMoE(2048, 512, num_experts=8, slots_per_expert=8)
    assert 0.12 < full.phi.abs().max() <= 0.125
    assert 0.95 / 1024 < full.expert_weight.abs().max() <= 1 / 1024
    assert full.expert_bias.abs().max() <= 1 / 1024


def test_plain_layer_is_torch_transformer_decoder_layer_and_layers_start_identical():
    torch.manual_seed(7)
    ours = DecoderLayer(16, 2, 24, dropout=0.3, moe=False, num_experts=1, slots_per_expert=1).eval()
    torch_layer = torch.nn.TransformerDecoderLayer(16, 2, 24, dropout=0.3, batch_first=True).eval()
    names = {"self_attn": "self_attn", "cross_attn": "multihead_attn", "linear": "linear1", "ffn_out": "linear2",
             "norm1": "norm1", "norm2": "norm2", "norm3": "norm3"}
    torch_layer.load_state_dict({k.replace(k.split(".")[0], names[k.split(".")[0]], 1): v
                                 for k, v in ours.state_dict().items()})
    x, memory = torch.randn(3, 5, 16), torch.randn(3, 7, 16)
    assert torch.allclose(ours(x, memory), torch_layer(x, memory), atol=1e-6)
    decoder = UnifiedDecoder(16, num_queries=5, vocab_size=4, dim=16, layers=3, heads=2, ffn_dim=24, num_experts=2,
                             slots_per_expert=2)
    first = decoder.layers[0].state_dict()
    assert all(torch.equal(first[k], layer.state_dict()[k]) for layer in decoder.layers[1:] for k in first)
    assert decoder.input_proj is None and UnifiedDecoder(8, 5, 4, dim=16, heads=2).input_proj is not None


def test_released_head_size():
    """The released head (d 512, 6 layers, FFN 2048, 8 x 8 experts, 64 one-bit slots) has ~70.1 M parameters."""
    decoder = UnifiedDecoder(512, num_queries=64, vocab_size=2)
    assert sum(p.numel() for p in decoder.parameters()) == pytest.approx(70.1e6, rel=1e-3)
