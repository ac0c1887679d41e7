"""Shared fixtures: a small synthetic run of the real configs, through the real ``main``."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> str:
    """One synthetic data folder for the whole session (generated on first use by the dataset builder)."""
    return str(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture
def small_run(synthetic_root):
    """Overrides that shrink configs/<METHOD>/synthetic.yaml to a run of a few seconds."""

    def opts(epochs=1, batch_size=25, **extra):
        items = {"dataset.root": synthetic_root, "dataset.num_samples": 300, "dataset.query_num": 50,
                 "dataset.train_num": 150, "run.epochs": epochs, "run.batch_size": batch_size,
                 "run.progress": False, "run.num_workers": 0, "run.device": "cpu", **extra}
        return [f"{k}={v}" for k, v in items.items()]

    return opts
