"""A run directory under misuse, crashes and full disks: nothing of an earlier run is lost or mixed.

Kill points are simulated by raising inside a write at a chosen moment (plus one real ``kill -9``); every
test checks the exit code, the one-line message, and that the files of the earlier run are byte-identical.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import scipy.io
import torch

from main import main
from tests.stubs import snapshot
from utils.run_dir import RunDirectory

CONFIG = "configs/DCMHT/synthetic.yaml"
REPO = Path(__file__).resolve().parents[2]


def fails(capsys, argv, *fragments) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("error: "), (code, err)
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


@pytest.fixture
def finished(small_run, tmp_path):
    """A finished 2-epoch run and the command that made it."""
    run = tmp_path / "run"
    argv = ["--config-file", CONFIG, "--save-dir", str(run), "--opts", *small_run(epochs=2)]
    assert main(argv) == 0
    return run, argv


def test_training_into_a_run_needs_resume_or_overwrite(finished, capsys, tmp_path):
    run, argv = finished
    before = snapshot(run)
    fails(capsys, argv, f"run directory '{run}' already holds a run", "--resume", "--overwrite")
    assert snapshot(run) == before
    assert main([*argv[:4], "--overwrite", *argv[4:]]) == 0
    (aside,) = tmp_path.glob("run-replaced-*")
    assert snapshot(aside) == before
    assert json.loads((run / "metrics.json").read_text())["last"]["epoch"] == 2


def test_a_config_error_writes_nothing_into_an_existing_run(finished, capsys):
    run, argv = finished
    before = snapshot(run)
    fails(capsys, argv + ["model.varthta=0.5"], "unknown key 'model.varthta'", "did you mean 'vartheta'")
    fails(capsys, argv + ["run.device=tpu"], "unknown device 'tpu'")
    assert snapshot(run) == before


def test_a_second_run_on_a_locked_directory_fails_at_once_naming_the_holder(small_run, tmp_path, capsys):
    run = tmp_path / "run"
    holder = RunDirectory(run)
    holder.claim()
    try:
        fails(capsys, ["--config-file", CONFIG, "--save-dir", str(run), "--opts", *small_run()],
              f"run directory '{run}' is in use by process {os.getpid()}")
    finally:
        holder.release()
    (run / ".lock").write_text("process 999999 on a-host-that-died\n")  # a stale lock: nobody holds it
    assert main(["--config-file", CONFIG, "--save-dir", str(run), "--opts", *small_run()]) == 0


def test_save_dir_that_is_a_file(small_run, tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("keep me")
    fails(capsys, ["--config-file", CONFIG, "--save-dir", str(target), "--opts", *small_run()], "is a file")
    assert target.read_text() == "keep me"


def crash_on(monkeypatch, moment: str):
    """Raise, as if the process died there, at ``moment`` of the first improving epoch after the first one:
    ``before best.pt`` or ``between best.pt and last.pt``."""
    import runners.base as base

    real = base.save_atomic

    def save(state, path):
        name = Path(path).name
        if state["epoch"] >= 2 and state["best"]["mean"]["epoch"] == state["epoch"]:
            if (moment, name) in (("before best.pt", "best.pt"), ("between best.pt and last.pt", "last.pt")):
                raise KeyboardInterrupt(f"killed {moment}")
        real(state, path)

    monkeypatch.setattr(base, "save_atomic", save)


def consistent(run: Path) -> None:
    """metrics.json, best.pt, last.pt and codes/best.mat name the same epochs."""
    metrics = json.loads((run / "metrics.json").read_text())
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert best["epoch"] == metrics["best"]["mean"]["epoch"] == last["best"]["mean"]["epoch"]
    assert last["epoch"] == metrics["last"]["epoch"]
    model = best["model"]
    assert scipy.io.loadmat(run / "codes" / "best.mat")["q_img"].shape[1] == 16 and model


@pytest.mark.parametrize("moment", ["before best.pt", "between best.pt and last.pt"])
def test_a_kill_between_checkpoint_writes_is_repaired_by_resume(moment, small_run, make_runner, tmp_path,
                                                                 monkeypatch):
    opts = small_run(epochs=3, **{"optimizer.lr": 0.003})
    straight = make_runner(CONFIG, opts, tmp_path / "straight")
    straight.fit()
    straight.close()
    crashed = make_runner(CONFIG, opts, tmp_path / "run")
    crash_on(monkeypatch, moment)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    crashed.close()
    monkeypatch.undo()
    assert main(["--config-file", CONFIG, "--resume", str(tmp_path / "run" / "checkpoints" / "last.pt"),
                 "--opts", *opts]) == 0
    consistent(tmp_path / "run")
    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert a["best"] == b["best"] and a["last"] == b["last"]


def test_a_kill_after_last_pt_rewrites_codes_and_metrics_on_resume(small_run, make_runner, tmp_path, monkeypatch):
    import runners.base as base

    opts = small_run(epochs=2)
    crashed = make_runner(CONFIG, opts, tmp_path / "run")
    real = base.BaseRunner.write_evaluation

    def write(self, codes, improved):
        if self.epoch == 2:
            raise KeyboardInterrupt("killed after last.pt")
        real(self, codes, improved)

    monkeypatch.setattr(base.BaseRunner, "write_evaluation", write)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    crashed.close()
    monkeypatch.undo()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["last"]["epoch"] == 1
    assert main(["--config-file", CONFIG, "--resume", str(tmp_path / "run" / "checkpoints" / "last.pt"),
                 "--opts", *opts]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["last"]["epoch"] == 2
    consistent(tmp_path / "run")


def test_resume_with_a_changed_config_lists_the_changes_and_applies_them_when_accepted(finished, capsys):
    run, argv = finished
    before = snapshot(run)
    resume = ["--config-file", CONFIG, "--resume", str(run / "checkpoints" / "last.pt"), "--opts", *argv[5:]]
    fails(capsys, resume + ["optimizer.lr=0.00001", "run.epochs=4"], "written with another config",
          "optimizer.lr: 0.001 -> 1.0e-05", "run.epochs: 2 -> 4", "--accept-config-changes")
    assert snapshot(run) == before
    assert main(resume[:4] + ["--accept-config-changes"] + resume[4:] + ["optimizer.lr=0.00001", "run.epochs=4"]) == 0
    log = (run / "train.log").read_text()
    assert "resuming with a changed config: optimizer.lr: 0.001 -> 1.0e-05" in log
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 4 and state["config"]["optimizer"]["lr"] == 1e-05
    head = [g for g in state["optimizer"]["param_groups"] if g["group"] == "head"][0]
    assert head["lr"] == 1e-05 and head["t_total"] == 4 * 6  # 150 training pairs at batch 25, 4 epochs


@pytest.mark.parametrize("content, fragment", [
    (b"", "the file is empty (0 bytes)"),
    (bytes(range(7, 71)), "it is not a PyTorch file"),
    (b"model:\n  name: DCMHT\n", "it is not a PyTorch file"),
])
def test_files_that_are_not_checkpoints(content, fragment, finished, tmp_path, capsys):
    run, argv = finished
    before = snapshot(run)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    err = fails(capsys, ["--config-file", CONFIG, "--eval-only", "--checkpoint", str(bad), "--opts", *argv[5:]],
                f"checkpoint '{bad}' is not a checkpoint written by this framework: {fragment}")
    assert "weights_only" not in err
    assert snapshot(run) == before


def test_checkpoints_of_another_model_or_length_and_partial_ones(finished, tmp_path, capsys, small_run):
    run, argv = finished
    before = snapshot(run)
    ckpt = run / "checkpoints" / "last.pt"
    opts = argv[5:]
    fails(capsys, ["--config-file", "configs/DSPH/synthetic.yaml", "--eval-only", "--checkpoint", str(ckpt),
                   "--save-dir", str(tmp_path / "e"), "--opts", *opts],
          f"checkpoint '{ckpt}' was written for DCMHT with bits=16; the config builds DSPH with bits=16")
    fails(capsys, ["--config-file", CONFIG, "--eval-only", "--checkpoint", str(ckpt), "--save-dir",
                   str(tmp_path / "e"), "--opts", *opts, "model.bits=32"],
          "written for DCMHT with bits=16; the config builds DCMHT with bits=32")
    state = torch.load(ckpt, weights_only=True)
    torch.save({"model": state["model"]}, tmp_path / "weights.pt")
    fails(capsys, ["--config-file", CONFIG, "--resume", str(tmp_path / "weights.pt"), "--save-dir",
                   str(tmp_path / "r"), "--opts", *opts], "holds model weights only", "--eval-only")
    assert main(["--config-file", CONFIG, "--eval-only", "--checkpoint", str(tmp_path / "weights.pt"),
                 "--save-dir", str(tmp_path / "e"), "--opts", *opts]) == 0
    torch.save(state["model"], tmp_path / "bare.pt")
    fails(capsys, ["--config-file", CONFIG, "--eval-only", "--checkpoint", str(tmp_path / "bare.pt"),
                   "--save-dir", str(tmp_path / "e"), "--opts", *opts], "holds a bare state dict of tensors")
    assert snapshot(run) == before


def test_a_full_disk_is_said_in_words_and_leaves_no_temporary_file(finished, capsys, monkeypatch):
    import shutil

    import utils.io

    run, argv = finished
    before = snapshot(run)

    def full(obj, f):
        f.write(b"x" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(utils.io.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100, 100, 0))
    resume = ["--config-file", CONFIG, "--resume", str(run / "checkpoints" / "last.pt"),
              "--accept-config-changes", "--opts", *argv[5:], "run.epochs=3"]
    err = fails(capsys, resume, "no space left on device while writing", "last.pt")
    assert "enforce fail" not in err
    assert not [p for p in run.rglob("*.tmp")]
    assert {k: v for k, v in snapshot(run).items() if k.startswith("checkpoints")} == {
        k: v for k, v in before.items() if k.startswith("checkpoints")}
    monkeypatch.undo()
    assert main(resume) == 0


def test_a_real_kill_9_leaves_a_run_that_resumes_to_the_uninterrupted_result(small_run, tmp_path, one_thread):
    opts = small_run(epochs=2)
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert main(["--config-file", CONFIG, "--save-dir", str(straight), "--opts", *opts]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread here and there: bitwise comparable
    killed = subprocess.Popen([sys.executable, "main.py", "--config-file", CONFIG, "--save-dir", str(run),
                               "--opts", *opts], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "checkpoints" / "last.pt").exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1  # never torn
    assert main(["--config-file", CONFIG, "--resume", str(run / "checkpoints" / "last.pt"), "--opts", *opts]) == 0
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    consistent(run)
