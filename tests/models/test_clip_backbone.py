"""CLIP backbone: tower outputs and tokens, and every weight format through the real loader.

The "released" model is a tiny open_clip CLIP with OpenAI's layout and 77 text positions; files of it are
written in each supported format and must load into ``CLIPBackbone`` with outputs identical to open_clip's own
CLIP cut to 32 positions.
"""
import copy
import pickle
import warnings

import pytest
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, convert_to_custom_text_state_dict
from safetensors.torch import save_file
from torch import nn

from common.register import registry
from dataset.tokenizers import CLIPTokenizer
from models.backbones.clip import CLIP_VARIANTS, CLIPBackbone, load_clip_state_dict

SOT, EOT = 49406, 49407
CTX = 32


def _open_clip_tiny(context_length: int = 77, width: int = 64) -> CLIP:
    torch.manual_seed(0)
    return CLIP(embed_dim=64, vision_cfg=CLIPVisionCfg(layers=2, width=width, head_width=width // 2, patch_size=8,
                                                       image_size=32),
                text_cfg=CLIPTextCfg(context_length=context_length, width=64, heads=2, layers=2),
                quick_gelu=True).eval()


class _OpenAIArchive(nn.Module):
    """A scriptable module whose state dict is laid out like OpenAI's release archives."""

    def __init__(self, clip: CLIP):
        super().__init__()
        for name, child in clip.named_children():
            self.add_module(name, child)
        for name, param in clip.named_parameters(recurse=False):
            self.register_parameter(name, param)
        # Non-parameter entries the OpenAI archives carry next to the weights.
        self.register_buffer("input_resolution", torch.tensor(32))
        self.register_buffer("context_length", torch.tensor(clip.context_length))
        self.register_buffer("vocab_size", torch.tensor(clip.vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _save_openai_archive(clip: CLIP, path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates TorchScript; the release files use it
        torch.jit.save(torch.jit.script(_OpenAIArchive(copy.deepcopy(clip))), str(path))


@pytest.fixture(scope="module")
def released():
    return _open_clip_tiny()


@pytest.fixture(scope="module")
def inputs():
    torch.manual_seed(1)
    image = torch.randn(3, 3, 32, 32)
    text = torch.zeros(3, CTX, dtype=torch.long)
    for row, length in enumerate((5, CTX - 2, 12)):
        text[row, 0] = SOT
        text[row, 1:length + 1] = torch.randint(1, 49000, (length,))
        text[row, length + 1] = EOT
    return image, text


@pytest.fixture(scope="module")
def reference(released, inputs):
    """open_clip's own CLIP with the first 32 text positions: the outputs a correct load must reproduce."""
    state = released.state_dict()
    state["positional_embedding"] = state["positional_embedding"][:CTX]
    cut = _open_clip_tiny(context_length=CTX)
    cut.load_state_dict(state)
    image, text = inputs
    with torch.no_grad():
        return cut.encode_image(image), cut.encode_text(text)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(2)
    return CLIPBackbone(arch="tiny").eval()


def _assert_same_as_reference(backbone, inputs, reference):
    image, text = inputs
    with torch.no_grad():
        assert torch.equal(backbone.encode_image(image), reference[0])
        assert torch.equal(backbone.encode_text(text), reference[1])


class TestTowers:
    def test_registered_with_attributes(self, tiny):
        assert registry.get("backbone", "CLIP") is CLIPBackbone
        assert (tiny.embed_dim, tiny.vision_width, tiny.text_width) == (64, 64, 64)
        assert (tiny.image_size, tiny.context_length) == (32, CTX)
        assert tiny.mean == CLIP_VARIANTS["ViT-B-32"].mean and len(tiny.std) == 3
        assert tiny.positional_embedding.shape == (CTX, 64)

    def test_variant_table(self):
        b32, l14 = CLIP_VARIANTS["ViT-B-32"], CLIP_VARIANTS["ViT-L-14"]
        assert (b32.embed_dim, b32.vision_width, b32.patch_size, b32.text_width) == (512, 768, 32, 512)
        assert CLIP_VARIANTS["ViT-B-16"].patch_size == 16
        assert (l14.embed_dim, l14.vision_width, l14.vision_layers, l14.text_width) == (768, 1024, 24, 768)
        assert all(v.quick_gelu and v.context_length == 77 for v in CLIP_VARIANTS.values())

    def test_image_features_and_tokens(self, tiny, inputs):
        image, _ = inputs
        with torch.no_grad():
            pooled = tiny.encode_image(image)
            again, tokens = tiny.encode_image(image, return_tokens=True)
        assert pooled.shape == (3, 64)
        assert tokens.shape == (3, 1 + 16, 64)  # CLS + (32 / 8)^2 patches, projected
        assert torch.equal(again, pooled) and torch.equal(tokens[:, 0], pooled)

    def test_image_tokens_are_ln_post_then_proj(self, tiny, inputs):
        image, _ = inputs
        visual = tiny.visual
        with torch.no_grad():
            _, tokens = tiny.encode_image(image, return_tokens=True)
            hidden = visual.forward_intermediates(image, indices=1, output_fmt="NLC", output_extra_tokens=True)
            last = torch.cat([hidden["image_intermediates_prefix"][-1], hidden["image_intermediates"][-1]], 1)
        torch.testing.assert_close(tokens, visual.ln_post(last) @ visual.proj)

    def test_text_features_and_tokens(self, tiny, inputs):
        _, text = inputs
        with torch.no_grad():
            pooled = tiny.encode_text(text)
            again, tokens = tiny.encode_text(text, return_tokens=True)
        assert pooled.shape == (3, 64) and tokens.shape == (3, CTX, 64)
        eot = text.argmax(dim=-1)
        torch.testing.assert_close(again, pooled)
        torch.testing.assert_close(tokens[torch.arange(3), eot], pooled)

    def test_text_is_causal(self, tiny, inputs):
        _, text = inputs
        changed = text.clone()
        changed[:, -1] = 7  # after EOT in every row
        with torch.no_grad():
            assert torch.equal(tiny.encode_text(changed[:1]), tiny.encode_text(text[:1]))

    def test_key_padding_mask_matches_multihead_attention(self, tiny, inputs):
        _, text = inputs
        text = text.clone()
        text[0, 3] = 0  # id 0 ("!") inside a caption: MITH masks it as padding too
        pad = text == 0
        additive_pad = torch.zeros(pad.shape).masked_fill(pad, float("-inf"))
        with torch.no_grad():
            pooled, tokens = tiny.encode_text(text, return_tokens=True, key_padding_mask=pad)
            x = tiny.token_embedding(text) + tiny.positional_embedding
            for block in tiny.transformer.resblocks:
                h = block.ln_1(x)
                x = x + block.attn(h, h, h, need_weights=False, attn_mask=tiny.attn_mask,
                                   key_padding_mask=additive_pad)[0]
                x = x + block.mlp(block.ln_2(x))
            expected = tiny.ln_final(x) @ tiny.text_projection
            unmasked = tiny.encode_text(text)
        torch.testing.assert_close(tokens, expected)
        torch.testing.assert_close(pooled, expected[torch.arange(3), text.argmax(-1)])
        assert not torch.allclose(pooled[0], unmasked[0])
        torch.testing.assert_close(pooled[1:], unmasked[1:])  # rows 1, 2 have no id 0 before EOT

    def test_every_parameter_gets_a_gradient(self, inputs):
        backbone = CLIPBackbone(arch="tiny")
        image, text = inputs
        (backbone.encode_image(image).sum() + backbone.encode_text(text).sum()).backward()
        no_grad = [n for n, p in backbone.named_parameters() if p.grad is None]
        assert no_grad == []

    def test_tokenizer_matches_context_length(self, tiny):
        tokenizer = tiny.tokenizer()
        assert isinstance(tokenizer, CLIPTokenizer) and tokenizer.context_length == CTX
        with torch.no_grad():
            assert tiny.encode_text(tokenizer(["a photo of a cat"])).shape == (1, 64)

    def test_wrong_input_sizes(self, tiny):
        with pytest.raises(ValueError, match="context_length is 32"):
            tiny.encode_text(torch.zeros(1, 77, dtype=torch.long))
        with pytest.raises(ValueError, match="32x32"):
            tiny.encode_image(torch.zeros(1, 3, 224, 224))

    def test_unknown_arch_and_context_length(self):
        with pytest.raises(ValueError, match="did you mean 'ViT-B-32'"):
            CLIPBackbone(arch="ViT-B/32")
        with pytest.raises(ValueError, match="context_length"):
            CLIPBackbone(arch="tiny", context_length=78)


class TestWeights:
    def test_openai_torchscript_archive(self, released, inputs, reference, tmp_path):
        path = tmp_path / "tiny.pt"
        _save_openai_archive(released, path)
        backbone = CLIPBackbone(arch="tiny", weights=str(path), context_length=CTX).eval()
        _assert_same_as_reference(backbone, inputs, reference)
        source = released.state_dict()
        for key, value in backbone.state_dict().items():
            expected = source[key][:CTX] if key == "positional_embedding" else source[key]
            assert torch.equal(value, expected), key

    def test_openai_fp16_archive_becomes_fp32(self, released, tmp_path):
        path = tmp_path / "tiny_fp16.pt"
        _save_openai_archive(copy.deepcopy(released).half(), path)
        backbone = CLIPBackbone(arch="tiny", weights=str(path))
        assert all(p.dtype == torch.float32 for p in backbone.parameters())
        assert torch.equal(backbone.visual.proj, released.visual.proj.half().float())

    @pytest.mark.parametrize("layout", ["plain", "nested_ddp", "model_key", "open_clip_training", "custom_text"])
    def test_torch_save_layouts(self, layout, released, inputs, reference, tmp_path):
        state = released.state_dict()
        ddp = {f"module.{k}": v for k, v in state.items()}
        checkpoint = {
            "plain": state,
            "nested_ddp": {"state_dict": ddp},
            "model_key": {"model": state, "epoch": 3},
            "open_clip_training": {"epoch": 2, "name": "tiny", "state_dict": ddp,
                                   "optimizer": torch.optim.AdamW(released.parameters()).state_dict()},
            "custom_text": convert_to_custom_text_state_dict(state),
        }[layout]
        path = tmp_path / f"{layout}.pt"
        torch.save(checkpoint, path)
        _assert_same_as_reference(CLIPBackbone(arch="tiny", weights=str(path)).eval(), inputs, reference)

    def test_safetensors(self, released, inputs, reference, tmp_path):
        path = tmp_path / "open_clip_model.safetensors"
        save_file({k: v.contiguous() for k, v in released.state_dict().items()}, str(path))
        _assert_same_as_reference(CLIPBackbone(arch="tiny", weights=str(path)).eval(), inputs, reference)

    def test_own_state_dict_round_trip(self, tiny, inputs, tmp_path):
        path = tmp_path / "backbone.pt"
        torch.save(tiny.state_dict(), path)
        loaded = CLIPBackbone(arch="tiny", weights=str(path)).eval()
        image, text = inputs
        with torch.no_grad():
            assert torch.equal(loaded.encode_text(text), tiny.encode_text(text))
            assert torch.equal(loaded.encode_image(image), tiny.encode_image(image))

    def test_loader_returns_truncated_fp32_state(self, released, tmp_path):
        path = tmp_path / "tiny.pt"
        torch.save({k: v.half() for k, v in released.state_dict().items()}, path)
        state = load_clip_state_dict(path, arch="tiny", context_length=16)
        assert state["positional_embedding"].shape == (16, 64)
        assert "logit_scale" not in state
        assert all(v.dtype == torch.float32 for v in state.values())

    def test_missing_file_says_what_to_download_and_which_key(self, tmp_path):
        path = tmp_path / "weights" / "ViT-B-32.pt"
        with pytest.raises(FileNotFoundError) as info:
            CLIPBackbone(arch="ViT-B-32", weights=str(path))
        message = str(info.value)
        assert str(path) in message and "model.backbone.weights" in message
        assert "ViT-B-32.pt" in message and "OpenAI" in message and "\n" not in message

    def test_missing_file_of_variant_without_release(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="model.backbone.weights.*null"):
            CLIPBackbone(arch="tiny", weights=str(tmp_path / "none.pt"))

    def test_wrong_arch_names_file_expected_and_found(self, released, tmp_path):
        path = tmp_path / "tiny.pt"
        _save_openai_archive(released, path)
        with pytest.raises(ValueError) as info:
            CLIPBackbone(arch="ViT-B-32", weights=str(path))
        message = str(info.value)
        assert str(path) in message and "ViT-B-32" in message
        assert "vision_width=768" in message and "vision_width=64" in message
        assert "set model.backbone.arch to 'tiny'" in message and "\n" not in message

    def test_arch_matching_no_variant(self, tmp_path):
        path = tmp_path / "narrow.pt"
        torch.save(_open_clip_tiny(width=32).state_dict(), path)
        with pytest.raises(ValueError, match="vision_width=64.*vision_width=32.*no known variant"):
            CLIPBackbone(arch="tiny", weights=str(path))

    def test_too_few_text_positions(self, tmp_path):
        path = tmp_path / "short.pt"
        torch.save(_open_clip_tiny(context_length=16).state_dict(), path)
        with pytest.raises(ValueError, match="holds 16 text positions"):
            CLIPBackbone(arch="tiny", weights=str(path), context_length=CTX)

    def test_not_a_clip_checkpoint(self, tmp_path):
        path = tmp_path / "other.pt"
        torch.save({"encoder.weight": torch.zeros(2, 2)}, path)
        with pytest.raises(ValueError, match="not a CLIP ViT checkpoint.*lacks visual.conv1.weight"):
            CLIPBackbone(arch="tiny", weights=str(path))

    def test_unreadable_files(self, tmp_path):
        text_file = tmp_path / "notes.pt"
        text_file.write_text("not a checkpoint")
        with pytest.raises(ValueError, match="neither a TorchScript archive nor a weights-only"):
            CLIPBackbone(arch="tiny", weights=str(text_file))
        pickled = tmp_path / "pickled.pt"
        pickled.write_bytes(pickle.dumps({"weights": copy.copy}, protocol=2))  # weights_only refuses arbitrary globals
        with pytest.raises(ValueError, match="neither a TorchScript archive nor a weights-only"):
            CLIPBackbone(arch="tiny", weights=str(pickled))
