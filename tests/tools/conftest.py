"""One trained synthetic DCMHT run and its two indexes (images and captions of the retrieval split), shared by
the search tests."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_tool(name: str):
    """A script of tools/ as a module."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


search = load_tool("search")

# Six epochs on 300 training pairs: the tiny CLIP then ranks a caption's concepts far above their frequency
# (t2i P@10 0.63 on this split; random codes reach mAP 0.32), in about ten seconds on one core.
TRAINING = {"dataset.num_samples": 400, "dataset.query_num": 50, "dataset.train_num": 300, "run.epochs": 6,
            "run.batch_size": 50, "run.progress": False, "run.num_workers": 0, "run.device": "cpu",
            "run.save_codes": False, "run.eval_every": 6, "model.bits": 32, "optimizer.lr": 0.003,
            "optimizer.backbone_lr": 0.003, "optimizer.schedule": "warmup_constant"}


@pytest.fixture(scope="session")
def trained_run(synthetic_root, tmp_path_factory) -> Path:
    import torch

    from main import main

    run = tmp_path_factory.mktemp("search") / "run"
    opts = [f"{k}={v}" for k, v in {"dataset.root": synthetic_root, **TRAINING}.items()]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["--config-file", "configs/DCMHT/synthetic.yaml", "--save-dir", str(run), "--opts", *opts]) == 0
    finally:
        torch.set_num_threads(threads)
    return run


def index_retrieval_split(run: Path, modality: str, folder: str) -> Path:
    """``tools/search.py index`` of one modality of the run's retrieval split into ``run/folder``."""
    assert search.main(["index", str(run / folder), "--checkpoint", str(run), "--split", "retrieval",
                        "--modality", modality, "--no-progress"]) == 0
    return run / folder


@pytest.fixture(scope="session")
def image_index(trained_run) -> Path:
    return index_retrieval_split(trained_run, "image", "index-images")


@pytest.fixture(scope="session")
def text_index(trained_run) -> Path:
    return index_retrieval_split(trained_run, "text", "index-captions")


def run_json(capsys, argv: list[str]) -> list[dict]:
    """``tools/search.py query ... --json``, parsed."""
    capsys.readouterr()
    assert search.main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)
