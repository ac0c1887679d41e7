import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from dataset import images as images_module
from dataset.images import ImageArray, ImageCache, ImageFiles, open_images
from dataset.records import DatasetError


class _Pixels(torch.utils.data.Dataset):
    """Wraps an image source the way a training Dataset does, to run it through DataLoader workers."""

    def __init__(self, source):
        self.source = source

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        return torch.from_numpy(np.asarray(self.source[index]).copy())


def test_image_files_rgb(tmp_path, jpegs):
    paths = jpegs(str(tmp_path), ["a.jpg", "b.jpg"])
    Image.new("L", (5, 4), 128).save(tmp_path / "gray.png")
    files = ImageFiles(paths + [str(tmp_path / "gray.png")])
    assert len(files) == 3
    assert files[0].mode == "RGB" and files[0].size == (10, 8)
    assert files[2].mode == "RGB" and files[2].size == (5, 4)


def test_missing_and_corrupt_images(tmp_path, jpegs):
    good = jpegs(str(tmp_path), ["good.jpg"])[0]
    (tmp_path / "garbage.jpg").write_bytes(b"this is not a jpeg")
    (tmp_path / "truncated.jpg").write_bytes(open(good, "rb").read()[:40])
    files = ImageFiles([str(tmp_path / "none.jpg"), str(tmp_path / "garbage.jpg"), str(tmp_path / "truncated.jpg")])
    with pytest.raises(DatasetError, match=r"image file not found: .*none\.jpg \(check dataset\.image_root"):
        files[0]
    with pytest.raises(DatasetError, match=r"cannot decode image .*garbage\.jpg .*replace it"):
        files[1]
    with pytest.raises(DatasetError, match=r"cannot decode image .*truncated\.jpg"):
        files[2]


def test_image_array():
    pixels = np.random.RandomState(0).randint(0, 256, (2, 3, 4, 3)).astype(np.uint8)
    source = ImageArray(pixels)
    assert len(source) == 2 and (np.asarray(source[1]) == pixels[1]).all()
    with pytest.raises(DatasetError, match=r"uint8 of shape \(N, H, W, 3\), got float64 \(2, 3\)"):
        ImageArray(np.zeros((2, 3)))


def test_cache_matches_bicubic_resize_and_is_reused(tmp_path, jpegs, monkeypatch):
    paths = jpegs(str(tmp_path / "img"), [f"{i}.jpg" for i in range(5)], size=12)
    cache = ImageCache(paths, 6, str(tmp_path / "cache"))
    expected = Image.open(paths[3]).convert("RGB").resize((6, 6), Image.Resampling.BICUBIC)
    assert cache[3].size == (6, 6) and (np.asarray(cache[3]) == np.asarray(expected)).all()
    assert sorted(os.listdir(tmp_path / "cache")) == ["images_6.json", "images_6.u8"]

    def no_decoding(*args):
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(ImageCache, "_decode", no_decoding)
    again = ImageCache(paths, 6, str(tmp_path / "cache"))
    assert (np.asarray(again[4]) == np.asarray(cache[4])).all()
    monkeypatch.undo()

    ImageCache(paths[::-1], 6, str(tmp_path / "cache"))
    reordered = ImageCache(paths[::-1], 6, str(tmp_path / "cache"))
    assert (np.asarray(reordered[0]) == np.asarray(cache[4])).all()
    ImageCache(paths, 4, str(tmp_path / "cache"))
    assert sorted(os.listdir(tmp_path / "cache")) == ["images_4.json", "images_4.u8", "images_6.json", "images_6.u8"]


def test_cache_build_error_leaves_nothing(tmp_path, jpegs):
    paths = jpegs(str(tmp_path / "img"), ["0.jpg", "1.jpg"])
    (tmp_path / "img" / "1.jpg").write_bytes(b"broken")
    with pytest.raises(DatasetError, match=r"cannot decode image .*1\.jpg"):
        ImageCache(paths, 4, str(tmp_path / "cache"))
    assert os.listdir(tmp_path / "cache") == []


def test_cache_pickles_without_pixels_and_works_in_workers(tmp_path, jpegs):
    paths = jpegs(str(tmp_path / "img"), [f"{i}.jpg" for i in range(6)])
    cache = ImageCache(paths, 4, str(tmp_path / "cache"))
    cache[0]
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._array is None and (np.asarray(clone[5]) == np.asarray(cache[5])).all()
    loader = torch.utils.data.DataLoader(_Pixels(cache), batch_size=3, num_workers=2)
    batches = torch.cat(list(loader))
    assert batches.shape == (6, 4, 4, 3)
    assert (batches[2].numpy() == np.asarray(cache[2])).all()


def test_open_images_picks_the_source(tmp_path, jpegs):
    paths = jpegs(str(tmp_path / "img"), ["0.jpg"])
    assert isinstance(open_images(np.zeros((1, 2, 2, 3), np.uint8)), ImageArray)
    assert isinstance(open_images(paths), ImageFiles)
    assert isinstance(open_images(paths, str(tmp_path / "c"), 4), ImageCache)
    with pytest.raises(DatasetError, match="needs both cache_dir and resolution"):
        open_images(paths, cache_dir=str(tmp_path / "c"))
    with pytest.raises(DatasetError, match="positive integer"):
        ImageCache(paths, 0, str(tmp_path / "c"))
    assert images_module.load_rgb(paths[0]).mode == "RGB"


GRADIENT_16 = np.array([[0, 1, 128, 129, 257, 1000, 32767, 32896],
                        [40000, 51400, 65000, 65278, 65279, 65534, 65535, 0]], dtype=np.uint16)
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30)]


def _grey(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.uint8)
    return np.repeat(values[..., None], 3, axis=-1)


def _palette(transparency=None) -> Image.Image:
    image = Image.new("P", (4, 1))
    image.putpalette([c for colour in COLOURS for c in colour])
    image.putdata([0, 1, 2, 3])
    if transparency is not None:
        image.info["transparency"] = transparency
    return image


def _rgb_with(extra: list[int], mode: str) -> Image.Image:
    return Image.fromarray(np.array([[list(c) + [e] for c, e in zip(COLOURS, extra)]], dtype=np.uint8), mode)


# (mode written, file format, image, mode Pillow reads back, expected RGB pixels).
MODE_CASES = {
    "1": ("png", lambda: Image.fromarray(np.array([[False, True, True, False]])), "1", _grey([[0, 255, 255, 0]])),
    "L": ("png", lambda: Image.fromarray(np.array([[0, 1, 128, 255]], dtype=np.uint8)), "L",
          _grey([[0, 1, 128, 255]])),
    "P": ("png", _palette, "P", np.array([COLOURS], dtype=np.uint8)),
    "P-transparency-bytes": ("png", lambda: _palette(bytes([255, 0, 128, 255])), "P",
                             np.array([COLOURS], dtype=np.uint8)),
    "P-transparency-index": ("gif", lambda: _palette(1), "P", np.array([COLOURS], dtype=np.uint8)),
    "RGB": ("png", lambda: Image.fromarray(np.array([COLOURS], dtype=np.uint8)), "RGB",
            np.array([COLOURS], dtype=np.uint8)),
    "RGBA": ("png", lambda: _rgb_with([255, 0, 128, 10], "RGBA"), "RGBA", np.array([COLOURS], dtype=np.uint8)),
    "LA": ("png", lambda: Image.fromarray(np.array([[[0, 255], [90, 0], [200, 128], [255, 3]]], dtype=np.uint8),
                                          "LA"), "LA", _grey([[0, 90, 200, 255]])),
    # CMYK values on which Pillow's naive conversion is exact: red, black, white, cyan.
    "CMYK": ("tiff", lambda: Image.fromarray(np.array([[[0, 255, 255, 0], [0, 0, 0, 255], [0, 0, 0, 0],
                                                        [255, 0, 0, 0]]], dtype=np.uint8), "CMYK"), "CMYK",
             np.array([[(255, 0, 0), (0, 0, 0), (255, 255, 255), (0, 255, 255)]], dtype=np.uint8)),
    # Neutral chroma (128, 128): RGB equals the luma.
    "YCbCr": ("tiff", lambda: Image.fromarray(np.array([[[0, 128, 128], [64, 128, 128], [200, 128, 128],
                                                         [255, 128, 128]]], dtype=np.uint8), "YCbCr"), "YCbCr",
              _grey([[0, 64, 200, 255]])),
    "I;16": ("png", lambda: Image.fromarray(GRADIENT_16), "I;16", None),
    "I;16B": ("tiff", lambda: Image.frombytes("I;16B", GRADIENT_16.shape[::-1], GRADIENT_16.astype(">u2").tobytes()),
              "I;16B", None),
    "I-16-bit-range": ("tiff", lambda: Image.fromarray(GRADIENT_16.astype(np.int32)), "I", None),
    "I-32-bit-range": ("tiff", lambda: Image.fromarray(np.array([[0, -5, 2 ** 30, 2 ** 31 - 1]], dtype=np.int32)),
                       "I", _grey([[0, 0, 128, 255]])),
    "F": ("tiff", lambda: Image.fromarray(np.array([[-3.0, 0.4, 12.6, 200.25, 300.0]], dtype=np.float32)), "F",
          _grey([[0, 0, 13, 200, 255]])),
}


def _expected_16_bit() -> np.ndarray:
    """65535 -> 255 by dividing by 257 and rounding; 32896 = 128 * 257 -> 128."""
    expected = np.floor(GRADIENT_16.astype(np.float64) / 257 + 0.5).astype(np.uint8)
    assert expected[0].tolist() == [0, 0, 0, 1, 1, 4, 127, 128] and expected[1, -2] == 255
    return _grey(expected)


@pytest.mark.parametrize("case", sorted(MODE_CASES))
def test_every_pillow_mode_reads_as_rgb(tmp_path, case):
    fmt, make, read_mode, expected = MODE_CASES[case]
    path = str(tmp_path / f"image.{fmt}")
    make().save(path)
    with Image.open(path) as written:
        assert written.mode == read_mode  # the file really holds the mode under test
    expected = _expected_16_bit() if expected is None else expected
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Pillow's warning for palette transparency converted to RGB
        image = images_module.load_rgb(path)
    assert image.mode == "RGB"
    assert np.asarray(image).tolist() == expected.tolist()


@pytest.mark.parametrize("mode", ["I;16L", "I;16N"])
def test_16_bit_variants_in_memory(mode):
    raw = GRADIENT_16.astype("<u2" if mode == "I;16L" else "=u2").tobytes()
    image = Image.frombytes(mode, GRADIENT_16.shape[::-1], raw)
    assert image.mode == mode
    assert np.asarray(images_module.to_rgb(image)).tolist() == _expected_16_bit().tolist()


def test_cache_decodes_16_bit_images_like_files(tmp_path):
    Image.fromarray(np.full((6, 6), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    cache = ImageCache([str(tmp_path / "deep.png")], 4, str(tmp_path / "cache"))
    assert (np.asarray(cache[0]) == 156).all()  # 40000 / 257 = 155.6; clipping gave 255
    assert (np.asarray(ImageFiles([str(tmp_path / "deep.png")])[0]) == 156).all()


def test_unreadable_image_errors_are_one_line_and_name_the_file(tmp_path):
    deep = tmp_path / "deep.png"
    Image.fromarray(GRADIENT_16).save(deep)
    (tmp_path / "cut.png").write_bytes(deep.read_bytes()[:60])
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    cases = {"cut.png": r"cannot decode image .*cut\.png .*truncated, corrupt or not an image, replace it",
             "folder.png": r"folder\.png is a folder, expected an image file",
             "empty.png": r"cannot decode image .*empty\.png",
             "none.png": r"image file not found: .*none\.png"}
    for name, pattern in cases.items():
        with pytest.raises(DatasetError, match=pattern) as caught:
            images_module.load_rgb(str(tmp_path / name))
        assert "\n" not in str(caught.value)
