"""Evaluation of computed hash codes: the numbers, the log table, the curves and the ``.mat`` export.

The runner calls :func:`evaluate_retrieval` once the query and retrieval codes of both modalities exist. Codes
are files of the run too (``codes/*.mat`` with the keys of the reference frameworks, so their plotting
scripts keep working), and :func:`save_curves` writes the PR and top-N curves that ``tools/plot_curves.py``
overlays across runs.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
import scipy.io
import torch

from common import metrics
from common.schema import PositiveInt, validate
from utils.io import atomic_write
from utils.logging import get_logger

logger = get_logger(__name__)

# direction -> (query codes key, retrieval codes key); labels are shared by both modalities of an item.
DIRECTIONS = {
    "i2t": ("query_image", "retrieval_text"),
    "t2i": ("query_text", "retrieval_image"),
    "i2i": ("query_image", "retrieval_image"),
    "t2t": ("query_text", "retrieval_text"),
}
CODE_KEYS = ("query_image", "query_text", "retrieval_image", "retrieval_text")
LABEL_KEYS = ("query", "retrieval")
# .mat keys of the reference frameworks (kalenforn/clip-based-cross-modal-hash and its descendants).
MAT_KEYS = {
    "query_image": "q_img",
    "query_text": "q_txt",
    "retrieval_image": "r_img",
    "retrieval_text": "r_txt",
    "query": "q_l",
    "retrieval": "r_l",
}
CURVE_DIRECTIONS = ("i2t", "t2i")
CURVES = ("pr", "topn")
# columns each curve's CSV must have for plotting
CURVE_COLUMNS = {"pr": ("precision_micro", "recall_micro"), "topn": ("n", "precision", "recall")}


Direction = Literal["i2t", "t2i", "i2i", "t2t"]


@dataclass
class EvalConfig:
    """What :func:`evaluate_retrieval` reports (the ``eval`` section of labelled cross-modal datasets).

    Attributes:
        map_topk: cut-offs of mAP@K (variant ``standard``, spec V-nK, the papers' "mAP@K"); None stands for the
            full ranking, whose mAP@all is always reported.
        precision_k: cut-offs of P@K, R@K and NDCG@K.
        tie_aware: also report the tie-aware mAP@all (``mAP@all[tie]``), which no tie order can move.
        tie_break: order of equal Hamming distances: ``index`` (ascending database index) or ``reverse``.
        directions: which of i2t, t2i, i2i, t2t to evaluate.
        chunk_size: queries per chunk; None bounds the work memory automatically.
    """

    map_topk: Sequence[PositiveInt | None] = (None, 1000, 5000)
    precision_k: Sequence[PositiveInt] = (1, 5, 10, 50, 100, 1000)
    tie_aware: bool = True
    tie_break: Literal["index", "reverse"] = "index"
    directions: Sequence[Direction] = ("i2t", "t2i", "i2i", "t2t")
    chunk_size: PositiveInt | None = None

    def __post_init__(self):
        self.map_topk = tuple(self.map_topk)
        self.precision_k = tuple(self.precision_k)
        self.directions = tuple(self.directions)
        validate(self)
        if not self.directions:
            raise ValueError("EvalConfig.directions must name at least one direction")


def _require(mapping: Mapping, keys: Sequence[str], name: str) -> None:
    missing = [key for key in keys if key not in mapping]
    if missing:
        raise ValueError(f"{name} must have the keys {', '.join(keys)}; missing {', '.join(missing)}")


def evaluate_retrieval(codes: Mapping, labels: Mapping, cfg: EvalConfig | None = None) -> dict[str, dict[str, float]]:
    """mAP@all, mAP@K, P@K, R@K and NDCG@K for each retrieval direction.

    Args:
        codes: {-1, +1} code matrices under ``query_image``, ``query_text``, ``retrieval_image`` and
            ``retrieval_text`` (tensors or arrays).
        labels: multi-hot label matrices under ``query`` and ``retrieval``.
        cfg: what to compute; defaults to ``EvalConfig()``.

    Returns:
        ``{direction: {metric: value}}``, e.g. ``{"i2t": {"mAP@all": ..., "mAP@1000": ..., "P@10": ...}}``, with
        the counts ``num_zero_relevant`` and ``num_zero_found@K`` that say how many queries had no relevant
        item at all, or none in the top K.
    """
    cfg = cfg or EvalConfig()
    needed = sorted({key for name in cfg.directions for key in DIRECTIONS[name]}, key=CODE_KEYS.index)
    _require(codes, needed, "codes")
    _require(labels, LABEL_KEYS, "labels")
    results = {}
    for name in cfg.directions:
        query_key, retrieval_key = DIRECTIONS[name]
        results[name] = metrics.retrieval_metrics(
            codes[query_key], codes[retrieval_key], labels["query"], labels["retrieval"],
            map_topk=cfg.map_topk, ks=cfg.precision_k, tie_aware=cfg.tie_aware, tie_break=cfg.tie_break,
            chunk_size=cfg.chunk_size,
        )
        logger.debug("%s: %s", name, results[name])
    return results


def format_table(results: Mapping[str, Mapping[str, float]], tie_break: str = "index",
                 footer: str | None = None) -> str:
    """A compact text table for the log: one row per metric, one column per direction.

    A footer names the definitions (by default those of the hashing metrics: mAP variant, tie rule,
    zero-relevant policy), as spec section 11 asks.
    """
    directions = list(results)
    names = list(dict.fromkeys(name for values in results.values() for name in values))
    width = max([len("metric")] + [len(name) for name in names])
    lines = [f"{'metric':<{width}}" + "".join(f"{d:>10}" for d in directions)]
    for name in names:
        cells = []
        for d in directions:
            value = results[d].get(name)
            if value is None:
                cells.append(f"{'-':>10}")
            elif name.startswith("num_"):
                cells.append(f"{int(value):>10d}")
            else:
                cells.append(f"{value:>10.4f}")
        lines.append(f"{name:<{width}}" + "".join(cells))
    lines.append(footer or f"mAP@K = variant standard (V-nK); equal distances ranked by {tie_break} tie-break; "
                 "[tie] = expectation over random tie order; queries with no relevant item count 0")
    return "\n".join(lines)


def save_curves(
    codes: Mapping, labels: Mapping, out_dir: str | os.PathLike, chunk_size: int | None = None,
    directions: Sequence[str] = CURVE_DIRECTIONS,
) -> list[Path]:
    """Write PR (by Hamming radius) and top-N curves of ``directions`` as CSV and PNG files into out_dir.

    Files are ``pr_<direction>.csv|png`` and ``topn_<direction>.csv|png``; ``tools/plot_curves.py`` overlays
    the CSV files of several runs.

    Returns:
        The written paths.
    """
    needed = sorted({key for name in directions for key in DIRECTIONS[name]}, key=CODE_KEYS.index)
    _require(codes, needed, "codes")
    _require(labels, LABEL_KEYS, "labels")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in directions:
        query_key, retrieval_key = DIRECTIONS[name]
        args = (codes[query_key], codes[retrieval_key], labels["query"], labels["retrieval"])
        curves = {
            "pr": metrics.pr_curve(*args, chunk_size=chunk_size),
            "topn": metrics.topn_precision_curve(*args, chunk_size=chunk_size),
        }
        for curve, columns in curves.items():
            csv_path = out / f"{curve}_{name}.csv"
            write_curve_csv(csv_path, columns)
            png_path = out / f"{curve}_{name}.png"
            draw_curves(curve, name, {"": columns}, png_path)
            written += [csv_path, png_path]
    return written


def write_curve_csv(path: str | os.PathLike, columns: Mapping[str, np.ndarray]) -> None:
    """One column per curve quantity, one row per point."""
    names = list(columns)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for row in zip(*(np.asarray(columns[name]) for name in names)):
            writer.writerow([f"{v:.6f}" if isinstance(v, (float, np.floating)) else str(v) for v in row])


def read_curve_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Inverse of :func:`write_curve_csv`; raises ValueError naming the file if it is not such a table."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2 or any(len(row) != len(rows[0]) for row in rows):
        raise ValueError(f"{path}: expected a header and rows of {len(rows[0]) if rows else 0} values")
    try:
        values = np.array(rows[1:], dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"{path}: non-numeric value ({err})") from None
    return {name: values[:, i] for i, name in enumerate(rows[0])}


def draw_curves(
    curve: str, direction: str, runs: Mapping[str, Mapping[str, np.ndarray]], path: str | os.PathLike
) -> None:
    """Plot one curve type of one direction for one or more runs (labelled by the keys of ``runs``).

    ``pr`` draws micro-averaged precision against recall over Hamming radii; ``topn`` draws mean P@N and R@N
    against N side by side. Uses matplotlib's Agg canvas directly, so no global backend is touched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if curve not in CURVES:
        raise ValueError(f"curve must be one of {', '.join(CURVES)}, got {curve!r}")
    for label, columns in runs.items():
        missing = [key for key in CURVE_COLUMNS[curve] if key not in columns]
        if missing:
            raise ValueError(f"{curve} curve {label or direction!r} lacks the column(s) {', '.join(missing)}")
    if curve == "pr":
        fig = Figure(figsize=(5, 4))
        ax = fig.add_subplot()
        for label, columns in runs.items():
            ax.plot(columns["recall_micro"], columns["precision_micro"], marker=".", label=label or None)
        ax.set(xlabel="recall", ylabel="precision", title=f"{direction}: PR by Hamming radius (micro)")
        axes = [ax]
    else:
        fig = Figure(figsize=(10, 4))
        left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        for label, columns in runs.items():
            left.plot(columns["n"], columns["precision"], label=label or None)
            right.plot(columns["n"], columns["recall"], label=label or None)
        left.set(xlabel="N", ylabel="precision@N", title=f"{direction}: precision@top-N")
        right.set(xlabel="N", ylabel="recall@N", title=f"{direction}: recall@top-N")
        axes = [left, right]
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if any(runs):
            ax.legend(fontsize="small")
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(path))


def _to_numpy(x, name: str) -> np.ndarray:
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {array.shape}")
    return array


def export_codes_mat(path: str | os.PathLike, codes: Mapping, labels: Mapping) -> None:
    """Write codes and labels as a MATLAB .mat file with the reference frameworks' keys.

    Keys: q_img, q_txt, r_img, r_txt (codes; those of the modalities present, e.g. only q_img and r_img for
    single-modal retrieval) and q_l, r_l (labels), all float32 as those frameworks save them. The write is
    atomic (:mod:`utils.io`).
    """
    present = [key for key in CODE_KEYS if key in codes]
    if not any(k.startswith("query") for k in present) or not any(k.startswith("retrieval") for k in present):
        raise ValueError(f"codes must hold query and retrieval codes under {', '.join(CODE_KEYS)}; got "
                         f"{', '.join(codes) or 'none'}")
    _require(labels, LABEL_KEYS, "labels")
    arrays = {MAT_KEYS[key]: _to_numpy(codes[key], f"codes[{key!r}]").astype(np.float32) for key in present}
    arrays.update({MAT_KEYS[key]: _to_numpy(labels[key], f"labels[{key!r}]").astype(np.float32) for key in LABEL_KEYS})
    atomic_write(path, lambda f: scipy.io.savemat(f, arrays, do_compression=False))


def load_codes_mat(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Read a file written by :func:`export_codes_mat` (or by the reference frameworks).

    Returns:
        ``(codes, labels)`` dicts of float32 tensors under the keys :func:`evaluate_retrieval` takes (the code
        matrices the file holds: all four, or those of one modality).
    """
    try:
        content = scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except Exception as err:  # scipy raises several types for a file that is not a .mat
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({err})") from None
    complete = [pair for pair in (("q_img", "r_img"), ("q_txt", "r_txt")) if all(k in content for k in pair)]
    missing = [key for key in MAT_KEYS.values() if key not in content and (key in ("q_l", "r_l") or not complete)]
    if missing:
        raise ValueError(f"{path}: missing the key(s) {', '.join(missing)} (expected {', '.join(MAT_KEYS.values())}, "
                         f"or the codes of one modality)")
    loaded = {key: torch.from_numpy(np.asarray(content[mat_key], dtype=np.float32))
              for key, mat_key in MAT_KEYS.items() if mat_key in content}
    return {key: loaded[key] for key in CODE_KEYS if key in loaded}, {key: loaded[key] for key in LABEL_KEYS}
