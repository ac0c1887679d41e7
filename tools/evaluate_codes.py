"""Evaluate hash codes saved as a .mat file (q_img, q_txt, r_img, r_txt, q_l, r_l) and print the table.

Usage: ``python tools/evaluate_codes.py RUN/codes/codes.mat [--topk all 1000 5000] [--precision-k 1 10 100]``.
Works on the files of the reference frameworks too. Exit code 2 with one line on stderr if the file cannot
be evaluated.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.evaluation import DIRECTIONS, EvalConfig, evaluate_retrieval, format_table, load_codes_mat  # noqa: E402
from common.metrics import TIE_BREAKS  # noqa: E402


def _topk(text: str) -> int | None:
    if text == "all":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    defaults = EvalConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help=".mat file with keys q_img, q_txt, r_img, r_txt, q_l, r_l")
    parser.add_argument("--topk", nargs="+", type=_topk, default=list(defaults.map_topk), metavar="K",
                        help="mAP cut-offs ('all' = full ranking; default: all 1000 5000)")
    parser.add_argument("--precision-k", nargs="+", type=int, default=list(defaults.precision_k), metavar="K",
                        help="cut-offs of P@K, R@K and NDCG@K")
    parser.add_argument("--directions", nargs="+", choices=list(DIRECTIONS), default=list(defaults.directions))
    parser.add_argument("--tie-break", choices=TIE_BREAKS, default=defaults.tie_break)
    parser.add_argument("--no-tie-aware", action="store_true", help="skip the tie-aware mAP@all")
    parser.add_argument("--chunk-size", type=int, default=None, help="queries per chunk (default: automatic)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        codes, labels = load_codes_mat(args.file)
    except ValueError as err:
        print(f"evaluate_codes.py: {err}", file=sys.stderr)
        return 2
    try:
        cfg = EvalConfig(map_topk=args.topk, precision_k=args.precision_k, tie_aware=not args.no_tie_aware,
                         tie_break=args.tie_break, directions=args.directions, chunk_size=args.chunk_size)
        results = evaluate_retrieval(codes, labels, cfg)
    except ValueError as err:
        print(f"evaluate_codes.py: {args.file}: {err}", file=sys.stderr)
        return 2
    print(json.dumps(results, indent=2) if args.json else format_table(results, cfg.tie_break))
    return 0


if __name__ == "__main__":
    sys.exit(main())
