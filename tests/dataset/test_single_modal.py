"""Single-modal data: list files re-rooted, two augmented views for training, the spec's transforms, the
synthetic images in the list-file layout."""
import os

import numpy as np
import pytest
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import transforms as T

from common.register import registry
from dataset import single_modal  # noqa: F401  (registers the datasets)
from dataset.cifar import read_list_split
from dataset.records import DatasetError
from dataset.synthetic import COLORS, generate_images
from dataset.transforms import RandomGaussianBlur, contrastive_transform
from models.base import Preprocess

PREPROCESS = Preprocess(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), None)
FOREIGN = "/home/someone/data/NUS-WIDE/Flickr"


@pytest.fixture
def foreign_lists(tmp_path, jpegs):
    """List files written on another machine (absolute paths under FOREIGN), images under local/<concept>/."""
    names = [f"{concept}/{i:04d}.jpg" for i, concept in enumerate(["actor", "beach", "sky", "actor", "road"])]
    jpegs(str(tmp_path / "local"), names, size=40)
    rows = [f"{FOREIGN}/{name} {i % 2} {1 - i % 2}\n" for i, name in enumerate(names)]
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "test.txt").write_text("".join(rows[:2]))
    (lists / "train.txt").write_text("".join(rows[2:4]))
    (lists / "database.txt").write_text("".join(rows[2:]))
    return lists, names


def test_list_files_with_another_machines_paths_are_re_rooted(foreign_lists, tmp_path):
    lists, names = foreign_lists
    data, split = read_list_split(str(lists), str(tmp_path / "local"), path_keep=2, check_images="all")
    assert data.images == [str(tmp_path / "local" / n) for n in (names[:2] + names[2:4] + names[2:])]
    assert {k: v.tolist() for k, v in split.items()} == {"query": [0, 1], "train": [2, 3], "retrieval": [4, 5, 6]}
    built = registry.get("dataset", "image_list")(PREPROCESS, root=str(lists), image_root="../local", path_keep=2,
                                                 num_classes=2)
    assert (len(built.query), len(built.train), len(built.retrieval)) == (2, 2, 3)
    assert built.retrieval[2]["image"].shape == (3, 32, 32) and built.retrieval.labels.tolist()[2] == [0.0, 1.0]
    with pytest.raises(DatasetError, match=rf"test\.txt: stored path {FOREIGN}/actor/0000\.jpg is absolute; set "
                                           r"dataset\.path_keep"):
        read_list_split(str(lists), str(tmp_path / "local"))
    with pytest.raises(DatasetError, match=r"test\.txt: 2 of 2 checked image files do not exist \(first: "
                                           rf"{FOREIGN}/actor/0000\.jpg"):
        read_list_split(str(lists))


def test_label_width_must_match_the_dataset(foreign_lists, tmp_path):
    lists, _ = foreign_lists
    with pytest.raises(DatasetError, match=r"test\.txt: lines have 2 labels, dataset\.num_classes is 21; expected "
                                           r"one label column per class"):
        read_list_split(str(lists), str(tmp_path / "local"), path_keep=2, num_classes=21)
    (lists / "database.txt").write_text(f"{FOREIGN}/sky/0002.jpg 0 1 0\n")
    with pytest.raises(DatasetError, match=r"database\.txt: lines have 3 labels, test\.txt has 2"):
        read_list_split(str(lists), str(tmp_path / "local"), path_keep=2)


def test_two_independent_views_for_training_one_deterministic_view_for_evaluation(foreign_lists, tmp_path):
    lists, _ = foreign_lists
    data = registry.get("dataset", "image_list")(PREPROCESS, root=str(lists), image_root=str(tmp_path / "local"),
                                                path_keep=2)
    torch.manual_seed(0)
    item = data.train[0]
    assert item["image"].shape == item["image2"].shape == (3, 32, 32)
    assert not torch.equal(item["image"], item["image2"])
    assert torch.equal(data.query[1]["image"], data.query[1]["image"]) and "image2" not in data.query[1]
    assert data.train.transform.transforms[-1].mean == IMAGENET_DEFAULT_MEAN  # WCH normalises with ImageNet statistics
    backbone = registry.get("dataset", "image_list")(PREPROCESS, root=str(lists), image_root=str(tmp_path / "local"),
                                                    path_keep=2, normalize="backbone")
    assert backbone.query.transform.transforms[-1].std == (0.5, 0.5, 0.5)


def test_transforms_are_the_specs():
    """WCH spec §10, step by step."""
    train = contrastive_transform(224, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, train=True).transforms
    assert [type(t) for t in train] == [T.Resize, T.CenterCrop, T.RandomResizedCrop, T.RandomApply,
                                        T.RandomGrayscale, T.RandomApply, T.RandomHorizontalFlip, T.ToTensor,
                                        T.Normalize]
    resize, crop, resized_crop, jitter, gray, blur, flip, _, norm = train
    assert resize.size == 224 and resize.interpolation == T.InterpolationMode.BILINEAR and crop.size == (224, 224)
    assert resized_crop.size == (224, 224) and resized_crop.scale == (0.2, 1.0)
    assert resized_crop.ratio == pytest.approx((3 / 4, 4 / 3))
    colour = jitter.transforms[0]
    assert jitter.p == 0.8 and (colour.brightness, colour.contrast, colour.saturation, colour.hue) == (
        (0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1))
    assert gray.p == 0.2 and blur.p == 0.5 and isinstance(blur.transforms[0], RandomGaussianBlur)
    assert blur.transforms[0].sigma == (0.1, 2.0) and flip.p == 0.5
    assert norm.mean == (0.485, 0.456, 0.406) and norm.std == (0.229, 0.224, 0.225)
    evaluation = contrastive_transform(224, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, train=False).transforms
    assert [type(t) for t in evaluation] == [T.Resize, T.CenterCrop, T.ToTensor, T.Normalize]


def test_synthetic_images_show_their_class_in_the_list_file_layout(tmp_path):
    out = generate_images(tmp_path / "images", num_samples=40, num_classes=4, image_size=12, query_num=5,
                          train_num=20, seed=0)
    assert sorted(os.listdir(tmp_path)) == ["images"]  # no staging folder left
    data, split = read_list_split(str(out), check_images="all")
    assert (len(split["query"]), len(split["train"]), len(split["retrieval"])) == (5, 20, 35)
    assert (data.labels.sum(axis=1) == 1).all()
    from PIL import Image
    for path, label in zip(data.images[:8], data.labels[:8]):
        colour = COLORS[list(COLORS)[int(label.argmax())]]
        assert (np.asarray(Image.open(path)) == colour).all(axis=-1).any()  # the class's colour is drawn
