"""The built-in synthetic datasets: real files in the DCMHT ``.mat``-triple layout (image-text pairs) or the
DeepHash-pytorch list-file layout (single-modal images, :func:`generate_images`), generated on first use.

Each pair shows 1-3 concepts out of ``num_classes``. A concept is a coloured shape drawn at a random place on a
noisy background, and the caption names the concepts among distractor words ("a photo of a red circle and a
blue square, very nice"). With probability ``noise`` a caption loses one concept word or gains a wrong
one, so the two modalities disagree a little, as real tags do. The concepts are easy enough for a tiny
random-initialised CLIP to learn within minutes on a CPU, and the files are read by the same reader as real
data.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

from common.register import registry
from common.schema import NonNegativeFloat, PositiveInt
from dataset.cifar import write_list_files
from dataset.cross_modal import DatasetSplits, make_datasets
from dataset.mat_triple import read_mat_triple, write_mat_triple
from dataset.records import DatasetError
from dataset.splits import make_split
from dataset.transforms import evaluation_transform

COLORS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (240, 220, 40),
          "purple": (150, 50, 200), "orange": (250, 140, 20), "cyan": (40, 220, 220), "pink": (250, 120, 200),
          "white": (250, 250, 250), "brown": (130, 80, 30), "gray": (140, 140, 140), "lime": (170, 250, 80)}
SHAPES = ("circle", "square", "triangle", "cross")
FILLERS = ("a", "photo", "of", "picture", "with", "and", "the", "image", "showing", "nice", "very", "scene",
           "some", "here", "we", "see", "old", "new", "small", "big")


def concept_names(num_classes: int) -> list[str]:
    """Concept k = colour k with shape k mod 4, e.g. 'red circle'."""
    if not 1 <= num_classes <= len(COLORS):
        raise ValueError(f"dataset.num_classes must be between 1 and {len(COLORS)}, got {num_classes}")
    return [f"{color} {SHAPES[k % len(SHAPES)]}" for k, color in enumerate(list(COLORS)[:num_classes])]


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], color) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=color)
    else:
        w = max((x1 - x0) // 3, 1)
        draw.rectangle((x0 + w, y0, x1 - w, y1), fill=color)
        draw.rectangle((x0, y0 + w, x1, y1 - w), fill=color)


def _caption(names: list[str], present: list[int], rng: np.random.Generator, noise: float) -> str:
    words = list(present)
    if rng.random() < noise and len(words) > 1:
        words.pop(rng.integers(len(words)))
    if rng.random() < noise:
        words.append(int(rng.integers(len(names))))
    rng.shuffle(words)
    parts = [" ".join(rng.choice(FILLERS, size=rng.integers(1, 4)))]
    for k in words:
        parts.append(names[k])
        parts.append(" ".join(rng.choice(FILLERS, size=rng.integers(0, 3))))
    return " ".join(p for p in parts if p)


MIN_IMAGE_SIZE = 5  # a shape is image_size // 3 + 1 (at least 5) pixels wide and needs one free position


def check_image_size(image_size) -> None:
    if not isinstance(image_size, (int, np.integer)) or image_size < MIN_IMAGE_SIZE:
        raise DatasetError(f"dataset.image_size must be an integer of at least {MIN_IMAGE_SIZE} for the synthetic "
                           f"dataset (its shapes are 5 pixels wide), got {image_size!r}")


def draw_scene(rng: np.random.Generator, present: list[int], image_size: int) -> Image.Image:
    """A noisy dark background with the shape of each concept in ``present`` at a random place."""
    shape_size = max(image_size // 3, 4)
    pixels = rng.integers(0, 70, size=(image_size, image_size, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for k in present:
        x, y = rng.integers(0, image_size - shape_size, size=2)
        color = COLORS[list(COLORS)[k]]
        _draw(draw, SHAPES[k % len(SHAPES)], (int(x), int(y), int(x) + shape_size, int(y) + shape_size), color)
    return image


@contextmanager
def staged_folder(out_dir: str | os.PathLike) -> Iterator[Path]:
    """A hidden ``.<name>.partial`` folder next to ``out_dir`` that replaces it when the block ends.

    On any failure the staging folder is removed, so ``out_dir`` is either complete or untouched.
    """
    out = Path(out_dir)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        yield staging
        shutil.rmtree(out, ignore_errors=True)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # what a failure left; nothing after the rename


def generate(out_dir: str | os.PathLike, num_samples: int = 2000, num_classes: int = 10, image_size: int = 32,
             noise: float = 0.1, seed: int = 0) -> Path:
    """Write ``num_samples`` pairs (images/ + index.mat + caption.mat + label.mat) into ``out_dir``
    (through :func:`staged_folder`)."""
    check_image_size(image_size)
    names = concept_names(num_classes)
    rng = np.random.default_rng(seed)
    with staged_folder(out_dir) as staging:
        (staging / "images").mkdir()
        paths, captions = [], []
        labels = np.zeros((num_samples, num_classes), dtype=np.uint8)
        for i in range(num_samples):
            present = sorted(rng.choice(num_classes, size=rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]), replace=False))
            labels[i, present] = 1
            rel = f"images/{i:06d}.png"
            draw_scene(rng, present, image_size).save(staging / rel)
            paths.append(rel)
            captions.append([_caption(names, [int(k) for k in present], rng, noise)])
        write_mat_triple(staging, paths, captions, labels)
    return Path(out_dir)


def generate_images(out_dir: str | os.PathLike, num_samples: int = 600, num_classes: int = 10, image_size: int = 32,
                    query_num: int = 100, train_num: int = 400, seed: int = 0) -> Path:
    """Write ``num_samples`` single-concept images and their DeepHash-pytorch list files into ``out_dir``.

    Each image shows one concept (so relevance is the class, as in CIFAR-10), drawn by :func:`draw_scene`;
    ``test.txt`` holds ``query_num`` images, ``train.txt`` the next ``train_num`` and ``database.txt`` every
    image but the queries (train inside the database, as the NUS-WIDE and MS-COCO lists have it).
    """
    check_image_size(image_size)
    concept_names(num_classes)  # checks the count
    rng = np.random.default_rng(seed)
    split = make_split(num_samples, preset="custom", query_num=query_num, train_num=train_num, seed=seed)
    with staged_folder(out_dir) as staging:
        (staging / "images").mkdir()
        classes = rng.integers(num_classes, size=num_samples)
        paths = []
        for i, k in enumerate(classes):
            paths.append(f"images/{i:06d}.png")
            draw_scene(rng, [int(k)], image_size).save(staging / paths[-1])
        write_list_files(str(staging), paths, np.eye(num_classes, dtype=np.uint8)[classes], split)
    return Path(out_dir)


@registry.register_dataset("synthetic", evaluator="cross_modal", evaluation_transform=evaluation_transform)
def synthetic(preprocess, seed: int, root: str = "data/synthetic", num_samples: PositiveInt = 2000,
              num_classes: PositiveInt = 10, image_size: PositiveInt = 32, noise: NonNegativeFloat = 0.1,
              data_seed: int = 0, query_num: PositiveInt = 200, train_num: PositiveInt = 1000, split_seed: int = 1814,
              train_transform: str = "original") -> DatasetSplits:
    """Generate the synthetic triple under ``root`` (once per parameter set) and split it like real data."""
    params = dict(num_samples=num_samples, num_classes=num_classes, image_size=image_size, noise=noise,
                  seed=data_seed)
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    folder = Path(root) / key
    if not (folder / "label.mat").is_file():
        generate(folder, **params)
    data = read_mat_triple(folder)
    split = make_split(len(data), preset="custom", query_num=query_num, train_num=train_num, seed=split_seed)
    return make_datasets(data, split, preprocess, train_transform=train_transform, seed=seed)
