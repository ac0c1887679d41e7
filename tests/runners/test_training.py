"""End-to-end runs of the real ``main`` and runner on the synthetic data (CPU, tiny CLIP)."""
import hashlib
import json

import pytest
import torch

from common.config import load_config
from main import main
from tests.stubs import snapshot

CONFIG = "configs/DCMHT/synthetic.yaml"


def test_short_run_improves_map_and_writes_run_directory(small_run, make_runner, tmp_path):
    runner = make_runner(CONFIG, small_run(epochs=3, **{"optimizer.lr": 0.003}), tmp_path / "run")
    before = runner.evaluate()
    runner.fit()
    runner.close()
    after = json.loads((tmp_path / "run" / "metrics.json").read_text())["last"]
    for direction in ("i2t", "t2i"):
        assert after[direction]["mAP@all"] > before[direction]["mAP@all"] + 0.02
    run = tmp_path / "run"
    for name in ("config.yaml", "train.log", "metrics.json", "split.npz", "checkpoints/last.pt",
                 "checkpoints/best.pt", "codes/last.mat"):
        assert (run / name).is_file(), name
    assert list((run / "tb").iterdir())
    assert load_config(run / "config.yaml")["run"]["epochs"] == 3


def test_eval_only_writes_beside_the_training_history(small_run, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["--config-file", CONFIG, "--save-dir", str(run), "--opts", *small_run()]) == 0
    history = snapshot(run)
    ckpt = run / "checkpoints" / "last.pt"
    for number in (1, 2):  # the run directory of the checkpoint is the default; each evaluation gets a folder
        assert main(["--config-file", CONFIG, "--eval-only", "--checkpoint", str(ckpt), "--opts", *small_run()]) == 0
        assert f"evaluation results: {run / 'eval' / f'last-{number}'}" in capsys.readouterr().out
    trained = json.loads((run / "metrics.json").read_text())["last"]
    evaluated = json.loads((run / "eval" / "last-2" / "metrics.json").read_text())["last"]
    assert evaluated["i2t"]["mAP@all"] == pytest.approx(trained["i2t"]["mAP@all"])
    assert {k: v for k, v in snapshot(run).items() if not k.startswith("eval/")} == history


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def finished_run(small_run, tmp_path):
    """A run directory with a checkpoint that the failing commands below must leave untouched."""
    run = tmp_path / "run"
    assert main(["--config-file", CONFIG, "--save-dir", str(run), "--opts", *small_run()]) == 0
    return run


def failing(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_inputs_fail_with_one_line_and_keep_checkpoints(finished_run, small_run, tmp_path, capsys):
    ckpt = finished_run / "checkpoints" / "last.pt"
    before = digest(ckpt)
    base = ["--config-file", CONFIG, "--save-dir", str(finished_run)]
    assert "nope.yaml' not found" in failing(capsys, ["--config-file", "nope.yaml"])
    assert "unknown model 'DCHMT'; did you mean 'DCMHT'" in failing(
        capsys, base + ["--opts", *small_run(**{"model.name": "DCHMT"})])
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_base_: [{(load_config(CONFIG).path and __import__('os').path.abspath(CONFIG))}]\nmodel:\n  varteta: 0.5\n")
    err = failing(capsys, ["--config-file", str(bad), "--save-dir", str(finished_run), "--opts", *small_run()])
    assert "unknown key 'model.varteta' in '" in err and "bad.yaml'; did you mean 'vartheta'" in err
    err = failing(capsys, base + ["--opts", *small_run(**{"model.backbone.weights": str(tmp_path / "ViT-B-32.pt")})])
    assert "ViT-B-32.pt" in err and "model.backbone.weights" in err
    err = failing(capsys, base + ["--resume", str(tmp_path / "missing.pt"), "--opts", *small_run()])
    assert "missing.pt" in err
    assert digest(ckpt) == before


def test_missing_dataset_file_and_row_mismatch(small_run, tmp_path, capsys):
    from scipy.io import savemat

    from dataset.mat_triple import write_mat_triple
    root = tmp_path / "triple"
    (root / "images").mkdir(parents=True)
    from PIL import Image
    for i in range(4):
        Image.new("RGB", (8, 8)).save(root / "images" / f"{i}.png")
    write_mat_triple(str(root), [f"images/{i}.png" for i in range(4)], [["a b"]] * 4,
                     torch.eye(4, dtype=torch.uint8).numpy())
    cfg = tmp_path / "triple.yaml"
    cfg.write_text(
        "_base_: [" + str((__import__('pathlib').Path(CONFIG)).resolve()) + "]\n"
        "dataset:\n  _delete_: true\n  name: mat_triple\n  root: " + str(root) + "\n  split: custom\n"
        "  query_num: 1\n  train_num: 2\n  split_seed: 0\n")
    argv = ["--config-file", str(cfg), "--save-dir", str(tmp_path / "r"), "--opts", "run.epochs=1",
            "run.device=cpu", "run.num_workers=0", "run.progress=false", "run.batch_size=2"]
    assert main(argv) == 0
    (root / "label.mat").unlink()
    assert "label.mat" in failing(capsys, argv)
    savemat(root / "label.mat", {"category": torch.eye(5, dtype=torch.uint8).numpy()})
    err = failing(capsys, argv)
    assert "label.mat" in err and "5" in err and "4" in err


def test_drop_last_drops_the_incomplete_training_batch(small_run, make_runner):
    # 150 training pairs in batches of 40: 3 full batches and a last one of 30
    kept = make_runner(CONFIG, small_run(batch_size=40), None)
    dropped = make_runner(CONFIG, small_run(batch_size=40, **{"run.drop_last": "true"}), None)
    assert (len(kept.train_loader), kept.steps_per_epoch) == (4, 4)
    assert (len(dropped.train_loader), dropped.steps_per_epoch) == (3, 3)
    assert all(len(batch["index"]) == 40 for batch in dropped.train_loader)
