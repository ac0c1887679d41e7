"""TwDH: Two-Step Discrete Hashing for Cross-Modal Retrieval.

Tu, Liu, Hao, Hong and Wang, IEEE Transactions on Multimedia 2024 (DOI 10.1109/TMM.2024.3381828). Reference
code: kalenforn/clip-based-cross-modal-hash (official: ``models/TwDH``, ``runners/TwDH``, the
``transform_matrix_generation`` scripts); the QinLab-WFU/CLIP-based-Cross-Modal-Hashing port was read for
comparison. Hash centers after CSQ (yuanli2333/Hadamard-Matrix-for-hashing).

Step one trains a long code (``long_bits``, 512): each bit is a two-way softmax regressed by BCE onto the
sample's hash center, plus a term pushing every pair toward one-hot; both towers regress the same target,
which is what aligns them. Step two maps the soft long code to each short length S with a fixed matrix T
(2L x 2S) learned from the training labels so that the long class centers land on the short ones; one
trained network serves every short length. ``bits`` picks the code that :meth:`binarize` returns: a short
length or ``long_bits`` itself.

Deviations from the reference:

* The centers are generated (:func:`models.TwDH.centers.hash_centers`, CSQ's rule without the constant
  Hadamard rows) instead of loaded from the shipped pickles; ``codebook`` loads a saved set instead (e.g.
  the shipped files converted to safetensors, spec §3.4), which is how to reproduce the paper's centers.
* T is learned by :meth:`TwDH.before_training` before the first epoch (the reference ships it; its script
  does not run as committed, spec §7.3) and kept in buffers, so checkpoints carry it; the run directory gets
  a copy in ``codebook.safetensors``, which ``codebook`` can load in later runs.
* The tie vector of a batch is keyed by (``center_seed``, step, length) instead of drawn from the global
  RNG (spec §7.4): the same on every process and after a resume.
* Samples without any label are left out of the BCE terms (the reference turns them into NaN targets that
  end up as all -1, spec §3.1).
* The short-code terms are computed only when ``low_rate`` > 0 (the reference computes them and
  multiplies by 0; the total is the same).
* A batch of one keeps its batch axis in the head (spec §7.5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.register import registry
from common.schema import NonNegativeFloat, PositiveFloat, PositiveInt
from models.base import HashModel, TrainingContext
from models.heads import FrameworkSelectHead, argmax_codes, pairwise_softmax
from models.losses import pair_quantization
from models.TwDH.centers import (center_targets, hash_centers, load_codebook, map_centers, pair_onehot,
                                 save_codebook, tie_vector)
from models.TwDH.transform import learn_transform
from utils import distributed


class Codebook(nn.Module):
    """The centers, the long->short transforms and the tie counter, as buffers saved with the model.

    Buffers: ``long`` (C, L), ``short_<S>`` (C, S), ``transform_<S>`` (2L, 2S), ``learned`` (whether the
    transforms hold learned values) and ``tie_step`` (batches seen by the loss, keys the tie vectors).
    """

    def __init__(self, num_classes: int, long_bits: int, short_bits: tuple[int, ...], seed: int):
        super().__init__()
        self.long_bits, self.short_bits = long_bits, short_bits
        self.register_buffer("long", hash_centers(num_classes, long_bits, seed))
        for s in short_bits:
            self.register_buffer(f"short_{s}", hash_centers(num_classes, s, seed))
            self.register_buffer(f"transform_{s}", torch.zeros(2 * long_bits, 2 * s))
        self.register_buffer("learned", torch.tensor(False))
        self.register_buffer("tie_step", torch.tensor(0, dtype=torch.long))

    def short(self, bits: int) -> torch.Tensor:
        return getattr(self, f"short_{bits}")

    def transform(self, bits: int) -> torch.Tensor:
        if not self.learned:
            raise RuntimeError("TwDH short codes need the learned long->short transform: train the model (its "
                               "before_training hook learns it before the first epoch), load a checkpoint of such "
                               "a run, or set model.codebook to a file with transform_<S> arrays")
        return getattr(self, f"transform_{bits}")

    def set_transforms(self, transforms: dict[int, torch.Tensor]) -> None:
        """Install learned (or loaded) transforms for every short length."""
        for s in self.short_bits:
            getattr(self, f"transform_{s}").copy_(transforms[s])
        self.learned.fill_(True)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The arrays of a codebook file (see :func:`models.TwDH.centers.save_codebook`)."""
        out = {"long": self.long}
        for s in self.short_bits:
            out[f"short_{s}"] = self.short(s)
            if self.learned:
                out[f"transform_{s}"] = self.transform(s)
        return out

    def load_file(self, path: str) -> None:
        """Replace the centers (and the transforms, when the file has them) by those of a codebook file."""
        arrays = load_codebook(path)

        def take(name: str, shape: tuple[int, ...]) -> torch.Tensor:
            got = tuple(arrays[name].shape) if name in arrays else "missing"
            if got != shape:
                raise ValueError(f"model.codebook: '{path}' needs array '{name}' of shape {shape}, got {got}")
            return arrays[name]

        for name in ("long", *(f"short_{s}" for s in self.short_bits)):
            centers = take(name, tuple(getattr(self, name).shape))
            if not ((centers == 1) | (centers == -1)).all():
                raise ValueError(f"model.codebook: array '{name}' of '{path}' must hold only -1 and +1")
            getattr(self, name).copy_(centers)
        given = [s for s in self.short_bits if f"transform_{s}" in arrays]
        if given:
            self.set_transforms({s: take(f"transform_{s}", (2 * self.long_bits, 2 * s)) for s in self.short_bits})


@registry.register_model("TwDH")
class TwDH(HashModel):
    """CLIP towers, a long pair-softmax head per modality, and fixed long->short transforms.

    Args:
        backbone: the CLIP backbone (projected image CLS and text EOT features are hashed).
        bits: the code :meth:`binarize` returns: one of ``short_bits``, or ``long_bits`` for the long code.
        num_classes: class count of the data (passed by the runner); one hash center per class.
        long_bits: length L of the trained long code.
        short_bits: short lengths S derived from the long code, one transform each.
        quan_alpha: weight of the long code's pair quantisation term.
        low_rate: weight of the short codes' BCE + quantisation terms (0: only the long code is trained).
        center_seed: seed of random (Bernoulli) centers, the tie vectors and the transform learning.
        codebook: a ``.safetensors`` file with ``long``, ``short_<S>`` and optionally ``transform_<S>``
            arrays, used instead of generated centers (and of learning T when it holds every transform).
        transform_epochs: epochs of the transform learning (it stops early once every class maps exactly).
        transform_batch_size: labels per step of the transform learning.
        transform_lr: BertAdam learning rate of the transform learning (the reference script's default).
        transform_l1: weight of the L1 penalty on T.
    """

    def __init__(self, backbone: nn.Module, bits: PositiveInt = 16, num_classes: int | None = None,
                 long_bits: PositiveInt = 512, short_bits: tuple[PositiveInt, ...] = (16, 32, 64),
                 quan_alpha: NonNegativeFloat = 0.5, low_rate: NonNegativeFloat = 0.0, center_seed: int = 0,
                 codebook: str | None = None, transform_epochs: PositiveInt = 100,
                 transform_batch_size: PositiveInt = 200, transform_lr: PositiveFloat = 0.001,
                 transform_l1: NonNegativeFloat = 0.001):
        super().__init__(backbone, bits)
        if num_classes is None or num_classes < 1:
            raise ValueError("model.num_classes: TwDH needs labelled data (one hash center per class); "
                             "this dataset has no labels")
        short_bits = tuple(int(s) for s in short_bits)
        if long_bits < 2 or any(not 2 <= s < long_bits for s in short_bits) or len(set(short_bits)) < len(short_bits):
            raise ValueError(f"model.short_bits must be distinct lengths from 2 to below model.long_bits "
                             f"({long_bits}), got {list(short_bits)}")
        if bits != long_bits and bits not in short_bits:
            raise ValueError(f"model.bits must be model.long_bits ({long_bits}) or one of model.short_bits "
                             f"{list(short_bits)}, got {bits}")
        dim = backbone.embed_dim
        self.image_hash = FrameworkSelectHead(dim, long_bits, norm="batch")
        self.text_hash = FrameworkSelectHead(dim, long_bits, norm="layer")
        self.codebook = Codebook(num_classes, long_bits, short_bits, center_seed)
        if codebook is not None:
            self.codebook.load_file(codebook)
        self.long_bits, self.short_bits = long_bits, short_bits
        self.quan_alpha, self.low_rate, self.center_seed = quan_alpha, low_rate, center_seed
        self.transform_options = dict(epochs=transform_epochs, batch_size=transform_batch_size, lr=transform_lr,
                                      l1=transform_l1, seed=center_seed)

    def before_training(self, context: TrainingContext) -> None:
        """Fit every long->short transform from the training labels unless the model already holds them (a
        resumed run, or a ``codebook`` file with every transform), and keep the codebook in the run directory."""
        codebook = self.codebook
        if not bool(codebook.learned):
            if context.train_labels is None:
                raise ValueError("TwDH needs a labelled training set to learn its long->short transforms")
            transforms = {}
            for s in codebook.short_bits:
                matrix, epoch = learn_transform(context.train_labels, codebook.long, codebook.short(s),
                                                device=context.device, **self.transform_options)
                transforms[s] = distributed.broadcast(matrix)
                same = map_centers(codebook.long, matrix) == codebook.short(s)
                status = (f"exact after {epoch} epochs" if epoch
                          else f"not exact after {self.transform_options['epochs']} epochs")
                context.logger.info(f"TwDH transform {codebook.long_bits}->{s} bits: {status}, "
                                    f"{int(same.all(1).sum())}/{len(same)} class centers mapped exactly, "
                                    f"bit accuracy {float(same.float().mean()):.4f}")
            codebook.set_transforms(transforms)
        if context.run_dir is not None:
            save_codebook(context.run_dir / "codebook.safetensors", codebook.tensors())

    def short_code(self, pairs: torch.Tensor, bits: int) -> torch.Tensor:
        """(B, 2L) long pairs -> (B, 2S) short pairs: softmax over each pair of P T_S (no ReLU, spec §2.3)."""
        return pairwise_softmax(pairs @ self.codebook.transform(bits).to(pairs))

    def binarize(self, out: torch.Tensor) -> torch.Tensor:
        """The ``bits`` code: argmax of each pair of the long code, or of its projection P T_bits."""
        if self.bits == self.long_bits:
            return argmax_codes(out)
        return argmax_codes(out @ self.codebook.transform(self.bits).to(out))

    def draw_ties(self) -> dict[int, torch.Tensor]:
        """Tie vectors of the next batch, one per center set (long and every short length)."""
        step = int(self.codebook.tie_step)
        return {k: tie_vector(self.center_seed, step, k) for k in (self.long_bits, *self.short_bits)}

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        if "label" not in batch:
            raise ValueError("TwDH trains on class labels (hash centers); the batch has no 'label'")
        x, t = outputs["image"].float(), outputs["text"].float()
        labels = batch["label"]
        ties = self.draw_ties()
        self.codebook.tie_step += 1
        labelled = labels.sum(1) > 0

        def bce(pairs: torch.Tensor, centers: torch.Tensor, bits: int) -> torch.Tensor:
            if not labelled.any():
                return pairs.sum() * 0
            target = pair_onehot(center_targets(labels[labelled], centers, ties[bits].to(pairs.device)))
            return F.binary_cross_entropy(pairs[labelled], target)

        terms = {"bce": (bce(x, self.codebook.long, self.long_bits) + bce(t, self.codebook.long, self.long_bits)) / 2,
                 "quant": (pair_quantization(x) + pair_quantization(t)) / 2}
        total = terms["bce"] + self.quan_alpha * terms["quant"]
        if self.low_rate > 0:
            for s in self.short_bits:
                xs, ts = self.short_code(x, s), self.short_code(t, s)
                centers = self.codebook.short(s)
                terms[f"bce_{s}"] = (bce(xs, centers, s) + bce(ts, centers, s)) / 2
                terms[f"quant_{s}"] = (pair_quantization(xs) + pair_quantization(ts)) / 2
                total = total + self.low_rate * (terms[f"bce_{s}"] + terms[f"quant_{s}"])
        terms["total"] = total
        return terms
