import os
import pickle

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
