"""Bad input of every kind, as a user would make it: one line on stderr, a non-zero exit, no traceback, and
nothing of an earlier run lost or changed.

Each case runs the real ``main`` next to one finished run (module fixture) whose files are compared byte for
byte afterwards. Cases: config values and files, data files, checkpoints, the run directory and faults.
"""
import hashlib
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from dataset.mat_triple import write_mat_triple
from main import main
from tests.stubs import snapshot

CONFIG = "configs/DCMHT/synthetic.yaml"
IMAGE_CONFIG = "configs/WCH/synthetic.yaml"


@dataclass
class Context:
    run: Path  # a finished run: its files must survive every case unchanged
    opts: list[str]  # the overrides that made it
    triple: Path  # a small, valid .mat triple with its images
    tmp: Path

    def train(self, *opts: str, config: str = CONFIG, save_dir: Path | None = None) -> list[str]:
        return ["--config-file", config, "--save-dir", str(save_dir or self.run), "--opts", *self.opts, *opts]

    def write(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def triple_config(self, root: Path, **dataset) -> Path:
        """A config training DCMHT on the .mat triple under ``root``."""
        keys = {"name": "mat_triple", "root": str(root), "split": "custom", "query_num": 10, "train_num": 20,
                "split_seed": 0, **dataset}
        lines = "".join(f"  {k}: {v}\n" for k, v in keys.items())
        return self.write(f"triple_{root.name}.yaml",
                          f"_base_: [{Path(CONFIG).resolve()}]\ndataset:\n  _delete_: true\n{lines}")

    def image_config(self, **dataset) -> list[str]:
        """Arguments training WCH on a single-modal dataset with the keys ``dataset``."""
        lines = "".join(f"  {k}: {v}\n" for k, v in dataset.items())
        config = self.write(f"image_{dataset['name']}_{Path(dataset['root']).name}.yaml",
                            f"_base_: [{Path(IMAGE_CONFIG).resolve()}]\ndataset:\n  _delete_: true\n{lines}")
        return ["--config-file", str(config), "--save-dir", str(self.run)]

    def lists(self, name: str, database: str = "images/0.png 0 1\nimages/1.png 1 0\n") -> Path:
        """DeepHash-pytorch list files over the valid triple's images (``database.txt`` as given)."""
        root = self.tmp / name
        shutil.copytree(self.triple / "images", root / "images")
        (root / "test.txt").write_text("images/2.png 0 1\nimages/3.png 1 0\n")
        (root / "train.txt").write_text("images/0.png 0 1\n")
        (root / "database.txt").write_text(database)
        return root

    def broken_triple(self, name: str) -> Path:
        """A copy of the valid triple to break."""
        root = self.tmp / name
        shutil.copytree(self.triple, root)
        return root

    def checkpoint(self) -> Path:
        return self.run / "checkpoints" / "last.pt"


@pytest.fixture(scope="module")
def context(tmp_path_factory, synthetic_root) -> Context:
    tmp = tmp_path_factory.mktemp("bad_inputs")
    opts = [f"dataset.root={synthetic_root}", "dataset.num_samples=300", "dataset.query_num=50",
            "dataset.train_num=150", "run.epochs=1", "run.batch_size=25", "run.progress=false",
            "run.num_workers=0", "run.device=cpu"]
    run = tmp / "run"
    assert main(["--config-file", CONFIG, "--save-dir", str(run), "--opts", *opts]) == 0
    triple = tmp / "triple"
    (triple / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(triple / "images" / f"{i}.png")
    labels = np.eye(4, dtype=np.uint8)[np.arange(40) % 4]
    write_mat_triple(triple, [f"images/{i}.png" for i in range(40)], [[f"picture {i}"] for i in range(40)], labels)
    return Context(run, opts, triple, tmp)


@dataclass
class Case:
    """``fault`` sets up a failure and returns what undoes it; ``continues`` marks a case that resumes the
    finished run, which may append to its log and config: then its results (checkpoints, codes, metrics.json)
    are what must stay byte-identical."""

    name: str
    argv: Callable[[Context], list[str]]
    expected: str
    fault: Callable[[Context, pytest.MonkeyPatch], Callable[[], None] | None] | None = None
    continues: bool = False


def opt(*opts: str) -> Callable[[Context], list[str]]:
    return lambda c: c.train(*opts)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def zero_labels(root: Path) -> Path:
    write_mat_triple(root, [f"images/{i}.png" for i in range(40)], [[f"picture {i}"] for i in range(40)],
                     np.zeros((40, 4), dtype=np.uint8))
    return root


def latin1_captions(root: Path) -> Path:
    (root / "caption.mat").unlink()
    (root / "caption.txt").write_bytes("".join(f"caf\xe9 {i}\n" for i in range(40)).encode("latin-1"))
    return root


def cifar_without_test_batch(root: Path) -> Path:
    """Official python batches of ten images each, the test batch missing."""
    (root / "cifar-10-batches-py").mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"):
        batch = {b"labels": list(range(10)), b"data": np.zeros((10, 3072), dtype=np.uint8)}
        (root / "cifar-10-batches-py" / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


def checkpoint_file(content: bytes) -> Callable[[Context], list[str]]:
    def argv(c: Context) -> list[str]:
        path = c.tmp / f"ckpt_{hashlib.sha1(content).hexdigest()[:8]}.pt"
        path.write_bytes(content)
        return ["--config-file", CONFIG, "--eval-only", "--checkpoint", str(path), "--opts", *c.opts]
    return argv


def saved_checkpoint(transform: Callable[[dict], object], name: str, resume: bool = False):
    def argv(c: Context) -> list[str]:
        path = c.tmp / name
        torch.save(transform(torch.load(c.checkpoint(), weights_only=True)), path)
        flag = ["--resume", str(path), "--save-dir", str(c.tmp / f"resume_{name}")] if resume else [
            "--eval-only", "--checkpoint", str(path)]
        return ["--config-file", CONFIG, *flag, "--opts", *c.opts]
    return argv


def locked(c: Context, monkeypatch):
    from utils.run_dir import RunDirectory
    holder = RunDirectory(c.run, "resume")
    holder.claim()
    return holder.release


def full_disk(c: Context, monkeypatch) -> None:
    import utils.io

    def failing_save(obj, f):
        f.write(b"x" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos")

    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr(utils.io.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 0))


def read_only(c: Context, monkeypatch) -> None:
    import utils.io

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(utils.io.tempfile, "mkstemp", refuse)


def resume_more_epochs(c: Context) -> list[str]:
    return ["--config-file", CONFIG, "--resume", str(c.checkpoint()), "--accept-config-changes", "--opts",
            *c.opts, "run.epochs=2"]


CASES = [
    # ---------------------------------------------------------------- config values (--opts)
    Case("bits-bool", opt("model.bits=true"), "model.bits = true (set by --opts) must be a positive integer"),
    Case("epochs-yes", opt("run.epochs=yes"), "run.epochs = true (set by --opts) must be a positive integer"),
    Case("epochs-word", opt("run.epochs=abc"), "run.epochs = abc (set by --opts) must be a positive integer"),
    Case("epochs-float", opt("run.epochs=1.5"), "run.epochs = 1.5 (set by --opts) must be a positive integer"),
    Case("epochs-zero", opt("run.epochs=0"), "run.epochs = 0 (set by --opts) must be a positive integer"),
    Case("lr-list", opt("optimizer.lr=[1,2]"), "optimizer.lr = [1, 2] (set by --opts) must be a positive number"),
    Case("lr-negative", opt("optimizer.lr=-0.001"), "optimizer.lr = -0.001 (set by --opts) must be a positive"),
    Case("workers-negative", opt("run.num_workers=-1"), "run.num_workers = -1 (set by --opts) must be a non-negative"),
    Case("hidden-zero", opt("model.hidden=0"), "model.hidden = 0 (set by --opts) must be a positive integer"),
    Case("head-choice", opt("model.head=wide"), "model.head = wide (set by --opts) must be one of 'canonical'"),
    Case("amp-choice", opt("run.amp=fp8"), "run.amp = fp8 (set by --opts) must be one of 'none', 'fp16', 'bf16'"),
    Case("direction", opt("eval.directions=[x2y]"), "eval.directions = [x2y] (set by --opts) must be a list"),
    Case("topk-zero", opt("eval.map_topk=[0]"), "eval.map_topk = [0] (set by --opts) must be a list, each item a"),
    Case("tie-break", opt("eval.tie_break=random"), "eval.tie_break = random (set by --opts) must be one of"),
    Case("model-name", opt("model.name=DCHMT"), "unknown model 'DCHMT'; did you mean 'DCMHT'?"),
    Case("optimizer-name", opt("optimizer.name=Adamw"), "unknown optimizer 'Adamw'; did you mean 'AdamW'?"),
    Case("dataset-name", opt("dataset.name=synthetik"), "unknown dataset 'synthetik'; did you mean 'synthetic'?"),
    Case("unknown-key", opt("model.varteta=0.5"), "unknown key 'model.varteta' in '--opts'; did you mean 'vartheta'?"),
    Case("unknown-section", opt("runn.epochs=3"), "no section 'runn'; did you mean 'run'?"),
    Case("override-form", opt("run.epochs"), "override 'run.epochs' must look like key.sub=value"),
    Case("device", opt("run.device=tpu"), "unknown device 'tpu' (run.device or --device)"),
    Case("clip-arch", opt("model.backbone.arch=ViT-X"), "ViT-X"),
    Case("weights-missing", opt("model.backbone.weights=absent/ViT-B-32.pt"), "absent/ViT-B-32.pt"),
    Case("image-size", opt("dataset.image_size=2"), "dataset.image_size must be an integer of at least 5"),
    Case("classes", opt("dataset.num_classes=50"), "dataset.num_classes must be between 1 and 12, got 50"),
    # ---------------------------------------------------------------- config files
    Case("no-file", lambda c: ["--config-file", str(c.tmp / "nope.yaml")], "nope.yaml' not found"),
    Case("empty-file", lambda c: ["--config-file", str(c.write("empty.yaml", ""))], "is empty: expected a mapping"),
    Case("bad-yaml", lambda c: ["--config-file", str(c.write("bad.yaml", "model: [1, 2\n"))], "invalid YAML"),
    Case("list-file", lambda c: ["--config-file", str(c.write("list.yaml", "- 1\n"))], "must hold a mapping"),
    Case("dict-over-scalar", lambda c: ["--config-file", str(c.write("over.yaml", (
        f"_base_: [{Path(CONFIG).resolve()}]\nrun:\n  epochs: {{value: 3}}\n")))],
        "'run.epochs' is a mapping but"),
    Case("sibling-bases", lambda c: ["--config-file", str(c.write("siblings.yaml", (
        f"_base_: [{c.write('s1.yaml', 'run: {epochs: 2}')}, {c.write('s2.yaml', 'run: {epochs: 3}')}]\n")))],
        "both set 'run.epochs'"),
    Case("base-cycle", lambda c: ["--config-file", str(c.write("cycle.yaml", "_base_: [cycle.yaml]\n"))],
         "includes itself through _base_"),
    Case("unknown-file-section", lambda c: ["--config-file", str(c.write("sect.yaml", (
        f"_base_: [{Path(CONFIG).resolve()}]\nmodle: {{bits: 8}}\n"))), "--opts", *c.opts],
        "unknown section 'modle'"),
    # ---------------------------------------------------------------- data files
    Case("no-data", lambda c: ["--config-file", str(c.triple_config(c.tmp / "absent")), "--save-dir", str(c.run)],
         "index.mat"),
    Case("truncated-labels", lambda c: ["--config-file", str(c.triple_config(
        (lambda r: (truncate(r / "label.mat"), r)[1])(c.broken_triple("trunc")))), "--save-dir", str(c.run)],
        "label.mat"),
    Case("latin1-captions", lambda c: ["--config-file", str(c.triple_config(
        latin1_captions(c.broken_triple("latin1")), caption_file="caption.txt")), "--save-dir", str(c.run)],
        "caption.txt: not UTF-8 text"),
    Case("zero-labels", lambda c: ["--config-file", str(c.triple_config(zero_labels(c.broken_triple("zero")))),
                                   "--save-dir", str(c.run)], "no row has any label"),
    Case("missing-image-in-worker", lambda c: ["--config-file", str(c.triple_config(
        (lambda r: ((r / "images" / "3.png").unlink(), r)[1])(c.broken_triple("noimg")), check_images="none")),
        "--save-dir", str(c.tmp / "worker_run"), "--opts", "run.num_workers=1", "run.epochs=1", "run.batch_size=5",
        "run.progress=false", "run.device=cpu"], "3.png"),
    Case("cifar-missing-batch", lambda c: c.image_config(name="cifar10", root=cifar_without_test_batch(
        c.tmp / "cifar")), "cifar/cifar-10-batches-py/test_batch (extract cifar-10-python.tar.gz there)"),
    Case("list-width", lambda c: c.image_config(name="image_list", root=c.lists("wide", "images/0.png 0 1 0\n")),
         "database.txt: lines have 3 labels, test.txt has 2; expected one label column per class"),
    Case("list-missing-image", lambda c: c.image_config(name="image_list", root=(lambda r: (
        (r / "images" / "3.png").unlink(), r)[1])(c.lists("noimage"))),
        "test.txt: 1 of 2 checked image files do not exist (first: "),
    Case("image-model-on-captions", lambda c: c.image_config(name="synthetic", root=c.tmp / "pairs",
                                                             num_samples=40, query_num=10, train_num=20),
         "this dataset pairs images with captions, but the model has no text tower"),
    # ---------------------------------------------------------------- checkpoints
    Case("resume-missing", lambda c: ["--config-file", CONFIG, "--resume", str(c.tmp / "missing.pt"), "--opts",
                                      *c.opts], "missing.pt' not found"),
    Case("ckpt-empty", checkpoint_file(b""), "is not a checkpoint written by this framework: the file is empty"),
    Case("ckpt-random", checkpoint_file(os.urandom(256)), "is not a checkpoint written by this framework"),
    Case("ckpt-yaml", checkpoint_file(b"model:\n  name: DCMHT\n"), "it is not a PyTorch file"),
    Case("ckpt-bare", saved_checkpoint(lambda s: s["model"], "bare.pt"), "holds a bare state dict of tensors"),
    Case("ckpt-model-only-resume", saved_checkpoint(lambda s: {"model": s["model"]}, "weights.pt", resume=True),
         "holds model weights only"),
    Case("ckpt-other-method", lambda c: ["--config-file", "configs/DSPH/synthetic.yaml", "--eval-only",
                                         "--checkpoint", str(c.checkpoint()), "--opts", *c.opts],
         "was written for DCMHT with bits=16; the config builds DSPH with bits=16"),
    Case("ckpt-other-bits", lambda c: ["--config-file", CONFIG, "--eval-only", "--checkpoint", str(c.checkpoint()),
                                       "--opts", *c.opts, "model.bits=32"],
         "was written for DCMHT with bits=16; the config builds DCMHT with bits=32"),
    Case("resume-changed-config", lambda c: ["--config-file", CONFIG, "--resume", str(c.checkpoint()), "--opts",
                                             *c.opts, "optimizer.lr=0.5"],
         "written with another config: optimizer.lr: 0.001 -> 0.5"),
    # ---------------------------------------------------------------- the run directory and faults
    Case("existing-run", opt(), "already holds a run"),
    Case("save-dir-file", lambda c: c.train(save_dir=c.write("plain.txt", "x")), "is a file"),
    Case("locked", resume_more_epochs, "is in use by process", fault=locked),
    Case("disk-full", resume_more_epochs, "no space left on device while writing", fault=full_disk,
         continues=True),
    Case("read-only", resume_more_epochs, "cannot write", fault=read_only, continues=True),
]


def results(files: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in files.items() if k.startswith(("checkpoints", "codes")) or k == "metrics.json"}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_nonzero_and_loses_nothing(case, context, capsys, monkeypatch):
    before = snapshot(context.run)
    argv = case.argv(context)
    undo = case.fault(context, monkeypatch) if case.fault is not None else None
    try:
        code = main(argv)
    finally:
        monkeypatch.undo()
        if undo is not None:
            undo()
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 1, (code, err)
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in captured.err + captured.out
    assert case.expected in err, (case.expected, err)
    after = snapshot(context.run)
    assert (results(after) == results(before)) if case.continues else (after == before)
    assert not list(context.run.rglob("*.tmp"))


def test_the_cases_cover_config_data_checkpoints_and_faults():
    assert len(CASES) >= 40 and len({case.name for case in CASES}) == len(CASES)
