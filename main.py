"""Train or evaluate a hashing method from one YAML file.

    python main.py --config-file configs/DCMHT/synthetic.yaml
    python main.py --config-file configs/DCMHT/coco.yaml --save-dir runs/dcmht_coco --opts model.bits=32
    python main.py --config-file configs/DCMHT/coco.yaml --resume runs/x/checkpoints/last.pt
    python main.py --config-file configs/DCMHT/coco.yaml --eval-only --checkpoint runs/x/checkpoints/best.pt
    python main.py --list

A run directory belongs to one run: training into one that holds a run needs --resume (continue it) or
--overwrite (move the old run aside). Evaluation-only results go to <run directory>/eval/<checkpoint>-<n>/,
never over the training history. Any error ends the program with one line on stderr and exit code 1 (2 for
bad command-line usage).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Deep hashing retrieval: train / evaluate a config.")
    parser.add_argument("--config-file", help="YAML config (may inherit from _base_ files)")
    parser.add_argument("--save-dir", help="run directory (default: runs/<config name>-<time>; with --resume or "
                                           "--eval-only, the checkpoint's run directory)")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override existing config keys, e.g. run.epochs=3 model.bits=32")
    parser.add_argument("--resume", metavar="CKPT", help="continue training exactly from a checkpoint")
    parser.add_argument("--accept-config-changes", action="store_true",
                        help="with --resume: continue with a config that differs from the checkpoint's")
    parser.add_argument("--overwrite", action="store_true",
                        help="train into a run directory that holds a run, moving the old run aside first")
    parser.add_argument("--eval-only", action="store_true", help="only evaluate (needs --checkpoint)")
    parser.add_argument("--checkpoint", metavar="CKPT", help="model weights for --eval-only")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (overrides run.device)")
    parser.add_argument("--seed", type=int, help="overrides run.seed")
    parser.add_argument("--list", action="store_true", help="print everything registered and exit")
    args = parser.parse_args(argv)
    if not args.list and not args.config_file:
        parser.error("--config-file is required (or --list)")
    if args.eval_only and not args.checkpoint:
        parser.error("--eval-only needs --checkpoint CKPT")
    if args.resume and (args.overwrite or args.eval_only):
        parser.error("--resume continues a run: it goes with neither --overwrite nor --eval-only")
    return args


def register_all():
    """Import the packages whose modules register models, datasets, runners and optimisers."""
    import dataset  # noqa: F401
    import models  # noqa: F401
    import runners  # noqa: F401
    from common.register import registry
    return registry


def default_save_dir(config_file: str) -> Path:
    path = Path(config_file)
    return Path("runs") / f"{path.parent.name}-{path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_dir_of(checkpoint: str) -> Path | None:
    """The run directory a checkpoint lies in (``<run>/checkpoints/x.pt``), or None."""
    path = Path(checkpoint)
    return path.parent.parent if path.parent.name == "checkpoints" else None


def eval_dir(run_dir: Path, checkpoint: str) -> Path:
    """A new folder for one evaluation-only run: ``<run>/eval/<checkpoint stem>-<n>``."""
    number = 1
    while (run_dir / "eval" / f"{Path(checkpoint).stem}-{number}").exists():
        number += 1
    return run_dir / "eval" / f"{Path(checkpoint).stem}-{number}"


def save_dir_and_mode(args: argparse.Namespace) -> tuple[Path, str]:
    """Where this command writes, and how it may treat what is already there (utils/run_dir.py)."""
    given = Path(args.save_dir) if args.save_dir else None
    if args.eval_only:
        run_dir = given or run_dir_of(args.checkpoint) or default_save_dir(args.config_file)
        return eval_dir(run_dir, args.checkpoint), "new"
    if args.resume:
        return given or run_dir_of(args.resume) or default_save_dir(args.config_file), "resume"
    return given or default_save_dir(args.config_file), "overwrite" if args.overwrite else "new"


def run(args: argparse.Namespace) -> dict | None:
    registry = register_all()
    if args.list:
        print(registry)
        return None
    from common.config import load_config
    overrides = list(args.opts) + ([f"run.seed={args.seed}"] if args.seed is not None else [])
    cfg = load_config(args.config_file, overrides)
    from runners.base import runner_class
    runner_cls = runner_class(cfg)
    save_dir, mode = save_dir_and_mode(args)
    runner = runner_cls(cfg, save_dir, device=args.device, mode=mode)
    try:
        if args.eval_only:
            runner.load_checkpoint(args.checkpoint, resume=False)
            runner.epoch = 0
            runner.evaluate_and_record()
            runner.logger.info(f"evaluation results: {save_dir}")
            return runner.summary()
        if args.resume:
            runner.load_checkpoint(args.resume, resume=True, accept_config_changes=args.accept_config_changes)
        baseline = runner.random_code_baseline()
        summary = runner.fit()
        key, last = runner.evaluator.primary, summary["last"]
        if last:
            runner.logger.info(f"final {key} " + "  ".join(f"{d}={last[d][key]:.4f}" for d in baseline)
                               + f"  (run directory: {save_dir})")
        runner.logger.info(f"random codes on this split: {key} " + "  ".join(
            f"{d}={v:.4f}" for d, v in baseline.items()))
        return summary
    finally:
        runner.close()
        from utils.distributed import cleanup
        cleanup()


def main(argv=None) -> int:
    args = parse_args(argv)
    return exit_code(lambda: run(args))


def exit_code(action) -> int:
    """Run a command line's action: 0 when it succeeds, 130 on Ctrl-C, and 1 with the error's one line on stderr
    for any failure (the traceback is logged at debug level, or raised with HASHING_DEBUG=1)."""
    try:
        action()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # every failure becomes one line for the user; the traceback on demand
        if os.environ.get("HASHING_DEBUG"):
            raise
        from utils.logging import get_logger
        get_logger().debug("error", exc_info=True)
        print(f"error: {user_message(err)}", file=sys.stderr)
        return 1
    return 0


def user_message(err: BaseException) -> str:
    """The line of an error a user needs. An error re-raised from a DataLoader worker process starts with
    'Caught X in DataLoader worker process N.' and carries the original message on its last line."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    worker = re.match(r"Caught \w+ in (DataLoader worker process \d+)\.", lines[0])
    if worker and len(lines) > 1:
        original = re.sub(r"^[\w.]*(Error|Exception)\w*: ", "", lines[-1])
        return f"{original} (in {worker.group(1)})"
    return lines[0]


if __name__ == "__main__":
    sys.exit(main())
