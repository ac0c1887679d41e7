"""Shared fixtures: a small synthetic run of the real configs, through the real ``main``."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """Under pytest-xdist (``-n``) each worker takes its share of the cores, it and the processes it starts
    (``main.py``, torchrun), so the workers do not oversubscribe the machine."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


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


@pytest.fixture
def make_runner():
    """Build the runner a config names (``run.runner``, BaseRunner by default), as ``main`` does."""
    from common.config import load_config
    from main import register_all

    def make(config_file: str, opts: list[str], save_dir):
        register_all()
        from runners.base import runner_class
        cfg = load_config(config_file, opts)
        return runner_class(cfg)(cfg, save_dir)

    return make


@pytest.fixture
def interrupted_run(make_runner, tmp_path):
    """Train the first epoch of a config, then load that checkpoint into a fresh runner.

    Returns ``(interrupted, resumed)``; ``resumed.fit()`` finishes the schedule, to be compared with a straight
    run of the same config.
    """

    def run(config_file: str, opts: list[str]):
        interrupted = make_runner(config_file, opts, tmp_path / "interrupted")
        interrupted.run_cfg.epochs = 1
        interrupted.fit()
        resumed = make_runner(config_file, opts, tmp_path / "resumed")
        resumed.load_checkpoint(tmp_path / "interrupted" / "checkpoints" / "last.pt", resume=True)
        return interrupted, resumed

    return run


@pytest.fixture
def one_thread():
    """The tiny models gain nothing from intra-op threads, which oversubscribe a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
