"""The qualitative figure of the hashing papers: each query and its top-k results in a row.

Images are shown as thumbnails and captions as wrapped text; each result is titled with its rank and Hamming
distance and framed green (relevant: shares a label with the query), red (not relevant) or grey (no labels).
Drawn on a bare matplotlib ``Figure`` (no pyplot), so no global backend is touched.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

from matplotlib.figure import Figure

from dataset.images import load_rgb
from retrieval.searcher import Hit
from retrieval.sources import Item
from utils.io import atomic_write

FRAME = {True: "#1a9e3a", False: "#d62728", None: "#999999"}
MARK = {True: " \u2713", False: " \u2717", None: ""}


def _show(ax, image=None, text: str | None = None) -> None:
    if image is not None:
        ax.imshow(image)
    else:
        ax.text(0.5, 0.5, textwrap.fill(text or "", 22), ha="center", va="center", fontsize=7, wrap=True,
                transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _frame(ax, color: str, width: float) -> None:
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


def _record_image(record: dict):
    return load_rgb(record["path"]) if "path" in record and "text" not in record else None


def results_figure(queries: list[Item], results: list[list[Hit]], output: str | os.PathLike) -> Path:
    """Draw one row per query (the query, then its results) into the PNG ``output``."""
    columns = 1 + max((len(hits) for hits in results), default=0)
    fig = Figure(figsize=(1.7 * columns, 1.9 * len(queries)))
    axes = fig.subplots(len(queries), columns, squeeze=False)
    for row, (query, hits) in enumerate(zip(queries, results)):
        ax = axes[row][0]
        if query.modality == "image":
            _show(ax, image=query.input())
        else:
            _show(ax, text=query.input)
        ax.set_title("query", fontsize=8, fontweight="bold")
        _frame(ax, "black", 2.5)
        for column in range(1, columns):
            ax = axes[row][column]
            if column > len(hits):
                ax.axis("off")
                continue
            hit = hits[column - 1]
            _show(ax, image=_record_image(hit.record), text=hit.record.get("text"))
            ax.set_title(f"{hit.rank}. d={hit.distance}{MARK[hit.relevant]}", fontsize=8,
                         color=FRAME[hit.relevant] if hit.relevant is not None else "black")
            _frame(ax, FRAME[hit.relevant], 3)
    fig.tight_layout()
    output = Path(output)
    atomic_write(output, lambda f: fig.savefig(f, format="png", dpi=110))
    return output
