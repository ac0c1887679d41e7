"""ViT backbone: Google's ``.npz`` layout, timm state dicts, errors, shapes and the registry.

The "released" model is a tiny timm ViT with a classifier and perturbed weights (so that a swapped scale and
bias, or a transposed kernel, changes the outputs). Its ``.npz`` is written here from the WCH spec §4 table,
independently of timm's loader, and every file must load into ``ViTBackbone`` with the released outputs.
"""
import dataclasses
from typing import get_args

import numpy as np
import pytest
import scipy.ndimage
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from common.config import build
from models.backbones import vit
from models.backbones.vit import VIT_VARIANTS, ViTArch, ViTBackbone

TINY = dict(patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_ratio=4.0)


def _released(img_size: int = 32, **dims) -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(img_size=img_size, num_classes=10, **{**TINY, **dims})
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model.eval()


def _google_npz(model: VisionTransformer) -> dict[str, np.ndarray]:
    """``model`` in the key layout and shapes of Google's release files (spec §4, inverted)."""
    def n(t):
        return t.detach().numpy().astype(np.float32)

    width, heads = model.embed_dim, model.blocks[0].attn.num_heads
    arrays = {
        "embedding/kernel": n(model.patch_embed.proj.weight.permute(2, 3, 1, 0)),  # OIHW -> HWIO
        "embedding/bias": n(model.patch_embed.proj.bias),
        "cls": n(model.cls_token),
        "Transformer/posembed_input/pos_embedding": n(model.pos_embed),
        "Transformer/encoder_norm/scale": n(model.norm.weight),
        "Transformer/encoder_norm/bias": n(model.norm.bias),
        "head/kernel": n(model.head.weight.T),
        "head/bias": n(model.head.bias),
    }
    for i, block in enumerate(model.blocks):
        prefix, mha = f"Transformer/encoderblock_{i}/", f"Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/"
        weights, biases = block.attn.qkv.weight.chunk(3), block.attn.qkv.bias.chunk(3)
        for name, weight, bias in zip(("query", "key", "value"), weights, biases):
            arrays[mha + f"{name}/kernel"] = n(weight.T.reshape(width, heads, width // heads))
            arrays[mha + f"{name}/bias"] = n(bias.reshape(heads, width // heads))
        arrays[mha + "out/kernel"] = n(block.attn.proj.weight.T.reshape(heads, width // heads, width))
        arrays[mha + "out/bias"] = n(block.attn.proj.bias)
        for ln, norm in (("LayerNorm_0", block.norm1), ("LayerNorm_2", block.norm2)):
            arrays[prefix + f"{ln}/scale"], arrays[prefix + f"{ln}/bias"] = n(norm.weight), n(norm.bias)
        for dense, fc in (("Dense_0", block.mlp.fc1), ("Dense_1", block.mlp.fc2)):
            arrays[prefix + f"MlpBlock_3/{dense}/kernel"] = n(fc.weight.T)
            arrays[prefix + f"MlpBlock_3/{dense}/bias"] = n(fc.bias)
    return arrays


@pytest.fixture(scope="module")
def released():
    return _released()


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(1)
    return torch.randn(2, 3, 32, 32)


def _assert_same_as_released(backbone, released, image):
    backbone.eval()
    with torch.no_grad():
        tokens = released.forward_features(image)
        torch.testing.assert_close(backbone.image_tokens(image), tokens, atol=1e-6, rtol=0)
        torch.testing.assert_close(backbone.encode_image(image), released.forward_head(tokens, pre_logits=True),
                                   atol=1e-6, rtol=0)


def test_google_npz_loads_through_timm_loader(released, image, tmp_path):
    path = tmp_path / "tiny.npz"
    np.savez(path, **_google_npz(released))
    _assert_same_as_released(ViTBackbone(arch="tiny", weights=str(path)), released, image)


def test_npz_position_table_of_another_grid_is_zoomed_as_the_official_code(released, tmp_path):
    path = tmp_path / "tiny_48px.npz"
    arrays = _google_npz(released)
    larger = _released(img_size=48).pos_embed.detach().numpy()  # 6x6 grid for the 4x4 of the tiny variant
    arrays["Transformer/posembed_input/pos_embedding"] = larger
    np.savez(path, **arrays)
    grid = larger[0, 1:].reshape(6, 6, -1)
    zoomed = scipy.ndimage.zoom(grid, (4 / 6, 4 / 6, 1), order=1).reshape(1, 16, -1)
    expected = torch.from_numpy(np.concatenate([larger[:, :1], zoomed], axis=1))
    table = ViTBackbone(arch="tiny", weights=str(path)).pos_embed.detach()
    torch.testing.assert_close(table, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("layout", ["timm_pth", "ddp_plain_pt", "nested_bin", "safetensors"])
def test_state_dict_files(layout, released, image, tmp_path):
    timm_state = released.state_dict()  # with the classifier head, which is dropped
    own = {k: v for k, v in timm_state.items() if not k.startswith("head.")}
    path = tmp_path / {"timm_pth": "timm.pth", "ddp_plain_pt": "ddp.pt", "nested_bin": "nested.bin",
                       "safetensors": "model.safetensors"}[layout]
    if layout == "safetensors":
        save_file({k: v.contiguous() for k, v in timm_state.items()}, str(path))
    else:
        torch.save({"timm_pth": timm_state,
                    "ddp_plain_pt": {f"module.{k}": v for k, v in own.items()},
                    "nested_bin": {"state_dict": timm_state, "epoch": 3}}[layout], path)
    _assert_same_as_released(ViTBackbone(arch="tiny", weights=str(path)), released, image)


def test_own_state_dict_round_trip(released, image, tmp_path):
    source = tmp_path / "released.pth"
    torch.save(released.state_dict(), source)
    path = tmp_path / "backbone.pt"
    torch.save(ViTBackbone(arch="tiny", weights=str(source)).state_dict(), path)
    _assert_same_as_released(ViTBackbone(arch="tiny", weights=str(path)), released, image)


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("arch", list(VIT_VARIANTS))
def test_missing_file_names_file_key_and_release(arch, tmp_path):
    path = tmp_path / "absent.npz"
    with pytest.raises(FileNotFoundError) as excinfo:
        ViTBackbone(arch=arch, weights=str(path))
    message = _one_line(excinfo)
    assert str(path) in message and "model.backbone.weights" in message
    if arch == "vit_base_patch16_224":
        assert "imagenet21k+imagenet2012_ViT-B_16-224.npz" in message
        assert "storage.googleapis.com/vit_models/imagenet21k+imagenet2012/ViT-B_16-224.npz" in message


def test_wrong_architecture_npz(tmp_path):
    path = tmp_path / "wide.npz"
    np.savez(path, **_google_npz(_released(embed_dim=32, num_heads=2, depth=3)))
    with pytest.raises(ValueError) as excinfo:
        ViTBackbone(arch="tiny", weights=str(path))
    message = _one_line(excinfo)
    assert str(path) in message
    assert "expected embed_dim=64, depth=2, num_heads=4, mlp_dim=256, found embed_dim=32, depth=3" in message


def test_wrong_architecture_state_dict(tmp_path):
    path = tmp_path / "patch4.pth"
    torch.save(_released(patch_size=4).state_dict(), path)
    with pytest.raises(ValueError) as excinfo:
        ViTBackbone(arch="tiny", weights=str(path))
    message = _one_line(excinfo)
    assert str(path) in message and "expected patch_size=8" in message and "found patch_size=4" in message


@pytest.mark.parametrize("name, content", [("other.pt", "state"), ("notes.pt", "text"), ("notes.npz", "text"),
                                           ("keys.npz", "npz")])
def test_files_that_are_no_vit(name, content, tmp_path):
    path = tmp_path / name
    if content == "state":
        torch.save({"encoder.weight": torch.zeros(2, 2)}, path)
    elif content == "npz":
        np.savez(path, weight=np.zeros(2))
    else:
        path.write_text("not a checkpoint")
    with pytest.raises(ValueError) as excinfo:
        ViTBackbone(arch="tiny", weights=str(path))
    assert str(path) in _one_line(excinfo)


def test_shapes_preprocessing_and_registry_build(image):
    backbone = build("backbone", {"name": "ViT", "arch": "tiny", "weights": None})
    assert isinstance(backbone, ViTBackbone)
    assert (backbone.embed_dim, backbone.image_size, backbone.mean, backbone.std) == (64, 32, (0.5,) * 3, (0.5,) * 3)
    assert backbone.encode_image(image).shape == (2, 64)
    assert backbone.image_tokens(image).shape == (2, 1 + 16, 64)
    assert not hasattr(backbone, "encode_text") and not hasattr(backbone, "tokenizer")
    with pytest.raises(ValueError, match="takes 32x32 images, got \\(24, 24\\)"):
        backbone.encode_image(image[..., :24, :24])


def test_arch_choices_are_the_variants():
    assert set(get_args(ViTArch)) == set(VIT_VARIANTS)


def test_dropout_on_tokens_and_mlp_not_on_attention_output(monkeypatch):
    monkeypatch.setitem(vit.VIT_VARIANTS, "tiny", dataclasses.replace(VIT_VARIANTS["tiny"], dropout=0.1))
    backbone = ViTBackbone(arch="tiny")
    block = backbone.blocks[0]
    assert backbone.pos_drop.p == 0.1
    assert (block.mlp.drop1.p, block.mlp.drop2.p, block.attn.proj_drop.p, block.attn.attn_drop.p) == (0.1, 0.1, 0, 0)
