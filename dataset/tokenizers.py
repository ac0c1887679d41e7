"""Text tokenizers: captions (or tag strings) to fixed-length id tensors for the text towers.

A tokenizer is called on a list of strings. It returns the ids (B, L) (:class:`CLIPTokenizer`), or, for a
tower that reads an attention mask, ``{"text": ids, "text_mask": mask}``
(``models.backbones.transformers_text.TransformersTokenizer``). :func:`text_inputs` turns either, and a batch,
into the keyword arguments of a model's ``encode_text``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from open_clip.tokenizer import SimpleTokenizer

from common.register import registry

TEXT_KEYS = ("text", "text_mask")
"""The batch entries of a caption: token ids and, where the tokenizer makes one, the attention mask."""


def text_inputs(source: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text entries of a tokenizer's output or of a batch: ``model.encode_text(**text_inputs(...))``."""
    if torch.is_tensor(source):
        return {"text": source}
    return {key: source[key] for key in TEXT_KEYS if key in source}


@registry.register_tokenizer("clip")
class CLIPTokenizer:
    """CLIP's byte-level BPE with the truncation rule of the CLIP hashing methods (DCMHT spec §4.3).

    Each caption becomes ``[SOT] + BPE(caption)``, cut to ``context_length - 1`` ids, then ``[EOT]`` is
    appended (so at most ``context_length - 2`` caption tokens) and the row is right-padded with 0. EOT
    (49407) is the largest id, which is how the text tower finds its position. The BPE vocabulary ships
    inside open_clip, so this works offline.

    Args:
        context_length: length of every row; must equal the text backbone's.
    """

    pad_id = 0

    def __init__(self, context_length: int = 32):
        if context_length < 2:
            raise ValueError(f"the clip tokenizer's context_length must be at least 2 (SOT and EOT), "
                             f"got {context_length}")
        self.context_length = context_length
        self._bpe = SimpleTokenizer(context_length=context_length)
        self.sot_id = self._bpe.sot_token_id
        self.eot_id = self._bpe.eot_token_id
        self.vocab_size = self._bpe.vocab_size

    def encode(self, text: str) -> list[int]:
        """The ids of one caption, SOT and EOT included, without padding."""
        return ([self.sot_id] + self._bpe.encode(text))[:self.context_length - 1] + [self.eot_id]

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Token ids (B, context_length), long; a single string gives B = 1."""
        if isinstance(texts, str):
            texts = [texts]
        ids = torch.full((len(texts), self.context_length), self.pad_id, dtype=torch.long)
        for row, text in enumerate(texts):
            encoded = self.encode(text)
            ids[row, :len(encoded)] = torch.tensor(encoded, dtype=torch.long)
        return ids

    def __repr__(self) -> str:
        return f"CLIPTokenizer(context_length={self.context_length})"
