import os

import pytest

from dataset import synthetic
from dataset.mat_triple import read_mat_triple
from dataset.records import DatasetError


def _leftovers(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".partial"))


@pytest.mark.parametrize("size", [1, 2, 4])
def test_too_small_image_size_is_refused_and_leaves_nothing(tmp_path, size):
    with pytest.raises(DatasetError, match=rf"^dataset\.image_size must be an integer of at least 5 for the synthetic "
                                           rf"dataset \(its shapes are 5 pixels wide\), got {size}$"):
        synthetic.generate(tmp_path / "out", num_samples=4, image_size=size)
    assert os.listdir(tmp_path) == []


def test_smallest_image_size_draws_every_shape(tmp_path):
    out = synthetic.generate(tmp_path / "out", num_samples=40, num_classes=4, image_size=5)
    data = read_mat_triple(str(out), check_images="all")
    assert len(data) == 40 and data.labels.sum(axis=1).min() >= 1
    assert _leftovers(tmp_path) == []


def test_failure_while_writing_removes_the_staging_folder(tmp_path, monkeypatch):
    synthetic.generate(tmp_path / "out", num_samples=3, image_size=8)
    before = sorted(os.listdir(tmp_path / "out"))

    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(synthetic, "write_mat_triple", full_disk)
    with pytest.raises(OSError, match="No space left"):
        synthetic.generate(tmp_path / "out", num_samples=3, image_size=8, seed=1)
    assert _leftovers(tmp_path) == [] and sorted(os.listdir(tmp_path / "out")) == before
    calls = []

    def fails_on_sixth_shape(*args):  # an image has at most 3 shapes, so the first image was already saved
        calls.append(args)
        if len(calls) == 6:
            raise RuntimeError("drawing failed")

    monkeypatch.setattr(synthetic, "_draw", fails_on_sixth_shape)
    with pytest.raises(RuntimeError, match="drawing failed"):
        synthetic.generate(tmp_path / "other", num_samples=10, image_size=8)
    assert _leftovers(tmp_path) == [] and not (tmp_path / "other").exists()
