import json

import numpy as np
import pytest

from dataset.caption_pairs import folds, read_albef, read_karpathy, read_precomp
from dataset.records import DatasetError


def _sentence(raw):
    return {"raw": raw, "tokens": raw.lower().rstrip(".").split(), "imgid": 0, "sentid": 0}


def _karpathy_coco(path):
    images = [
        {"filepath": "val2014", "filename": "COCO_val2014_000000000042.jpg", "cocoid": 42, "imgid": 0,
         "split": "test", "sentids": [0, 1], "sentences": [_sentence("A Dog."), _sentence("Brown dog ")]},
        {"filepath": "train2014", "filename": "COCO_train2014_000000000009.jpg", "cocoid": 9, "imgid": 1,
         "split": "train", "sentids": [2], "sentences": [_sentence("Food.")]},
        {"filepath": "val2014", "filename": "COCO_val2014_000000000073.jpg", "cocoid": 73, "imgid": 2,
         "split": "restval", "sentids": [3], "sentences": [_sentence("A bike.")]},
        {"filepath": "val2014", "filename": "COCO_val2014_000000000074.jpg", "cocoid": 74, "imgid": 3,
         "split": "test", "sentids": [4, 5, 6], "sentences": [_sentence(s) for s in ("A", "B", "C")]},
    ]
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))


def test_karpathy_test_split(tmp_path):
    _karpathy_coco(tmp_path / "dataset_coco.json")
    data = read_karpathy(str(tmp_path / "dataset_coco.json"), "/coco", split="test")
    assert data.images == ["/coco/val2014/COCO_val2014_000000000042.jpg", "/coco/val2014/COCO_val2014_000000000074.jpg"]
    assert data.captions == ["A Dog.", "Brown dog", "A", "B", "C"]
    assert data.img2txt == [[0, 1], [2, 3, 4]]
    assert data.txt2img.tolist() == [0, 0, 1, 1, 1] and data.txt2img.dtype == np.int64


def test_karpathy_train_includes_restval_and_tokens(tmp_path):
    _karpathy_coco(tmp_path / "dataset_coco.json")
    data = read_karpathy(str(tmp_path / "dataset_coco.json"), "/coco", split="train", text="tokens")
    assert len(data) == 2 and data.captions == ["food", "a bike"]


def test_karpathy_flickr_without_filepath(tmp_path):
    images = [{"filename": "1000092795.jpg", "imgid": 0, "split": "test",
               "sentences": [_sentence(f"c{i}") for i in range(5)]}]
    (tmp_path / "f.json").write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    data = read_karpathy(str(tmp_path / "f.json"), "/f30k/images", captions_per_image="first5")
    assert data.images == ["/f30k/images/1000092795.jpg"] and len(data.captions) == 5


def test_first5_needs_five(tmp_path):
    _karpathy_coco(tmp_path / "dataset_coco.json")
    with pytest.raises(DatasetError, match=r"'first5' needs 5 captions per image; 2 images have fewer"):
        read_karpathy(str(tmp_path / "dataset_coco.json"), "/coco", captions_per_image="first5")
    with pytest.raises(DatasetError, match="Karpathy split must be one of train, val, test, restval"):
        read_karpathy(str(tmp_path / "dataset_coco.json"), "/coco", split="dev")


def test_albef_train_and_eval_files(tmp_path):
    train = [{"image": "a.jpg", "caption": "one", "image_id": "a"},
             {"image": "b.jpg", "caption": "two", "image_id": "b"},
             {"image": "a.jpg", "caption": "three", "image_id": "a"}]
    (tmp_path / "train.json").write_text(json.dumps(train))
    data = read_albef(str(tmp_path / "train.json"), "/img", split="train")
    assert data.images == ["/img/a.jpg", "/img/b.jpg"] and data.img2txt == [[0, 1], [2]]
    assert data.captions == ["one", "three", "two"]
    (tmp_path / "test.json").write_text(json.dumps([{"image": "c.jpg", "caption": ["x", "y"]}]))
    assert read_albef(str(tmp_path / "test.json"), "/img").captions == ["x", "y"]
    (tmp_path / "bad.json").write_text(json.dumps([{"img": "c.jpg"}]))
    with pytest.raises(DatasetError, match=r"bad\.json: entry 0 lacks 'image' or 'caption'"):
        read_albef(str(tmp_path / "bad.json"), "/img")


def test_precomp_and_folds(tmp_path):
    (tmp_path / "test_caps.txt").write_text("".join(f"caption {i}\n" for i in range(20)))
    data = read_precomp(str(tmp_path / "test_caps.txt"))
    assert len(data) == 4 and data.txt2img[7] == 1 and data.img2txt[3] == [15, 16, 17, 18, 19]
    parts = folds(data, fold_size=2)
    assert len(parts) == 2 and parts[1].captions[0] == "caption 10" and parts[1].img2txt[0] == [0, 1, 2, 3, 4]
    assert parts[1].images == ["2", "3"]
    with pytest.raises(DatasetError, match="4 images do not split into folds of 3"):
        folds(data, fold_size=3)
    (tmp_path / "odd_caps.txt").write_text("a\nb\nc\n")
    with pytest.raises(DatasetError, match=r"odd_caps\.txt: 3 captions is not a multiple of 5 per image"):
        read_precomp(str(tmp_path / "odd_caps.txt"))
