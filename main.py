"""Train or evaluate a hashing method from one YAML file.

    python main.py --config-file configs/DCMHT/synthetic.yaml
    python main.py --config-file configs/DCMHT/coco.yaml --save-dir runs/dcmht_coco --opts model.bits=32
    python main.py --config-file configs/DCMHT/coco.yaml --eval-only --checkpoint runs/x/checkpoints/best.pt
    python main.py --list

Any error ends the program with one line on stderr and exit code 1 (2 for bad command-line usage).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Deep hashing retrieval: train / evaluate a config.")
    parser.add_argument("--config-file", help="YAML config (may inherit from _base_ files)")
    parser.add_argument("--save-dir", help="run directory (default: runs/<config name>-<time>)")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override existing config keys, e.g. run.epochs=3 model.bits=32")
    parser.add_argument("--resume", metavar="CKPT", help="continue training exactly from a checkpoint")
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
    save_dir = args.save_dir or default_save_dir(args.config_file)
    runner = runner_cls(cfg, save_dir, device=args.device)
    try:
        if args.eval_only:
            runner.load_checkpoint(args.checkpoint, resume=False)
            runner.epoch = 0
            runner.evaluate_and_record()
            return runner.summary()
        if args.resume:
            runner.load_checkpoint(args.resume, resume=True)
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
    try:
        run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # every failure becomes one line for the user; the traceback on demand
        if os.environ.get("HASHING_DEBUG"):
            raise
        from utils.logging import get_logger
        get_logger().debug("error", exc_info=True)
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
