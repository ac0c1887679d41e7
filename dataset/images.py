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
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from tqdm import tqdm

from dataset.records import DatasetError, one_line
from utils.io import write_files_atomically
from utils.logging import get_logger

logger = get_logger(__name__)


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# Pillow raises these for files it cannot identify, truncated data and broken chunks, depending on the plugin.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, Image.DecompressionBombError)


def to_rgb(image: Image.Image) -> Image.Image:
    """A new 8-bit RGB copy of ``image``, whatever its Pillow mode; every image source decodes through this.

    ``Image.convert("RGB")`` clips values above 255, which turns a 16-bit image almost all white, so the
    numeric modes are scaled to 0-255 here first:

    - ``I;16`` (and ``I;16L``, ``I;16B``, ``I;16N``): 16-bit, divided by 257 (65535 -> 255) and rounded.
    - ``I`` (32-bit integer): treated as 16-bit (divided by 257) when its largest value is at most 65535,
      otherwise scaled by the int32 maximum (2147483647 -> 255); negative values become 0.
    - ``F`` (32-bit float): taken as 0-255 values, rounded and clipped to [0, 255] (NaN becomes 0); a float
      image in [0, 1] therefore comes out nearly black and must be rescaled before it is stored.

    The other modes use Pillow's own conversion: ``1`` is black/white, ``L`` grey, ``P`` its palette colours,
    ``CMYK``, ``YCbCr``, ``LAB`` and ``HSV`` are converted to RGB. Alpha (``RGBA``, ``RGBa``, ``LA``, ``La``,
    ``PA``, ``P`` with a transparency entry) is dropped, keeping the stored colour of every pixel as CLIP's
    preprocessing does; palette images with transparency go through RGBA so that Pillow does not warn.
    """
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        values = np.asarray(image)
        if mode == "F":
            scaled = np.nan_to_num(values.astype(np.float64), nan=0.0)
        elif mode == "I" and values.size and values.max() > 65535:
            scaled = values.astype(np.float64) * (255.0 / np.iinfo(np.int32).max)
        else:
            scaled = values.astype(np.float64) / 257.0
        grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "PA" or (mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    elif mode == "La":  # premultiplied alpha; Pillow converts it only to LA
        image = image.convert("LA")
    return image.convert("RGB")


def load_rgb(path: str) -> Image.Image:
    """Decode one image file as RGB by :func:`to_rgb`; a missing or unreadable file raises a one-line DatasetError
    naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            try:
                return to_rgb(image)
            except ValueError as err:  # a mode Pillow can read but not convert
                raise DatasetError(f"cannot convert image {path} from mode {mode} to RGB ({one_line(err)}); "
                                   f"save it as RGB, grey or 16-bit") from None
    except FileNotFoundError:
        raise DatasetError(f"image file not found: {path} (check dataset.image_root and dataset.path_keep)") from None
    except IsADirectoryError:
        raise DatasetError(f"{path} is a folder, expected an image file (check the paths in the index file)") from None
    except PermissionError:
        raise DatasetError(f"cannot read image {path}: permission denied (make the file readable)") from None
    except DatasetError:
        raise
    except _DECODE_ERRORS as err:
        raise DatasetError(f"cannot decode image {path} ({type(err).__name__}: {one_line(err)}); the file is "
                           f"truncated, corrupt or not an image, replace it") from None


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
