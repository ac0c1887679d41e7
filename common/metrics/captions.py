"""Caption retrieval Recall@K (ALBEF protocol, spec section 9): label-free, both directions, from a similarity
matrix or from hash codes.

Its own engine, because the ground truth is a caption-image map rather than shared labels: it ranks candidates
by counting, per ground-truth item, the candidates that score higher or tie before it, never sorting.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from common.metrics import products
from common.metrics.engine import _PAIRS_PER_CHUNK, TIE_BREAKS
from common.metrics.inputs import (
    _as_tensor, _check_codes_pair, _check_ks, _check_matrix, _check_positive_int, _common_device,
)
from common.metrics.products import _products
from utils.checks import check_choice


def caption_recall_at_k(
    similarity_or_image_codes,
    text_codes=None,
    *,
    img2txt: Sequence[Sequence[int]],
    txt2img: Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
    tie_break: str = "index",
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Label-free caption retrieval R@K in percent, both directions (spec section 9, ALBEF protocol).

    Image -> text: an image is a hit at K if any of its captions ranks in the top K of its caption ranking.
    Text -> image: a caption is a hit if its image ranks in the top K. Ranking is by descending similarity,
    equal scores ordered by ``tie_break`` (ascending or descending candidate index). Text -> image also gets
    the tie-aware expectation (share of the ground truth's tie group that falls in the top K), because hash
    codes tie massively.

    Args:
        similarity_or_image_codes: an (images x captions) similarity matrix, higher = more similar; or, when
            ``text_codes`` is given, the images' {-1, +1} codes (similarity = -Hamming distance).
        text_codes: the captions' {-1, +1} codes, or None.
        img2txt: for each image, the indices of its captions.
        txt2img: for each caption, the index of its image.
        ks: cut-offs K.
        chunk_size: rows scored at once; None bounds the work space.

    Returns:
        ``i2t_R@<k>``, ``t2i_R@<k>``, ``t2i_R@<k>[tie]`` for each k, ``rsum`` (sum of the standard values) and
        ``R@mean`` (their mean).
    """
    ks = _check_ks(ks)
    check_choice("tie_break", tie_break, TIE_BREAKS)
    scores = _CaptionScores(similarity_or_image_codes, text_codes)
    gt_txt, gt_img = _caption_maps(img2txt, txt2img, scores.num_images, scores.num_texts)
    gt_txt, gt_img = gt_txt.to(scores.device), gt_img.to(scores.device)
    out: dict[str, float] = {}
    hits_i2t = torch.zeros(len(ks), dtype=torch.float64, device=scores.device)
    hits_t2i, hits_tie = torch.zeros_like(hits_i2t), torch.zeros_like(hits_i2t)
    k_values = torch.tensor(ks, dtype=torch.float64, device=scores.device)
    per_pair = max(1, gt_txt.shape[1])
    if chunk_size is not None:
        _check_positive_int(chunk_size, "chunk_size")
    rows = chunk_size or max(1, _PAIRS_PER_CHUNK // (scores.num_texts * per_pair))
    for start in range(0, scores.num_images, rows):
        block = scores.image_rows(slice(start, start + rows))
        gt = gt_txt[start : start + rows]
        greater, earlier_equal, _ = _rank_counts(block, gt.clamp(min=0), tie_break)
        rank = torch.where(gt >= 0, greater + earlier_equal, torch.iinfo(torch.int64).max).min(1).values
        hits_i2t += (rank[:, None] < k_values).sum(0)
    rows = chunk_size or max(1, _PAIRS_PER_CHUNK // scores.num_images)
    for start in range(0, scores.num_texts, rows):
        block = scores.text_rows(slice(start, start + rows))
        greater, earlier_equal, equal = _rank_counts(block, gt_img[start : start + rows, None], tie_break)
        hits_t2i += ((greater + earlier_equal) < k_values).sum(0)
        hits_tie += ((k_values - greater).clamp(min=0) / equal).clamp(max=1).sum(0)
    for i, k in enumerate(ks):
        out[f"i2t_R@{k}"] = 100.0 * float(hits_i2t[i]) / scores.num_images
    for i, k in enumerate(ks):
        out[f"t2i_R@{k}"] = 100.0 * float(hits_t2i[i]) / scores.num_texts
        out[f"t2i_R@{k}[tie]"] = 100.0 * float(hits_tie[i]) / scores.num_texts
    standard = [v for name, v in out.items() if not name.endswith("[tie]")]
    out["rsum"] = sum(standard)
    out["R@mean"] = out["rsum"] / len(standard)
    return out


class _CaptionScores:
    """Rows of the image x caption similarity, from a given matrix or from hash codes (inner product)."""

    def __init__(self, similarity_or_image_codes, text_codes):
        first = _as_tensor(similarity_or_image_codes, "similarity_or_image_codes")
        if text_codes is None:
            _check_matrix(first, "similarity_or_image_codes")
            self.images = first if first.is_floating_point() else first.to(torch.float64)
            self.texts = None
            self.num_images, self.num_texts = first.shape
        else:
            second = _as_tensor(text_codes, "text_codes")
            device = _common_device(
                {"similarity_or_image_codes": first, "text_codes": second},
                {"similarity_or_image_codes": similarity_or_image_codes, "text_codes": text_codes},
            )
            _check_codes_pair(first, second, "similarity_or_image_codes", "text_codes")
            # The inner product <a, b> = K - 2 * Hamming orders (and ties) exactly like -Hamming.
            self.images = first.to(device=device, dtype=products._product_dtype(device))
            self.texts = second.to(device=device, dtype=products._product_dtype(device))
            self.num_images, self.num_texts = first.shape[0], second.shape[0]
        self.device = self.images.device

    def image_rows(self, rows: slice) -> Tensor:
        if self.texts is None:
            return self.images[rows]
        return _products(self.images[rows], self.texts)

    def text_rows(self, rows: slice) -> Tensor:
        if self.texts is None:
            return self.images[:, rows].T
        return _products(self.texts[rows], self.images)


def _caption_maps(img2txt, txt2img, num_images: int, num_texts: int) -> tuple[Tensor, Tensor]:
    """img2txt padded with -1 into a (images x max captions) matrix, and txt2img as a vector; validated."""
    if len(img2txt) != num_images:
        raise ValueError(f"img2txt must have one entry per image ({num_images}), got {len(img2txt)}")
    if len(txt2img) != num_texts:
        raise ValueError(f"txt2img must have one entry per caption ({num_texts}), got {len(txt2img)}")
    width = max(len(captions) for captions in img2txt)
    padded = torch.full((num_images, width), -1, dtype=torch.int64)
    for i, captions in enumerate(img2txt):
        if len(captions) == 0:
            raise ValueError(f"img2txt[{i}] must list at least one caption index, got none")
        padded[i, : len(captions)] = torch.as_tensor(list(captions), dtype=torch.int64)
    if padded.max() >= num_texts or (padded.min() < -1):
        raise ValueError(f"img2txt must hold caption indices in 0..{num_texts - 1}")
    images = torch.as_tensor(list(txt2img), dtype=torch.int64)
    if images.numel() and (images.min() < 0 or images.max() >= num_images):
        raise ValueError(f"txt2img must hold image indices in 0..{num_images - 1}")
    return padded, images


def _rank_counts(scores: Tensor, gt: Tensor, tie_break: str) -> tuple[Tensor, ...]:
    """For each row and ground-truth column of gt (rows x g): candidates scoring higher, candidates scoring
    equal that the tie rule puts first, and all candidates scoring equal (itself included)."""
    gt_scores = scores.gather(1, gt)[:, :, None]
    row = scores[:, None, :]
    equal = row == gt_scores
    index = torch.arange(scores.shape[1], device=scores.device)
    first = index < gt[:, :, None] if tie_break == "index" else index > gt[:, :, None]
    return (row > gt_scores).sum(2), (equal & first).sum(2), equal.sum(2)
