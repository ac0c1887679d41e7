"""Image sources for the datasets: files on disk, an in-memory pixel array, or a decoded memmap cache.

JPEG decoding dominates the loader time of CLIP-based hashing (every image is decoded and resized every
epoch). :class:`ImageCache` decodes each image once into a uint8 memmap at the training resolution, which
later epochs and runs read without decoding (``tools/bench_data.py`` measures the gain). All sources are
picklable, so DataLoader workers receive them cheaply and open the memmap lazily in their own process.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from tqdm import tqdm

from dataset.records import DatasetError
from utils.io import write_files_atomically
from utils.logging import get_logger

logger = get_logger(__name__)


def load_rgb(path: str) -> Image.Image:
    """Decode one image file as RGB; a missing or unreadable file raises a DatasetError naming it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(f"image file not found: {path} (check dataset.image_root and dataset.path_keep)") from None
    except (OSError, SyntaxError, ValueError) as err:  # PIL reports truncated and corrupt data as these
        raise DatasetError(f"cannot decode image {path} ({type(err).__name__}: {err}); the file is corrupt or "
                           f"not an image, replace it") from None


class ImageFiles:
    """Images read from disk on every access."""

    def __init__(self, paths: list[str]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Image.Image:
        return load_rgb(self.paths[index])


class ImageArray:
    """Images held as a uint8 (N, H, W, 3) array, e.g. the ``.npy`` index variant or CIFAR-10."""

    def __init__(self, array: np.ndarray):
        array = np.asarray(array)
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
            raise DatasetError(f"image array must be uint8 of shape (N, H, W, 3), got {array.dtype} {array.shape}")
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: int) -> Image.Image:
        return Image.fromarray(self.array[index])


class ImageCache:
    """Images decoded once, resized to ``resolution`` x ``resolution`` (bicubic), and kept in a memmap.

    The cache is ``cache_dir/images_<resolution>.u8`` with a sidecar ``.json`` holding a hash of the path list
    and the resolution; a different list or resolution rebuilds it. The data file is complete before the
    sidecar is written (both via temporary files and renames), so an interrupted build is rebuilt next time.
    Resizing to a square squashes the aspect ratio, like a ``Resize((r, r))`` transform; later crops then
    act on the squashed image.
    """

    def __init__(self, paths: list[str], resolution: int, cache_dir: str):
        if not isinstance(resolution, int) or resolution < 1:
            raise DatasetError(f"image cache resolution must be a positive integer, got {resolution!r}")
        if not paths:
            raise DatasetError(f"no images to cache in {cache_dir}; the path list is empty")
        self.paths = list(paths)
        self.resolution = resolution
        stem = os.path.join(cache_dir, f"images_{resolution}")
        self.data_path, self.sidecar_path = stem + ".u8", stem + ".json"
        self.key = hashlib.sha256(json.dumps([resolution, self.paths]).encode("utf-8")).hexdigest()
        self._array = None
        if not self._is_current():
            self._build()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Image.Image:
        if self._array is None:
            self._array = np.memmap(self.data_path, dtype=np.uint8, mode="r", shape=self._shape())
        return Image.fromarray(np.array(self._array[index]))

    def __getstate__(self) -> dict:
        """Workers reopen the memmap themselves instead of receiving a copy of it."""
        state = dict(self.__dict__)
        state["_array"] = None
        return state

    def _shape(self) -> tuple[int, int, int, int]:
        return len(self.paths), self.resolution, self.resolution, 3

    def _is_current(self) -> bool:
        try:
            with open(self.sidecar_path, encoding="utf-8") as f:
                sidecar = json.load(f)
        except (OSError, ValueError):
            return False
        expected = int(np.prod(self._shape()))
        return (sidecar.get("key") == self.key and os.path.isfile(self.data_path)
                and os.path.getsize(self.data_path) == expected)

    def _build(self) -> None:
        logger.info("decoding %d images into %s at %dx%d", len(self.paths), self.data_path, self.resolution,
                    self.resolution)
        if os.path.exists(self.sidecar_path):
            os.unlink(self.sidecar_path)

        def fill(f) -> None:
            # PIL releases the GIL while decoding and resizing, so threads use every core.
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                decoded = pool.map(self._decode, self.paths)
                for pixels in tqdm(decoded, total=len(self.paths), desc="caching images", unit="img"):
                    f.write(pixels.tobytes())

        write_files_atomically({self.data_path: fill})
        sidecar = json.dumps({"key": self.key, "count": len(self.paths), "resolution": self.resolution})
        write_files_atomically({self.sidecar_path: lambda f: f.write(sidecar.encode("utf-8"))})

    def _decode(self, path: str) -> np.ndarray:
        image = load_rgb(path).resize((self.resolution, self.resolution), Image.Resampling.BICUBIC)
        return np.asarray(image, dtype=np.uint8)


def open_images(source: list[str] | np.ndarray, cache_dir: str | None = None,
                resolution: int | None = None) -> ImageFiles | ImageArray | ImageCache:
    """The image source for ``PairedData.images``: an array, a decoded cache (when ``cache_dir`` and
    ``resolution`` are given) or plain files."""
    if isinstance(source, np.ndarray):
        return ImageArray(source)
    if (cache_dir is None) != (resolution is None):
        raise DatasetError("the image cache needs both cache_dir and resolution (or neither, to read the files)")
    if cache_dir is not None:
        return ImageCache(source, resolution, cache_dir)
    return ImageFiles(source)
