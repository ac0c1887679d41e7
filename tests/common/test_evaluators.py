"""The evaluators of the three tasks: what they encode, score, rank by and write."""
import json
from types import SimpleNamespace

import pytest
import scipy.io
import torch

from common.evaluation import EvalConfig
from common.evaluators import CaptionEvalConfig, CrossModalEvaluator, ImageEvalConfig, ImageRetrievalEvaluator
from main import main


class Split:
    """A stand-in evaluation set: only its length and labels matter to an evaluator."""

    def __init__(self, labels):
        self.labels = torch.tensor(labels, dtype=torch.float32)

    def __len__(self):
        return len(self.labels)


def image_task():
    # one query with label A; four database images at Hamming distances 0, 1, 2, 3 with labels A, B, A, B
    query = Split([[1, 0]])
    retrieval = Split([[1, 0], [0, 1], [1, 0], [0, 1]])
    codes = {"query_image": torch.tensor([[1.0, 1, 1]]),
             "retrieval_image": torch.tensor([[1.0, 1, 1], [1, 1, -1], [1, -1, -1], [-1, -1, -1]])}
    return SimpleNamespace(query=query, retrieval=retrieval, caption_eval=None), codes


def test_single_modal_evaluator_scores_hand_made_codes():
    data, codes = image_task()
    evaluator = ImageRetrievalEvaluator(data, ImageEvalConfig(map_topk=(None, 2), precision_k=(1, 2)))
    results = evaluator.score(codes)
    assert list(results) == ["i2i"] and evaluator.ranked == ("i2i",) and evaluator.primary == "mAP@all"
    assert results["i2i"]["mAP@all"] == pytest.approx((1 / 1 + 2 / 3) / 2)  # relevant at ranks 1 and 3
    assert results["i2i"]["mAP@2"] == pytest.approx(1.0)  # standard variant: AP over the hits in the top 2
    assert results["i2i"]["P@1"] == 1.0 and results["i2i"]["P@2"] == 0.5


def test_single_modal_evaluator_encodes_only_images_and_writes_image_codes(tmp_path):
    data, codes = image_task()
    evaluator = ImageRetrievalEvaluator(data, ImageEvalConfig())
    asked = []

    def encode(dataset, modalities):
        asked.append(modalities)
        return {"image": codes["query_image"] if dataset is data.query else codes["retrieval_image"]}

    assert evaluator.compute_codes(encode).keys() == {"query_image", "retrieval_image"}
    assert asked == [("image",), ("image",)]
    evaluator.save(codes, tmp_path, ["last", "best"])
    saved = scipy.io.loadmat(tmp_path / "codes" / "best.mat")
    assert {"q_img", "r_img", "q_l", "r_l"} <= set(saved) and "q_txt" not in saved
    assert (tmp_path / "curves" / "pr_i2i.csv").is_file()
    baseline = evaluator.random_baseline(bits=3)
    assert list(baseline) == ["i2i"] and 0.0 < baseline["i2i"] <= 1.0
    with pytest.raises(ValueError, match="directions"):
        ImageEvalConfig(directions=("i2t",))


def test_single_modal_best_epoch_is_picked_on_the_chosen_map_cut_off():
    data, codes = image_task()
    evaluator = ImageRetrievalEvaluator(data, ImageEvalConfig(map_topk=(None,), precision_k=(1,), select_topk=2))
    assert evaluator.primary == "mAP@2" and evaluator.options.map_topk == (None, 2)
    assert evaluator.score(codes)["i2i"]["mAP@2"] == pytest.approx(1.0)
    chance = evaluator.random_baseline(bits=3)
    random = evaluator.random_codes(3, torch.Generator().manual_seed(0))
    assert chance == {"i2i": evaluator.score(random)["i2i"]["mAP@2"]}


def test_cross_modal_evaluator_encodes_only_what_the_directions_read():
    data, _ = image_task()
    evaluator = CrossModalEvaluator(data, EvalConfig(directions=("t2i",)))
    asked = {}

    def encode(dataset, modalities):
        asked["query" if dataset is data.query else "retrieval"] = modalities
        return {m: torch.ones(len(dataset), 3) for m in modalities}

    assert set(evaluator.compute_codes(encode)) == {"query_text", "retrieval_image"}
    assert asked == {"query": ("text",), "retrieval": ("image",)} and evaluator.ranked == ("t2i",)


def test_caption_options_take_a_subset_of_their_directions():
    assert CaptionEvalConfig(directions=["t2i"]).directions == ("t2i",)
    with pytest.raises(ValueError, match="CaptionEvalConfig.directions"):
        CaptionEvalConfig(directions=("i2i",))


def test_eval_directions_subset_runs_and_reports_only_it(small_run, tmp_path):
    run = tmp_path / "run"
    assert main(["--config-file", "configs/DCMHT/synthetic.yaml", "--save-dir", str(run), "--opts",
                 *small_run(), "eval.directions=[t2i]"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["last"]) == {"epoch", "step", "t2i"}
    assert set(metrics["best"]) == {"t2i", "mean"}
    saved = scipy.io.loadmat(run / "codes" / "last.mat")
    assert {"q_txt", "r_img"} <= set(saved) and "q_img" not in saved
    assert sorted(p.name for p in (run / "curves").iterdir()) == ["pr_t2i.csv", "pr_t2i.png", "topn_t2i.csv",
                                                                  "topn_t2i.png"]
