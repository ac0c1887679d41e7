"""Label-free caption data through the real runner: pairs as positives, Recall@K evaluation."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from dataset.caption_pairs import from_groups
from dataset.caption_retrieval import CaptionEval
from main import main


def test_recall_of_perfect_codes_and_fold_average():
    data = from_groups([f"{i}.jpg" for i in range(4)], [["a", "b"], ["c", "d"], ["e", "f"], ["g", "h"]], "test", {})
    image = torch.tensor([[1.0, 1], [1, -1], [-1, 1], [-1, -1]])
    text = image.repeat_interleave(2, dim=0)
    whole = CaptionEval(None, None, data).recall(image, text, ks=(1,))
    assert whole["i2t"]["R@1"] == 100.0 and whole["t2i"]["R@1"] == 100.0 and whole["i2t"]["R@mean"] == 100.0
    # swap the text codes of images 2 and 3: whole-set R@1 halves; folds of 2 images see the same swap
    swapped = text[[0, 1, 2, 3, 6, 7, 4, 5]]
    assert CaptionEval(None, None, data).recall(image, swapped, ks=(1,))["t2i"]["R@1"] == 50.0
    folded = CaptionEval(None, None, data, fold_size=2).recall(image, swapped, ks=(1,))
    assert folded["t2i"]["R@1"] == pytest.approx(50.0)


def karpathy(tmp_path, n_train=40, n_test=10):
    rng = np.random.default_rng(0)
    colors = {"red": (230, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230), "white": (240, 240, 240)}
    images = []
    for i in range(n_train + n_test):
        name = list(colors)[i % 4]
        Image.fromarray(np.full((32, 32, 3), colors[name], dtype=np.uint8)).save(tmp_path / f"{i}.png")
        images.append({"filename": f"{i}.png", "imgid": i, "split": "train" if i < n_train else "test",
                       "sentences": [{"raw": f"a {name} picture {int(rng.integers(9))}"},
                                     {"raw": f"something {name}"}]})
    (tmp_path / "karpathy.json").write_text(json.dumps({"images": images, "dataset": "flickr30k"}))


@pytest.mark.parametrize("method", ["DCMHT", "TwoTower"])  # CLIP ids alone; transformers ids with their mask
def test_caption_pairs_config_trains_and_reports_recall(tmp_path, method):
    karpathy(tmp_path)
    cfg = tmp_path / "captions.yaml"
    cfg.write_text(
        "_base_: [" + str((__import__("pathlib").Path(f"configs/{method}/synthetic.yaml")).resolve()) + "]\n"
        "dataset:\n  _delete_: true\n  name: caption_pairs\n  format: karpathy\n"
        f"  annotation_file: {tmp_path / 'karpathy.json'}\n  image_root: {tmp_path}\n"
        "eval:\n  _delete_: true\n")
    run = tmp_path / "run"
    assert main(["--config-file", str(cfg), "--save-dir", str(run), "--opts", "run.epochs=1", "run.batch_size=10",
                 "run.device=cpu", "run.num_workers=0", "run.progress=false"]) == 0
    last = json.loads((run / "metrics.json").read_text())["last"]
    for direction in ("i2t", "t2i"):
        assert set(last[direction]) >= {"R@1", "R@5", "R@10", "R@mean"}
        assert 0.0 <= last[direction]["R@1"] <= 100.0
    assert last["all"]["rsum"] == pytest.approx(sum(last[d][f"R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)))
