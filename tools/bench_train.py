"""Training throughput of our loop against a minimal hand-written PyTorch loop, and of the feature cache.

Both loops train the same tiny CLIP DCMHT model on the same synthetic batches with the same BertAdam, on the
CPU, in this one run; epochs alternate between the two so machine noise hits both alike. Prints samples/s,
the overhead of our loop (ratio of epoch times) and the speed-up of the frozen-backbone feature-cache path
over full fine-tuning.

    python tools/bench_train.py [--epochs 5] [--samples 2000] [--batch-size 50]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from common.config import load_config  # noqa: E402
from main import register_all  # noqa: E402
from runners.base import BaseRunner  # noqa: E402
from utils.logging import get_logger  # noqa: E402

CONFIG = "configs/DCMHT/synthetic.yaml"


def make_runner(root: str, args, *extra: str) -> BaseRunner:
    opts = [f"dataset.root={root}", f"dataset.num_samples={args.samples}", f"dataset.train_num={args.samples // 2}",
            f"run.batch_size={args.batch_size}", "run.num_workers=0", "run.progress=false", "run.device=cpu",
            "run.log_every=1000000", *extra]
    runner = BaseRunner(load_config(CONFIG, opts), None)
    get_logger().setLevel("WARNING")  # the runner set up INFO logging; keep the table readable
    return runner


def hand_written_epoch(model, optimizer, dataset, batch_size: int, epoch: int) -> None:
    """The minimal loop: shuffle, forward, loss, backward, step."""
    model.train()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(epoch))
    for batch in loader:
        losses = model.loss(model(batch), batch)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=50)
    args = parser.parse_args()
    register_all()
    with tempfile.TemporaryDirectory() as tmp:
        ours = make_runner(tmp, args)
        model = copy.deepcopy(ours.model)
        groups = model.param_groups()
        from runners.optim import build_bert_adam
        optimizer, _ = build_bert_adam(groups, total_steps=ours.steps_per_epoch * args.epochs, lr=1e-3,
                                       backbone_lr=1e-3)
        train = ours.data.train
        ours_times, hand_times = [], []
        hand_written_epoch(model, optimizer, train, args.batch_size, -1)  # warm-up of both paths
        ours.train_epoch(0)
        for epoch in range(args.epochs):
            ours_times.append(timed(lambda: ours.train_epoch(epoch)))
            hand_times.append(timed(lambda: hand_written_epoch(model, optimizer, train, args.batch_size, epoch)))
        n = len(train)
        t_ours, t_hand = statistics.median(ours_times), statistics.median(hand_times)

        full = make_runner(tmp, args, "model.freeze_backbone=false")
        start = time.perf_counter()
        cached = make_runner(tmp, args, "model.freeze_backbone=true", "run.feature_cache=true",
                             f"run.feature_cache_dir={tmp}/features")
        build = time.perf_counter() - start
        full_times = [timed(lambda: full.train_epoch(e)) for e in range(args.epochs)]
        cached_times = [timed(lambda: cached.train_epoch(e)) for e in range(args.epochs)]
        t_full, t_cached = statistics.median(full_times), statistics.median(cached_times)

    print(f"tiny CLIP DCMHT, {n} training pairs, batch {args.batch_size}, CPU threads {torch.get_num_threads()}, "
          f"median of {args.epochs} epochs")
    print(f"{'loop':<34}{'epoch s':>10}{'samples/s':>12}")
    print(f"{'hand-written PyTorch loop':<34}{t_hand:>10.3f}{n / t_hand:>12.1f}")
    print(f"{'our runner (BaseRunner)':<34}{t_ours:>10.3f}{n / t_ours:>12.1f}")
    print(f"overhead of our loop: {100 * (t_ours / t_hand - 1):+.1f}% (ratio {t_ours / t_hand:.3f})")
    print(f"{'full fine-tuning':<34}{t_full:>10.3f}{n / t_full:>12.1f}")
    print(f"{'frozen backbone + feature cache':<34}{t_cached:>10.3f}{n / t_cached:>12.1f}")
    print(f"feature-cache speed-up per epoch: {t_full / t_cached:.1f}x (one-time cache build and set-up "
          f"{build:.1f} s)")


if __name__ == "__main__":
    main()
