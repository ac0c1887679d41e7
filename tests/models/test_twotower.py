"""TwoTower (BASELINE spec Part B): the loss against the spec's hand-checked values and an independent
computation, the activations, the towers against the saved models they load, the real all-MiniLM-L6-v2
weights against sentence-transformers, and the feature cache."""
import math

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet
from transformers import BertConfig, BertModel, BertTokenizerFast

from common.config import build, load_config, resolve
from main import register_all
from models.backbones.resnet import ResNetBackbone
from models.backbones.transformers_text import TransformersTextBackbone
from models.backbones.vit import ViTBackbone
from models.base import HashModel
from models.heads import HashActivation
from models.losses import bit_balance, multi_positive_infonce
from models.TwoTower.model import TwoTower
from runners.base import config_sections
from tests.stubs import TinyBackbone

SYNTHETIC = "configs/TwoTower/synthetic.yaml"
WORDS = ["a", "red", "blue", "circle", "square", "photo", "of", "and", "dog", "cat", "runs"]


# ------------------------------------------------------------------ loss
def test_bit_balance_of_the_spec_example_is_one_half():
    assert float(bit_balance(torch.tensor([[1.0, -1.0], [1.0, 1.0]]))) == pytest.approx(0.5)


@pytest.mark.parametrize("symmetric", [True, False])
def test_pairs_only_infonce_of_the_spec_example(symmetric):
    # s = [[1, 0], [0, 1]] at tau 1: each row gives -log(e / (e + 1)) = 0.31326
    codes = torch.eye(2)
    loss = multi_positive_infonce(codes, codes, torch.eye(2, dtype=torch.bool), 1.0, symmetric)
    assert float(loss) == pytest.approx(0.31326, abs=1e-5)
    assert float(loss) == pytest.approx(math.log(math.e + 1) - 1, abs=1e-6)


def independent_infonce(queries, keys, positives, tau):
    """The spec's formula, one row at a time in float64."""
    q, k = queries.double().numpy(), keys.double().numpy()
    q, k = q / np.linalg.norm(q, axis=1, keepdims=True), k / np.linalg.norm(k, axis=1, keepdims=True)
    s = q @ k.T / tau
    rows = [-math.log(sum(math.exp(s[i, j]) for j in range(len(k)) if positives[i, j])
                      / sum(math.exp(s[i, j]) for j in range(len(k)))) for i in range(len(q))]
    return sum(rows) / len(rows)


def test_multi_hot_infonce_matches_an_independent_computation():
    gen = torch.Generator().manual_seed(0)
    text, image = torch.randn(6, 8, generator=gen), torch.randn(6, 8, generator=gen)
    labels = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [1, 0, 1]], dtype=torch.float)
    positives = (labels @ labels.t()) > 0
    forward = independent_infonce(text, image, positives.numpy(), 0.07)
    backward = independent_infonce(image, text, positives.t().numpy(), 0.07)
    assert float(multi_positive_infonce(text, image, positives, 0.07, False)) == pytest.approx(forward, rel=1e-5)
    assert float(multi_positive_infonce(text, image, positives, 0.07)) == pytest.approx(
        (forward + backward) / 2, rel=1e-5)


def tiny_two_tower(**options) -> TwoTower:
    return TwoTower(TinyBackbone(), TinyBackbone(), bits=4, feature_dim=8, **options)


@pytest.mark.parametrize("labelled", [True, False])
def test_total_loss_weighs_the_terms_and_takes_positives_from_labels_or_instances(labelled):
    gen = torch.Generator().manual_seed(1)
    outputs = {k: torch.randn(4, 4 if k in ("image", "text") else 8, generator=gen).tanh()
               for k in ("image", "text", "image_feature", "text_feature")}
    if labelled:
        batch = {"label": torch.tensor([[1.0, 0], [1, 1], [0, 1], [0, 0]]), "index": torch.arange(4)}
        positives = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=bool)
    else:  # caption pairs: items 0 and 2 are two captions of one image
        batch = {"index": torch.tensor([0, 1, 0, 3])}
        positives = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=bool)
    terms = tiny_two_tower().loss(outputs, batch)

    def nce(a, b):
        return (independent_infonce(outputs[a], outputs[b], positives, 0.07)
                + independent_infonce(outputs[b], outputs[a], positives.T, 0.07)) / 2

    h_t, h_v = outputs["text"], outputs["image"]
    quantization = float(((h_t - h_t.sign()) ** 2).mean() + ((h_v - h_v.sign()) ** 2).mean()) / 2
    balance = float((h_t.mean(0) ** 2).mean() + (h_v.mean(0) ** 2).mean()) / 2
    expected = {"codes": nce("text", "image"), "features": nce("text_feature", "image_feature"),
                "quantization": quantization, "balance": balance}
    for name, value in expected.items():
        assert float(terms[name]) == pytest.approx(value, rel=1e-5), name
    total = expected["codes"] + expected["features"] + 0.1 * quantization + 0.01 * balance
    assert float(terms["total"]) == pytest.approx(total, rel=1e-5)


def test_loss_is_computed_in_fp32_under_autocast():
    gen = torch.Generator().manual_seed(2)
    outputs = {k: torch.randn(4, 4 if k in ("image", "text") else 8, generator=gen)
               for k in ("image", "text", "image_feature", "text_feature")}
    batch = {"index": torch.arange(4)}
    model = tiny_two_tower()
    plain = model.loss(outputs, batch)["total"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.loss({k: v.bfloat16() for k, v in outputs.items()}, batch)["total"]
    assert mixed.dtype == torch.float32
    assert float(mixed) == pytest.approx(float(plain), rel=2e-2)


# ------------------------------------------------------------------ activations
def test_activations_ranges_and_evaluation_rule():
    z = torch.cat([torch.linspace(-6, 6, 25), torch.zeros(1)]).reshape(1, -1)
    tanh, sigmoid, gumbel = HashActivation("tanh"), HashActivation("sigmoid"), HashActivation("gumbel")
    assert torch.allclose(tanh(z), torch.tanh(z)) and tanh(z).abs().max() < 1
    assert torch.allclose(sigmoid(z), torch.tanh(z / 2), atol=1e-6) and sigmoid(z).abs().max() < 1
    torch.manual_seed(0)
    samples = torch.stack([gumbel.train()(z) for _ in range(200)])
    assert samples.min() >= -1 and samples.max() <= 1
    assert samples.std(dim=0)[0, 10:16].min() > 0.1  # near z = 0: soft random samples, not the sign
    assert (samples.mean(dim=0)[0, :3] < -0.9).all() and (samples.mean(dim=0)[0, 22:25] > 0.9).all()
    expected = torch.where(z >= 0, 1.0, -1.0)
    assert torch.equal(gumbel.eval()(z), expected)  # sign(z), 0 -> +1
    model = tiny_two_tower(activation="gumbel").eval()
    x = torch.randn(5, 4)
    assert torch.equal(model.encode_image(x), torch.where(model.image_head.hash(
        model.image_head.align(model.image_head.projection(model.image_features(x)))) >= 0, 1.0, -1.0))
    for kind in ("tanh", "sigmoid"):
        model = tiny_two_tower(activation=kind).eval()
        head = model.image_head
        z = head.hash(head.align(head.projection(model.image_features(x))))
        assert torch.equal(model.binarize(model.encode_image(x)), torch.where(z >= 0, 1.0, -1.0))


def test_frozen_towers_run_in_eval_mode_unless_the_reference_dropout_flag_is_set():
    model = TwoTower(TinyBackbone(), TinyBackbone(), bits=4, feature_dim=8, freeze_text_encoder=True).train()
    assert not model.backbone["text"].training and model.backbone["image"].training
    assert not any(p.requires_grad for p in model.backbone["text"].parameters())
    groups = {g["group"]: g["params"] for g in model.param_groups()}
    assert {id(p) for p in groups["backbone"]} == {id(p) for p in model.backbone["image"].parameters()}
    reference = TwoTower(TinyBackbone(), TinyBackbone(), bits=4, feature_dim=8, frozen_dropout=True)
    reference.freeze_backbone()
    assert reference.train().backbone["text"].training and reference.backbone_frozen


# ------------------------------------------------------------------ towers
@pytest.fixture(scope="module")
def tiny_bert_folder(tmp_path_factory):
    """A 2-layer BERT with a pooler and its WordPiece tokenizer, saved with save_pretrained."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).eval().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("pooling", ["auto", "cls", "mean"])
def test_tiny_bert_loads_with_the_saved_models_outputs(tiny_bert_folder, pooling):
    saved = BertModel.from_pretrained(tiny_bert_folder).eval()
    tower = TransformersTextBackbone(str(tiny_bert_folder), pooling=pooling, max_length=12).eval()
    tokens = tower.tokenizer()(["a red circle", "a photo of a blue dog and a cat"])
    assert tokens["text"].shape == tokens["text_mask"].shape == (2, 12)
    assert tokens["text_mask"][0].tolist() == [1] * 5 + [0] * 7  # [CLS] a red circle [SEP], then padding
    with torch.no_grad():
        out = saved(input_ids=tokens["text"], attention_mask=tokens["text_mask"])
        mask = tokens["text_mask"].unsqueeze(-1).float()
        expected = {"auto": out.pooler_output, "cls": out.last_hidden_state[:, 0],
                    "mean": (out.last_hidden_state * mask).sum(1) / mask.sum(1)}[pooling]
        assert torch.allclose(tower.encode_text(**tokens), expected, atol=1e-5)
    assert tower.embed_dim == 32
    assert (pooling == "auto") == any(name.startswith("encoder.pooler.") for name, _ in tower.named_parameters())


def test_vit_serves_as_the_image_tower_and_preprocess_tokenizes_for_encode_text(tiny_bert_folder):
    image, text = ViTBackbone("tiny"), TransformersTextBackbone(str(tiny_bert_folder), max_length=8)
    preprocess = HashModel.preprocess_of({"image_backbone": image, "text_backbone": text})
    assert (preprocess.image_size, preprocess.mean, preprocess.std) == (32, (0.5,) * 3, (0.5,) * 3)
    model = TwoTower(image, text, bits=8).eval()
    with torch.no_grad():
        text_codes = model.binarize(model.encode_text(**preprocess.tokenize(["a red circle", "a cat"])))
        image_codes = model.binarize(model.encode_image(torch.randn(3, 3, 32, 32)))
    assert text_codes.shape == (2, 8) and image_codes.shape == (3, 8)


def test_tiny_resnet_loads_from_a_torchvision_state_dict_with_the_saved_outputs(tmp_path):
    torch.manual_seed(0)
    saved = ResNet(BasicBlock, [1, 1, 1, 1]).eval()
    torch.save(saved.state_dict(), tmp_path / "tiny.pth")
    tower = ResNetBackbone("tiny", str(tmp_path / "tiny.pth")).eval()
    images = torch.randn(2, 3, 32, 32)
    saved.fc = nn.Identity()
    with torch.no_grad():
        assert torch.allclose(tower.encode_image(images), saved(images), atol=1e-6)
    assert tower.embed_dim == 512 and tower.image_size == 32 and tower.mean == (0.485, 0.456, 0.406)
    with pytest.raises(ValueError, match=r"does not hold a ResNet resnet50: .*set model.image_backbone.arch to 'tiny'"):
        ResNetBackbone("resnet50", str(tmp_path / "tiny.pth"))


def test_missing_or_incomplete_model_folders_and_weights_are_one_line_errors(tiny_bert_folder, tmp_path):
    def error(path) -> str:
        with pytest.raises(FileNotFoundError) as caught:
            TransformersTextBackbone(str(path))
        assert "\n" not in str(caught.value)
        return str(caught.value)

    assert "model.text_backbone.path" in error(tmp_path / "nowhere") and "nowhere" in error(tmp_path / "nowhere")
    for removed, named in (("config.json", "config.json"), ("model.safetensors", "model.safetensors"),
                           ("vocab.txt", "tokenizer vocabulary")):
        partial = tmp_path / removed
        partial.mkdir()
        for file in tiny_bert_folder.iterdir():
            if file.name != removed and not (removed == "vocab.txt" and file.name == "tokenizer.json"):
                (partial / file.name).write_bytes(file.read_bytes())
        message = error(partial)
        assert f"{partial} (set by model.text_backbone.path) is incomplete" in message and named in message
    assert "no installed Python package 'no_such_pkg'" in error("package:no_such_pkg/model")
    with pytest.raises(ValueError, match=r"max_length = 200 exceeds the 128 positions of"):
        TransformersTextBackbone(str(tiny_bert_folder), max_length=200)
    no_pooler = tmp_path / "no_pooler"
    BertModel(BertModel.from_pretrained(tiny_bert_folder).config, add_pooling_layer=False).save_pretrained(no_pooler)
    (no_pooler / "vocab.txt").write_bytes((tiny_bert_folder / "vocab.txt").read_bytes())
    with pytest.raises(ValueError, match=r"lacks weights for 2 tensors of BertModel \(first: pooler\..*set "
                                         r"model.text_backbone.pooling to cls or mean"):
        TransformersTextBackbone(str(no_pooler))
    assert TransformersTextBackbone(str(no_pooler), pooling="cls").embed_dim == 32
    with pytest.raises(FileNotFoundError) as caught:
        ResNetBackbone("resnet50", str(tmp_path / "resnet50-0676ba61.pth"))
    message = str(caught.value)
    assert "\n" not in message and "model.image_backbone.weights" in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message


# ------------------------------------------------------------------ real weights
def test_minilm_from_the_package_reproduces_sentence_transformers_embeddings():
    from sentence_transformers import SentenceTransformer

    register_all()
    cfg = resolve(load_config(SYNTHETIC), config_sections())
    tower = build("backbone", cfg["model"]["text_backbone"]).eval()
    sentences = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today.",
                 "a photo of a red circle and a blue square"]
    with torch.no_grad():
        ours = tower.encode_text(**tower.tokenizer()(sentences))
    packaged = SentenceTransformer(str(tower.encoder.name_or_path), device="cpu")
    pooled = SentenceTransformer(modules=[packaged[0], packaged[1]], device="cpu")  # without Normalize
    reference = pooled.encode(sentences, convert_to_tensor=True)
    assert torch.allclose(ours, reference, atol=1e-4)
    cos = torch.nn.functional.normalize(ours, dim=1) @ torch.nn.functional.normalize(ours, dim=1).t()
    assert cos[0, 1] > cos[0, 2] + 0.3


def test_feature_cache_holds_the_towers_features_and_trains_the_heads(tiny_bert_folder, small_run, make_runner,
                                                                      tmp_path, one_thread):
    opts = small_run(**{"model.freeze_backbone": "true", "dataset.num_samples": 120, "dataset.query_num": 20,
                        "dataset.train_num": 60, "run.batch_size": 20, "run.feature_cache": "true",
                        "run.feature_cache_dir": str(tmp_path / "cache"),
                        "model.text_backbone.path": str(tiny_bert_folder), "model.text_backbone.pooling": "auto"})
    runner = make_runner(SYNTHETIC, opts, tmp_path / "run")
    model, cached = runner.model, runner.data.train
    items = [cached.source[i] for i in range(8)]  # what the towers read without the cache: the batch's entries
    with torch.no_grad():
        image = model.image_features(torch.stack([item["image"] for item in items]))
        text = model.text_features(**{key: torch.stack([item[key] for item in items]) for key in ("text", "text_mask")})
    assert torch.allclose(cached.image[:8], image, atol=1e-5) and torch.allclose(cached.text[:8], text, atol=1e-5)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    runner.fit()
    runner.close()
    trained = model.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in initial.items() if k.startswith("backbone."))
    assert not torch.equal(trained["text_head.align.weight"], initial["text_head.align.weight"])
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3
    make_runner(SYNTHETIC, opts, None)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3  # reused, not rebuilt
