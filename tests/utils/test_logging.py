"""One logger hierarchy: what any module logs reaches the console and the run's train.log."""
import numpy as np
import torch
from PIL import Image

from dataset.mat_triple import write_mat_triple
from main import main
from models.backbones.clip import CLIPBackbone


def test_clip_loader_line_and_mat_reader_warning_reach_train_log(tmp_path, small_run):
    weights = tmp_path / "tiny_clip.pt"
    torch.save(CLIPBackbone(arch="tiny").state_dict(), weights)
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(data / "images" / f"{i}.png")
        paths.append(f"images/{i}.png")
    labels = np.eye(4, dtype=np.uint8)[np.arange(40) % 4]
    labels[7] = 0  # one row without a label: the reader warns
    write_mat_triple(data, paths, [[f"picture number {i}"] for i in range(40)], labels)
    config = tmp_path / "run.yaml"
    config.write_text(f"""_base_: [{(__import__('pathlib').Path('configs/DCMHT/synthetic.yaml')).resolve()}]
dataset:
  _delete_: true
  name: mat_triple
  root: {data}
  split: custom
  query_num: 10
  train_num: 20
  split_seed: 0
""")
    opts = [o for o in small_run(epochs=1) if o.startswith("run.")] + [f"model.backbone.weights={weights}"]
    assert main(["--config-file", str(config), "--save-dir", str(tmp_path / "run"), "--opts", *opts]) == 0
    log = (tmp_path / "run" / "train.log").read_text()
    assert f"read CLIP tiny weights from {weights}" in log
    assert "WARNING" in log and "1 of 40 rows have no label and are never relevant to any query" in log
