"""An evaluator per task: what to encode, how to score it, which number picks the best epoch, what to write.

The dataset names its task when it registers (``@registry.register_dataset("x", evaluator="cross_modal")``);
the runner builds that evaluator from the ``eval`` section (whose keys are the evaluator's ``Options``) and
knows no task itself. Three tasks exist:

* ``cross_modal``: labelled image-text pairs; i2t, t2i, i2i, t2t; mAP variants, P/R/NDCG@K, curves, ``.mat``.
* ``caption_recall``: label-free caption pairs; caption Recall@K both ways (evaluation.md §9).
* ``image_retrieval``: single-modal labelled images; i2i with the same metrics as ``cross_modal``.

An evaluator is handed ``encode(dataset, modalities) -> {modality: codes}`` (codes in dataset order), so it
never touches the model, the devices or the processes.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import torch

from common.evaluation import (DIRECTIONS, EvalConfig, evaluate_retrieval, export_codes_mat, format_table,
                               save_curves)
from common.register import registry
from common.schema import PositiveInt, validate

Encode = Callable[[object, tuple[str, ...]], dict[str, torch.Tensor]]
CROSS_MODAL = ("i2t", "t2i")


class Evaluator(abc.ABC):
    """The evaluation of one task. Subclasses set ``Options`` (the ``eval`` section) and ``primary``.

    Attributes:
        directions: the evaluated directions, in table order.
        primary: the per-direction metric whose mean over :attr:`ranked` picks the best epoch.
    """

    Options: type
    primary: str

    def __init__(self, data, options):
        self.data, self.options = data, options
        self.directions = tuple(options.directions)

    @property
    def ranked(self) -> tuple[str, ...]:
        """The directions whose mean primary metric picks the best epoch: the cross-modal ones when evaluated
        (as the papers select), else every evaluated direction."""
        cross = tuple(d for d in self.directions if d in CROSS_MODAL)
        return cross or self.directions

    @abc.abstractmethod
    def compute_codes(self, encode: Encode) -> dict[str, torch.Tensor]:
        """Binary codes of every evaluation set the directions need."""

    @abc.abstractmethod
    def score(self, codes: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
        """``{direction: {metric: value}}`` for the evaluated directions."""

    @abc.abstractmethod
    def random_codes(self, bits: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Uniformly random {-1,+1} codes shaped like :meth:`compute_codes`' output."""

    def random_baseline(self, bits: int) -> dict[str, float]:
        """The primary metric of random codes on this split: the level a trained model must clearly beat."""
        results = self.score_quickly(self.random_codes(bits, torch.Generator().manual_seed(0)))
        return {d: results[d][self.primary] for d in self.ranked}

    def score_quickly(self, codes: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
        """Only what :meth:`random_baseline` needs (by default, everything)."""
        return self.score(codes)

    def format(self, results: dict) -> str:
        """The log table of :meth:`score`'s results."""
        return format_table(results)

    def save(self, codes: dict[str, torch.Tensor], out_dir: Path, tags: Sequence[str]) -> None:
        """Write the codes and curves under ``out_dir`` (``codes/<tag>.mat`` per tag); nothing by default."""


registry.set_base("evaluator", Evaluator)


def _random_signs(sizes: dict[str, int], bits: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {k: torch.randint(0, 2, (n, bits), generator=generator).float() * 2 - 1 for k, n in sizes.items()}


@registry.register_evaluator("cross_modal")
class CrossModalEvaluator(Evaluator):
    """Labelled query / retrieval sets of image-text pairs, scored by :func:`evaluate_retrieval`."""

    Options = EvalConfig
    primary = "mAP@all"
    modalities = ("image", "text")

    def _needed(self) -> dict[str, tuple[str, ...]]:
        """Which modalities of the query and the retrieval set the directions read."""
        keys = {key for d in self.directions for key in DIRECTIONS[d]}
        return {split: tuple(m for m in self.modalities if f"{split}_{m}" in keys) for split in ("query", "retrieval")}

    @property
    def labels(self) -> dict[str, torch.Tensor]:
        return {"query": self.data.query.labels, "retrieval": self.data.retrieval.labels}

    def compute_codes(self, encode: Encode) -> dict[str, torch.Tensor]:
        codes = {}
        for split, modalities in self._needed().items():
            for modality, value in encode(getattr(self.data, split), modalities).items():
                codes[f"{split}_{modality}"] = value
        return codes

    def score(self, codes):
        return evaluate_retrieval(codes, self.labels, self.options)

    def score_quickly(self, codes):
        quick = EvalConfig(map_topk=(None,), precision_k=(), tie_aware=False, tie_break=self.options.tie_break,
                           directions=self.ranked, chunk_size=self.options.chunk_size)
        return evaluate_retrieval(codes, self.labels, quick)

    def random_codes(self, bits, generator):
        sizes = {"query": len(self.data.query), "retrieval": len(self.data.retrieval)}
        return _random_signs({f"{split}_{m}": sizes[split] for split, ms in self._needed().items() for m in ms},
                             bits, generator)

    def format(self, results):
        return format_table(results, self.options.tie_break)

    def save(self, codes, out_dir, tags):
        for tag in tags:
            export_codes_mat(out_dir / "codes" / f"{tag}.mat", codes, self.labels)
        save_curves(codes, self.labels, out_dir / "curves", self.options.chunk_size, self.ranked)


@dataclass
class ImageEvalConfig(EvalConfig):
    """The ``eval`` section of single-modal image retrieval: :class:`EvalConfig` with only i->i.

    Attributes:
        select_topk: the K of the mAP@K that picks the best epoch, as the single-modal hashing code bases
            select (DeepHash-pytorch, WCH: mAP@1000 on CIFAR-10, mAP@5000 on NUS-WIDE and MS-COCO); None picks
            on mAP@all. A K not in ``map_topk`` is added to it.
    """

    directions: Sequence[Literal["i2i"]] = ("i2i",)
    select_topk: PositiveInt | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.select_topk not in self.map_topk:
            self.map_topk = (*self.map_topk, self.select_topk)


@registry.register_evaluator("image_retrieval")
class ImageRetrievalEvaluator(CrossModalEvaluator):
    """Labelled query / retrieval sets of images only (single-modal hashing): i->i, the best epoch picked on
    mAP@``select_topk``."""

    Options = ImageEvalConfig
    modalities = ("image",)

    def __init__(self, data, options):
        super().__init__(data, options)
        self.primary = "mAP@all" if options.select_topk is None else f"mAP@{options.select_topk}"

    def score_quickly(self, codes):
        quick = EvalConfig(map_topk=(self.options.select_topk,), precision_k=(), tie_aware=False,
                           tie_break=self.options.tie_break, directions=self.ranked, chunk_size=self.options.chunk_size)
        return evaluate_retrieval(codes, self.labels, quick)


@dataclass
class CaptionEvalConfig:
    """The ``eval`` section of label-free caption pairs.

    Attributes:
        directions: i2t (image -> its captions) and/or t2i (caption -> its image).
        ks: cut-offs of R@K (percent); their mean per direction is ``R@mean``, the primary metric.
    """

    directions: Sequence[Literal["i2t", "t2i"]] = CROSS_MODAL
    ks: Sequence[PositiveInt] = (1, 5, 10)

    def __post_init__(self):
        self.directions, self.ks = tuple(self.directions), tuple(self.ks)
        validate(self)
        if not self.directions or not self.ks:
            raise ValueError("CaptionEvalConfig needs at least one direction and one K")


@registry.register_evaluator("caption_recall")
class CaptionEvaluator(Evaluator):
    """Every image and every caption of the evaluation split, scored by caption Recall@K."""

    Options = CaptionEvalConfig
    primary = "R@mean"

    def compute_codes(self, encode):
        sets = self.data.caption_eval
        return {"image": encode(sets.images, ("image",))["image"], "text": encode(sets.captions, ("text",))["text"]}

    def score(self, codes):
        results = self.data.caption_eval.recall(codes["image"], codes["text"], ks=self.options.ks)
        if len(self.directions) < len(CROSS_MODAL):
            return {d: results[d] for d in self.directions}
        return {d: results[d] for d in (*self.directions, "all")}

    def random_codes(self, bits, generator):
        sets = self.data.caption_eval
        return _random_signs({"image": len(sets.images), "text": len(sets.captions)}, bits, generator)

    def format(self, results):
        return format_table(results, footer="R@K in percent: a query counts as found when a true match ranks in "
                                            "the top K (ties by index); R@mean = mean over K; rsum = sum over both "
                                            "directions")


def build_evaluator(dataset_name: str, data, section: dict) -> Evaluator:
    """The evaluator of the task of the registered dataset ``dataset_name``, with options ``section``."""
    cls = evaluator_class(dataset_name)
    return cls(data, cls.Options(**section))


def evaluator_class(dataset_name: str) -> type[Evaluator]:
    """The evaluator class the dataset ``dataset_name`` registered with (``evaluator=...``)."""
    name = registry.meta("dataset", dataset_name).get("evaluator")
    if name is None:
        raise ValueError(f"dataset '{dataset_name}' was registered without an evaluator: register it with "
                         f"evaluator=<one of {', '.join(registry.list('evaluator'))}>")
    return registry.get("evaluator", name)

