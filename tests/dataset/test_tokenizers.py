"""CLIP tokenizer: the DCMHT truncation rule ([SOT] + BPE, cut to L-1, + [EOT], zero padding); text inputs."""
import pickle

import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer

from common.register import registry
from dataset.tokenizers import CLIPTokenizer, text_inputs

SOT, EOT = 49406, 49407
# CLIP BPE ids of "a", "photo", "of", "cat" and of the one-letter word "x" (lower-cased, with the end-of-word mark).
A, PHOTO, OF, CAT, X = 320, 1125, 539, 2368, 343


@pytest.fixture(scope="module")
def tokenizer():
    return CLIPTokenizer(context_length=32)


def test_registered():
    assert registry.get("tokenizer", "clip") is CLIPTokenizer


def test_short_caption_is_padded_after_eot(tokenizer):
    ids = tokenizer(["A photo of  a CAT"])
    expected = torch.zeros(1, 32, dtype=torch.long)
    expected[0, :7] = torch.tensor([SOT, A, PHOTO, OF, A, CAT, EOT])
    assert ids.dtype == torch.long
    assert torch.equal(ids, expected)
    assert ids.argmax(dim=-1).item() == 6


def test_long_caption_keeps_30_caption_tokens_then_eot(tokenizer):
    ids = tokenizer([" ".join(["x"] * 50)])
    assert ids.shape == (1, 32)
    assert ids[0, 0] == SOT
    assert torch.equal(ids[0, 1:31], torch.full((30,), X))
    assert ids[0, 31] == EOT
    assert ids.argmax(dim=-1).item() == 31


@pytest.mark.parametrize("words, eot_at", [(29, 30), (30, 31), (31, 31)])
def test_truncation_boundary(tokenizer, words, eot_at):
    row = tokenizer(" ".join(["x"] * words))[0]
    kept = min(words, 30)
    assert row[0] == SOT
    assert torch.equal(row[1:1 + kept], torch.full((kept,), X))
    assert row[eot_at] == EOT and (row == EOT).sum() == 1
    assert torch.equal(row[eot_at + 1:], torch.zeros(31 - eot_at, dtype=torch.long))


def test_batch_and_single_string(tokenizer):
    batch = tokenizer(["a cat", "", "a photo of a cat"])
    assert batch.shape == (3, 32)
    assert torch.equal(batch[1, :3], torch.tensor([SOT, EOT, 0]))
    assert torch.equal(tokenizer("a cat"), batch[:1])


def test_rule_agrees_with_open_clip_truncation(tokenizer):
    captions = ["a photo of a cat", " ".join(["word"] * 40), "tags: sky clouds sunset"]
    assert torch.equal(tokenizer(captions), SimpleTokenizer()(captions, context_length=32))


def test_other_context_length():
    ids = CLIPTokenizer(context_length=8)(["a photo of a cat on a mat"])
    assert ids.shape == (1, 8)
    assert ids[0, 0] == SOT and ids[0, 7] == EOT and (ids[0, 1:7] != 0).all()


def test_context_length_too_small():
    with pytest.raises(ValueError, match="at least 2"):
        CLIPTokenizer(context_length=1)


def test_pickles_for_dataloader_workers(tokenizer):
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert torch.equal(clone(["a photo of a cat"]), tokenizer(["a photo of a cat"]))


def test_text_inputs_of_ids_alone_and_of_ids_with_a_mask():
    ids, mask = torch.ones(2, 4, dtype=torch.long), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    assert text_inputs(ids).keys() == {"text"} and text_inputs(ids)["text"] is ids
    batch = {"image": torch.zeros(2), "text": ids, "text_mask": mask, "index": torch.arange(2)}
    inputs = text_inputs(batch)
    assert inputs.keys() == {"text", "text_mask"} and inputs["text"] is ids and inputs["text_mask"] is mask
