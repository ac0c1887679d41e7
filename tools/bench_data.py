"""Loader throughput: JPEG files decoded every epoch (ImageFiles) vs the decoded memmap cache (ImageCache).

    python tools/bench_data.py --num-images 2000 --workers 2

Generates synthetic JPEGs (500 x 375, the typical size of MIRFlickr/COCO photos) in a temporary folder,
then reads one epoch of each source through a DataLoader with the CLIP evaluation transform at 224 and
prints images/s and the ratio. The cache's one-time build is timed separately.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from dataset.images import ImageCache, ImageFiles  # noqa: E402
from dataset.transforms import image_transform  # noqa: E402

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, source, transform):
        self.source, self.transform = source, transform

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        return self.transform(self.source[index])


def make_jpegs(folder: str, count: int, width: int = 500, height: int = 375, seed: int = 0) -> list[str]:
    """Photo-like JPEGs (smooth colour fields plus noise, so they compress and decode like real photos)."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for i in range(count):
        fx, fy, phase = rng.uniform(0.005, 0.05, 2).tolist() + [rng.uniform(0, 6.3)]
        base = np.stack([np.sin(xx * fx + phase), np.cos(yy * fy - phase), np.sin((xx + yy) * fx * 0.5)], -1)
        pixels = (base * 90 + 128 + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
        path = os.path.join(folder, f"{i:06d}.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def epoch_rate(source, workers: int, batch_size: int, size: int) -> float:
    """Images per second of one pass over ``source`` through a DataLoader."""
    transform = image_transform(size, CLIP_MEAN, CLIP_STD, train=False)
    loader = torch.utils.data.DataLoader(_Transformed(source, transform), batch_size=batch_size,
                                         num_workers=workers, persistent_workers=False)
    start = time.perf_counter()
    count = sum(len(batch) for batch in loader)
    return count / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        os.makedirs(os.path.join(tmp, "images"))
        paths = make_jpegs(os.path.join(tmp, "images"), args.num_images)
        print(f"generated {len(paths)} JPEGs (500x375) in {time.perf_counter() - start:.1f} s")
        files_rate = epoch_rate(ImageFiles(paths), args.workers, args.batch_size, args.size)
        start = time.perf_counter()
        cache = ImageCache(paths, args.size, os.path.join(tmp, "cache"))
        build = time.perf_counter() - start
        cache_rate = epoch_rate(cache, args.workers, args.batch_size, args.size)
    print(f"\nDataLoader, {args.workers} workers, batch {args.batch_size}, CLIP eval transform at {args.size}")
    print(f"{'source':<28}{'images/s':>10}")
    print(f"{'ImageFiles (JPEG decode)':<28}{files_rate:>10.1f}")
    print(f"{'ImageCache (memmap)':<28}{cache_rate:>10.1f}")
    print(f"ratio cache / files: {cache_rate / files_rate:.2f}x")
    print(f"one-time cache build: {build:.1f} s ({len(paths) / build:.1f} images/s)")


if __name__ == "__main__":
    main()
