"""torchrun on 2 CPU processes (gloo) trains exactly like one process with the doubled batch."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from main import main

REPO = Path(__file__).resolve().parents[2]
CONFIG = "configs/DCMHT/synthetic.yaml"


def torchrun(args, **popen):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "main.py", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


def descendants(pid: int) -> list[int]:
    """Child processes, recursively (torchrun starts its workers in sessions of their own)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children + [d for c in children for d in descendants(c)]


def kill_tree(proc) -> None:
    for pid in descendants(proc.pid) + [proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()


def weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


def max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def finish(proc) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.mark.parametrize("config, extra", [
    (CONFIG, {}),
    # auxiliary state: class proxies with their own optimiser (dropout off: equal seeds give every rank
    # the same masks, which a single process with the double batch cannot reproduce)
    ("configs/DSPH/synthetic.yaml", {"model.dropout": 0.0}),
])
def test_two_processes_match_one_process_with_double_batch(small_run, tmp_path, config, extra):
    assert main(["--config-file", config, "--save-dir", str(tmp_path / "one"), "--opts",
                 *small_run(epochs=1, batch_size=50, **extra)]) == 0
    finish(torchrun(["--config-file", config, "--save-dir", str(tmp_path / "two"), "--opts",
                     *small_run(epochs=1, batch_size=25, **extra)]))
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert max_diff(one["model"], two["model"]) <= 1e-5
    for name, state in one["extra_optimizers"].items():
        for key, value in state["state"].items():
            for slot, tensor in value.items():
                if torch.is_tensor(tensor):
                    assert torch.allclose(tensor, two["extra_optimizers"][name]["state"][key][slot], atol=1e-5)
    for direction in ("i2t", "t2i", "i2i", "t2t"):
        assert one["history"][-1][direction]["mAP@all"] == pytest.approx(two["history"][-1][direction]["mAP@all"],
                                                                          abs=1e-6)


def test_killed_two_process_run_resumes_to_the_same_weights(small_run, tmp_path):
    opts = small_run(epochs=3, batch_size=25, **{"dataset.train_num": 250})
    finish(torchrun(["--config-file", CONFIG, "--save-dir", str(tmp_path / "full"), "--opts", *opts]))
    proc = torchrun(["--config-file", CONFIG, "--save-dir", str(tmp_path / "killed"), "--opts", *opts])
    ckpt = tmp_path / "killed" / "checkpoints" / "last.pt"
    while not ckpt.exists() and proc.poll() is None:
        time.sleep(0.05)
    kill_tree(proc)
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] < 3, "the run finished before it could be killed"
    finish(torchrun(["--config-file", CONFIG, "--save-dir", str(tmp_path / "killed"), "--resume", str(ckpt),
                     "--opts", *opts]))
    assert max_diff(weights(tmp_path / "full")["model"], weights(tmp_path / "killed")["model"]) <= 1e-6


def test_gradient_accumulation_equals_one_large_batch(small_run, tmp_path):
    assert main(["--config-file", CONFIG, "--save-dir", str(tmp_path / "big"), "--opts",
                 *small_run(epochs=1, batch_size=50)]) == 0
    assert main(["--config-file", CONFIG, "--save-dir", str(tmp_path / "acc"), "--opts",
                 *small_run(epochs=1, batch_size=25, **{"run.accumulate_steps": 2})]) == 0
    assert max_diff(weights(tmp_path / "big")["model"], weights(tmp_path / "acc")["model"]) <= 1e-5
