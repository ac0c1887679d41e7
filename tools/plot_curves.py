"""Overlay the PR and top-N curves of several runs: one PNG per direction (i2t, t2i) and curve type.

Usage: ``python tools/plot_curves.py RUN_DIR [RUN_DIR ...] [--out DIR]``. Reads each run's
``curves/{pr,topn}_{i2t,t2i}.csv`` (written by ``common.evaluation.save_curves``) and labels the lines by the
run directory's name. Exit code 2 with one line on stderr naming the run or file that is wrong.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.evaluation import CURVE_COLUMNS, CURVE_DIRECTIONS, CURVES, draw_curves, read_curve_csv  # noqa: E402


def _labels(runs: list[Path]) -> list[str]:
    """Run directory names, or their full paths where two names collide."""
    names = [run.resolve().name for run in runs]
    return [name if names.count(name) == 1 else str(run) for name, run in zip(names, runs)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories with curves/*.csv")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the PNG files (default: .)")
    args = parser.parse_args(argv)
    plots: dict[tuple[str, str], dict[str, dict]] = {}
    try:
        for run, label in zip(args.runs, _labels(args.runs)):
            folder = run / "curves"
            if not folder.is_dir():
                raise ValueError(f"{run}: no curves/ folder (is it a run directory?)")
            found = [(curve, direction) for curve in CURVES for direction in CURVE_DIRECTIONS
                     if (folder / f"{curve}_{direction}.csv").is_file()]
            if not found:
                raise ValueError(f"{folder}: no curve files ({{pr,topn}}_{{i2t,t2i}}.csv)")
            for curve, direction in found:
                path = folder / f"{curve}_{direction}.csv"
                columns = read_curve_csv(path)
                missing = [name for name in CURVE_COLUMNS[curve] if name not in columns]
                if missing:
                    raise ValueError(f"{path}: missing the column(s) {', '.join(missing)}")
                plots.setdefault((curve, direction), {})[label] = columns
        args.out.mkdir(parents=True, exist_ok=True)
        for (curve, direction), runs in plots.items():
            path = args.out / f"{curve}_{direction}.png"
            draw_curves(curve, direction, runs, path)
            print(path)
    except (ValueError, OSError) as err:
        print(f"plot_curves.py: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
