"""Reproduce the papers' tables: a resumable grid of runs, its cost, and the table beside the reported numbers.

    python tools/reproduce.py run --methods DCMHT MITH --datasets mirflickr nuswide coco --bits 16 32 64
    python tools/reproduce.py run ... --launcher torchrun --nproc-per-node 4
    python tools/reproduce.py run ... --launcher slurm --partition gpu --nproc-per-node 4 --time 2-00:00:00
    python tools/reproduce.py estimate --methods DCMHT --datasets coco --bits 16
    python tools/reproduce.py table --root runs/repro [--methods ...] [--datasets ...] [--bits ...]
    python tools/reproduce.py docs

A grid cell is one method, dataset and code length: ``configs/<METHOD>/<dataset>.yaml`` with ``model.bits`` set,
trained by ``main.py`` into ``<root>/<METHOD>/<dataset>/<bits>``. ``run`` skips finished cells, resumes
interrupted ones from ``checkpoints/last.pt`` and goes on after a failed one. The reported numbers live in
``docs/reported.yaml``; ``table`` sets every cell's best and last epoch beside them, in the paper's metric, and
``docs`` renders them into the ``docs/methods/*.md`` pages. Nothing here knows a method, a dataset or a
direction: the configs, the runs' ``metrics.json`` and the reported file say them.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.config import load_config, resolve  # noqa: E402
from common.evaluation import DIRECTIONS, load_codes_mat  # noqa: E402
from common.metrics import MAP_VARIANTS, mean_average_precision  # noqa: E402
from main import register_all, user_message  # noqa: E402
from utils.io import atomic_write, atomic_write_text  # noqa: E402
from utils.run_dir import RunDirectory  # noqa: E402

REPORTED = ROOT / "docs" / "reported.yaml"
METHOD_DOCS = ROOT / "docs" / "methods"
DASH = "–"
METRIC = re.compile(r"(?P<variant>\w+)@(?P<k>all|[1-9]\d*)")


class ReproduceError(ValueError):
    """A grid, a reported file or a page cannot be used as asked; the one-line message says what to change."""


# ---------------------------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class Cell:
    """One run of the grid: a method's config for a dataset at one code length."""

    method: str
    dataset: str
    bits: int

    @property
    def name(self) -> str:
        return f"{self.method}/{self.dataset}/{self.bits}"

    @property
    def config_file(self) -> Path:
        return ROOT / "configs" / self.method / f"{self.dataset}.yaml"

    def run_dir(self, root: Path) -> Path:
        return root / self.method / self.dataset / str(self.bits)

    def opts(self, extra: list[str]) -> list[str]:
        return [f"model.bits={self.bits}", *extra]


def make_grid(methods: list[str], datasets: list[str], bits: list[int], opts: list[str]) -> list[Cell]:
    """Every (method, dataset, bits) cell, after checking that each config exists and no option sets the bits."""
    if any(item.split("=", 1)[0] == "model.bits" for item in opts):
        raise ReproduceError("--opts must not set model.bits: the grid sets it from --bits")
    missing = [str(Path("configs") / m / f"{d}.yaml") for m in methods for d in datasets
               if not (ROOT / "configs" / m / f"{d}.yaml").is_file()]
    if missing:
        raise ReproduceError(f"no config file {', '.join(missing)} (a cell needs configs/<METHOD>/<dataset>.yaml)")
    return [Cell(m, d, b) for m in methods for d in datasets for b in bits]


def read_json(path: Path) -> dict | None:
    """A JSON file's content, or None if it is missing or unreadable (a run writes it atomically, so a
    readable file is complete)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def scheduled_epochs(cell: Cell, opts: list[str]) -> int:
    """``run.epochs`` of the cell's resolved config (its file, its bases, --opts and the signature default)."""
    from runners.base import config_sections  # the runner and the models load only when a grid is run

    register_all()
    return resolve(load_config(cell.config_file, cell.opts(opts)), config_sections())["run"]["epochs"]


def cell_state(run_dir: Path, epochs: int) -> str:
    """``done`` when metrics.json records the last scheduled epoch (it is written atomically after that epoch's
    checkpoints and codes, so the run is complete), ``resume`` when a checkpoint to continue exists, ``restart``
    when the folder holds a run killed before its first checkpoint (moved aside, then trained afresh), else
    ``new``."""
    metrics = read_json(run_dir / "metrics.json") or {}
    if metrics.get("last", {}).get("epoch") == epochs:
        return "done"
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return "resume"
    return "restart" if RunDirectory(run_dir).existing_run() else "new"


def main_command(cell: Cell, run_dir: Path, state: str, opts: list[str], nproc: int | None,
                 accept_config_changes: bool = False) -> list[str]:
    """The ``main.py`` command of a cell, under torchrun when ``nproc`` is given."""
    launcher = [sys.executable] if nproc is None else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    command = [*launcher, str(ROOT / "main.py"), "--config-file", str(cell.config_file), "--save-dir", str(run_dir),
               "--opts", *cell.opts(opts)]
    if state == "resume":
        command += ["--resume", str(run_dir / "checkpoints" / "last.pt")]
        command += ["--accept-config-changes"] if accept_config_changes else []
    elif state == "restart":
        command += ["--overwrite"]
    return command


def run_streaming(command: list[str]) -> tuple[int, str]:
    """Run a command with its output on this terminal; returns its exit code and the last line it wrote to
    stderr (where main.py puts its one-line error)."""
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    tail = b""
    for chunk in iter(lambda: process.stderr.read1(65536), b""):
        sys.stderr.buffer.write(chunk)
        sys.stderr.flush()
        tail = (tail + chunk)[-4096:]
    lines = [line.strip() for line in re.split(rb"[\r\n]", tail) if line.strip()]
    return process.wait(), lines[-1].decode("utf-8", "replace") if lines else ""


def run_grid(cells: list[Cell], root: Path, opts: list[str], nproc: int | None, dry_run: bool,
             accept_config_changes: bool = False) -> int:
    """Train every unfinished cell in turn; a failed cell is reported and the others go on. Returns the number
    of failed cells."""
    outcomes = []
    for cell in cells:
        run_dir = cell.run_dir(root)
        try:
            state = cell_state(run_dir, scheduled_epochs(cell, opts))
        except (ValueError, KeyError) as err:  # the cell's config does not resolve: say so, go on with the others
            outcomes.append((cell, "FAILED", user_message(err)))
            continue
        if state == "done":
            outcomes.append((cell, "finished", "skipped"))
            continue
        command = main_command(cell, run_dir, state, opts, nproc, accept_config_changes)
        if dry_run:
            outcomes.append((cell, f"would {'train' if state == 'new' else state}", shlex.join(command)))
            continue
        print(f"== {cell.name}: {state} in {run_dir}", flush=True)
        code, last_line = run_streaming(command)
        outcomes.append((cell, "trained" if code == 0 else "FAILED",
                         "" if code == 0 else f"exit code {code}: {last_line} (log: {run_dir / 'train.log'})"))
    failed = sum(status == "FAILED" for _, status, _ in outcomes)
    print(f"\n{len(cells)} cells, {failed} failed:")
    for cell, status, detail in outcomes:
        print(f"  {cell.name:<32} {status:<14} {detail}")
    return failed


def slurm_script(cells: list[Cell], root: Path, opts: list[str], nproc: int, partition: str | None, time_limit: str,
                 cpus: int, accept_config_changes: bool = False) -> str:
    """An sbatch array script with one task per cell. Each task runs this tool on its one cell under torchrun,
    so whether the cell is skipped, resumed or trained is decided when the task starts."""
    header = ["#!/bin/bash", "#SBATCH --job-name=reproduce", f"#SBATCH --array=0-{len(cells) - 1}",
              "#SBATCH --nodes=1", "#SBATCH --ntasks=1", f"#SBATCH --gres=gpu:{nproc}",
              f"#SBATCH --cpus-per-task={cpus}", f"#SBATCH --time={time_limit}",
              f"#SBATCH --output={root.resolve() / 'slurm' / '%A_%a.out'}"]
    if partition:
        header.append(f"#SBATCH --partition={partition}")
    lines = [*header, "set -euo pipefail", f"cd {shlex.quote(str(ROOT))}", 'case "$SLURM_ARRAY_TASK_ID" in']
    for index, cell in enumerate(cells):
        command = [sys.executable, str(ROOT / "tools" / "reproduce.py"), "run", "--methods", cell.method,
                   "--datasets", cell.dataset, "--bits", str(cell.bits), "--root", str(root.resolve()),
                   "--launcher", "torchrun", "--nproc-per-node", str(nproc)]
        command += ["--accept-config-changes"] if accept_config_changes else []
        if opts:
            command += ["--opts", *opts]
        lines.append(f"  {index}) exec {shlex.join(command)} ;;")
    lines += ['  *) echo "no grid cell for array task $SLURM_ARRAY_TASK_ID" >&2; exit 1 ;;', "esac", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- the cost
@dataclass
class Estimate:
    """Measured times of one cell and their extrapolation to its whole schedule."""

    setup_s: float
    step_s: float
    steps_per_epoch: int
    epochs: int
    eval_s: float
    evaluations: int
    device: str

    @property
    def unit(self) -> str:
        return "GPU-hours" if self.device == "cuda" else f"{self.device.upper()}-hours"

    @property
    def hours(self) -> float:
        """Hours of the whole schedule on one device of the kind measured (under torchrun on N such devices the
        device-hours stay about the same, as each process takes 1/N of the steps)."""
        seconds = self.setup_s + self.step_s * self.steps_per_epoch * self.epochs + self.eval_s * self.evaluations
        return seconds / 3600


def estimate_cell(cell: Cell, opts: list[str], steps: int) -> Estimate:
    """Time the set-up, ``steps`` training steps (after one warm-up step) and one evaluation of a cell through
    the runner's own API, with no run directory (nothing is written)."""
    import torch

    from runners.base import runner_class
    from utils.distributed import cleanup

    register_all()
    start = time.perf_counter()
    cfg = load_config(cell.config_file, cell.opts(opts))
    runner = runner_class(cfg)(cfg, None)

    def synchronized() -> float:
        if runner.device.type == "cuda":
            torch.cuda.synchronize(runner.device)
        return time.perf_counter()

    try:
        runner.model.before_training(runner.training_context())
        runner.on_train_start()
        setup_s = synchronized() - start
        runner.model.train()
        groups, times = runner.micro_batch_groups(), []
        for _ in range(steps + 1):
            begin = time.perf_counter()
            group = next(groups, None)
            if group is None:
                break
            runner.train_step(group)
            times.append(synchronized() - begin)
        measured = times[1:] or times
        begin = time.perf_counter()
        runner.evaluate()
        eval_s = synchronized() - begin
        epochs, every = runner.run_cfg.epochs, runner.run_cfg.eval_every
        return Estimate(setup_s, sum(measured) / len(measured), runner.steps_per_epoch, epochs, eval_s,
                        epochs // every + (epochs % every != 0), runner.device.type)
    finally:
        runner.close()
        cleanup()


def estimate_grid(cells: list[Cell], opts: list[str], steps: int) -> None:
    """Print each cell's extrapolated cost and the total; a cell that cannot be built (a weights or data file
    missing) says why, and the others are still measured."""
    total, unknown, units = 0.0, [], set()
    for cell in cells:
        try:
            found = estimate_cell(cell, opts, steps)
        except Exception as err:  # every reason a cell cannot be built is reported the way main.py says it
            unknown.append(cell)
            print(f"{cell.name}: cannot estimate: {user_message(err)}", flush=True)
            continue
        total += found.hours
        units.add(found.unit)
        print(f"{cell.name}: {found.step_s:.3f} s/step x {found.steps_per_epoch} steps x {found.epochs} epochs + "
              f"{found.evaluations} evaluations x {found.eval_s:.1f} s + {found.setup_s:.1f} s set-up = "
              f"{found.hours:.3g} {found.unit}", flush=True)
    measured = len(cells) - len(unknown)
    print(f"total: {total:.3g} {' + '.join(sorted(units)) or 'hours'} for {measured} of {len(cells)} cells"
          + (f" ({len(unknown)} could not be estimated: {', '.join(c.name for c in unknown)})" if unknown else ""))


# ---------------------------------------------------------------------------------------------- reported numbers
@dataclass(frozen=True)
class Reported:
    """The values one paper table gives for one method on one dataset."""

    source: str
    verified: bool
    metric: str
    protocol: str
    values: dict[str, dict[int, float]]


@dataclass(frozen=True)
class ReportedFile:
    """``docs/reported.yaml``: per method a note and its tables by dataset, and the datasets' printed names."""

    datasets: dict[str, str]
    notes: dict[str, str | None]
    results: dict[str, dict[str, Reported]]

    def dataset_name(self, dataset: str) -> str:
        return self.datasets.get(dataset, dataset)


def _expect(ok: bool, path: Path, key: str, expected: str, value) -> None:
    if not ok:
        raise ReproduceError(f"{path}: {key} must be {expected}, got {value!r}")


def load_reported(path: Path = REPORTED) -> ReportedFile:
    """Read and check the reported-numbers file (see its header for the layout)."""
    try:
        content = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ReproduceError(f"cannot read the reported numbers {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ReproduceError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    _expect(isinstance(content, dict) and set(content) == {"datasets", "methods"}, path, "the top level",
            "a mapping with the keys datasets and methods", content if not isinstance(content, dict) else list(content))
    _expect(isinstance(content["datasets"], dict), path, "datasets", "a mapping of names", content["datasets"])
    notes, results = {}, {}
    for method, entry in (content["methods"] or {}).items():
        key = f"methods.{method}"
        _expect(isinstance(entry, dict) and set(entry) == {"note", "results"}, path, key,
                "a mapping with the keys note and results", entry)
        _expect(entry["note"] is None or isinstance(entry["note"], str), path, f"{key}.note", "text or null",
                entry["note"])
        _expect(isinstance(entry["results"], dict), path, f"{key}.results", "a mapping of datasets", entry["results"])
        notes[method] = entry["note"]
        results[method] = {dataset: _reported_table(path, f"{key}.results.{dataset}", table)
                           for dataset, table in entry["results"].items()}
    return ReportedFile({str(k): str(v) for k, v in content["datasets"].items()}, notes, results)


def _reported_table(path: Path, key: str, table) -> Reported:
    fields = ("source", "verified", "metric", "protocol", "values")
    _expect(isinstance(table, dict) and set(table) == set(fields), path, key,
            f"a mapping with the keys {', '.join(fields)}", table)
    for name in ("source", "protocol"):
        _expect(isinstance(table[name], str) and table[name].strip(), path, f"{key}.{name}", "text", table[name])
    _expect(isinstance(table["verified"], bool), path, f"{key}.verified", "true or false", table["verified"])
    _expect(isinstance(table["metric"], str) and parse_metric(table["metric"]) is not None, path, f"{key}.metric",
            "mAP@all, mAP@K or <variant>@K with a variant of common.metrics.MAP_VARIANTS", table["metric"])
    values = table["values"]
    _expect(isinstance(values, dict) and values and set(values) <= set(DIRECTIONS), path, f"{key}.values",
            f"a mapping from directions ({', '.join(DIRECTIONS)})", values)
    for direction, by_bits in values.items():
        _expect(isinstance(by_bits, dict) and by_bits, path, f"{key}.values.{direction}", "a mapping bits: value",
                by_bits)
        for bits, value in by_bits.items():
            _expect(isinstance(bits, int) and not isinstance(bits, bool) and bits > 0, path,
                    f"{key}.values.{direction}", "keyed by positive code lengths", bits)
            _expect(isinstance(value, float) and 0 <= value <= 1, path, f"{key}.values.{direction}.{bits}",
                    "a number between 0 and 1", value)
    return Reported(table["source"].strip(), table["verified"], table["metric"], table["protocol"].strip(),
                    {d: dict(sorted(v.items())) for d, v in values.items()})


def parse_metric(metric: str) -> tuple[str, int | None] | None:
    """``mAP@all`` -> (standard, None), ``mAP@1000`` -> (standard, 1000), ``legacy@5000`` -> (legacy, 5000);
    None if the name is not a mAP of ``common.metrics``."""
    match = METRIC.fullmatch(metric)
    if match is None:
        return None
    variant = "standard" if match["variant"] == "mAP" else match["variant"]
    if variant not in MAP_VARIANTS:
        return None
    return variant, None if match["k"] == "all" else int(match["k"])


def direction_name(direction: str) -> str:
    """i2t -> I→T (any x2y direction)."""
    source, _, target = direction.partition("2")
    return f"{source.upper()}→{target.upper()}" if target else direction


# ---------------------------------------------------------------------------------------------- our numbers
@dataclass
class RunRecord:
    """The evaluations a cell's run directory holds (its metrics.json and saved codes)."""

    run_dir: Path
    metrics: dict

    @property
    def directions(self) -> list[str]:
        """The directions the run ranked (those its best epoch is chosen by), from metrics.json."""
        return [d for d in self.metrics["best"] if d != "mean"]

    @property
    def primary(self) -> str:
        """The run's own primary metric: the value its best-epoch entries record beside the epoch."""
        entry = self.metrics["best"]["mean"]
        return next(key for key in entry if key != "epoch")

    def epoch(self, which: str) -> int:
        return self.metrics["best"]["mean"]["epoch"] if which == "best" else self.metrics["last"]["epoch"]

    def value(self, which: str, direction: str, metric: str) -> float | None:
        """``metric`` of ``direction`` at the best (by the run's mean primary metric, the epoch of best.pt) or
        the last epoch: from metrics.json when the run recorded it, else computed from the saved codes of that
        epoch, else None."""
        epoch = self.epoch(which)
        entry = next((e for e in self.metrics["history"] if e["epoch"] == epoch), {})
        if direction in entry and metric in entry[direction]:
            return entry[direction][metric]
        codes_file = self.run_dir / "codes" / f"{which}.mat"
        if not codes_file.is_file():
            return None
        return metric_from_codes(str(codes_file), self.tie_break, direction, metric)

    @property
    def tie_break(self) -> str:
        """The evaluation's tie rule, from the run's resolved config (which holds every key)."""
        return yaml.safe_load((self.run_dir / "config.yaml").read_text())["eval"]["tie_break"]


@lru_cache(maxsize=None)
def metric_from_codes(codes_file: str, tie_break: str, direction: str, metric: str) -> float | None:
    """A mAP variant computed from a run's saved ``codes/<tag>.mat`` (None if it lacks that direction's codes)."""
    codes, labels = load_codes_mat(codes_file)
    query, retrieval = DIRECTIONS[direction]
    if query not in codes or retrieval not in codes:
        return None
    variant, k = parse_metric(metric)
    return mean_average_precision(codes[query], codes[retrieval], labels["query"], labels["retrieval"], topk=k,
                                  variant=variant, tie_break=tie_break)


def read_runs(cells: Iterable[Cell], root: Path) -> dict[Cell, RunRecord]:
    """The run record of every cell whose run directory holds a metrics.json with an evaluation."""
    runs = {}
    for cell in cells:
        metrics = read_json(cell.run_dir(root) / "metrics.json")
        if metrics and metrics.get("last") and "mean" in metrics.get("best", {}):
            runs[cell] = RunRecord(cell.run_dir(root), metrics)
    return runs


# ---------------------------------------------------------------------------------------------- the table
ROWS = ("ours best", "best epoch", "ours last", "last epoch", "reported", "Δ best", "Δ last")


@dataclass
class Table:
    """The paper layout: rows method x direction x quantity, columns dataset x bits; None is a dash."""

    columns: list[tuple[str, int]]
    rows: list[tuple[str, str, str, list[float | int | None]]]
    notes: list[str]


def build_table(methods: list[str], datasets: list[str], bits: list[int], root: Path, reported: ReportedFile) -> Table:
    """Every cell's best and last epoch in the metric the paper reports (the run's own primary metric where no
    paper value exists), beside the reported value and the difference."""
    columns = [(d, b) for d in datasets for b in bits]
    runs = read_runs((Cell(m, d, b) for m in methods for d, b in columns), root)
    rows, notes = [], []
    for method in methods:
        tables = reported.results.get(method, {})
        directions = list(dict.fromkeys(
            [d for dataset in datasets if dataset in tables for d in tables[dataset].values]
            + [d for cell, run in runs.items() if cell.method == method for d in run.directions]))
        for direction in directions:
            cells = {name: [] for name in ROWS}
            for dataset, b in columns:
                table, run = tables.get(dataset), runs.get(Cell(method, dataset, b))
                paper = table.values.get(direction, {}).get(b) if table else None
                metric = table.metric if table else (run.primary if run else None)
                ours = {which: run.value(which, direction, metric) if run else None for which in ("best", "last")}
                cells["ours best"].append(ours["best"])
                cells["best epoch"].append(run.epoch("best") if run else None)
                cells["ours last"].append(ours["last"])
                cells["last epoch"].append(run.epoch("last") if run else None)
                cells["reported"].append(paper)
                for which in ("best", "last"):
                    both = ours[which] is not None and paper is not None
                    cells[f"Δ {which}"].append(ours[which] - paper if both else None)
            rows += [(method, direction_name(direction), name, values) for name, values in cells.items()]
        notes += table_notes(method, datasets, runs, reported)
    return Table(columns, rows, notes)


def table_notes(method: str, datasets: list[str], runs: dict[Cell, RunRecord], reported: ReportedFile) -> list[str]:
    """Per method and dataset: the metric of its cells, the source and split of the reported values."""
    notes = [f"{method}: {reported.notes[method]}"] if reported.notes.get(method) else []
    for dataset in datasets:
        table = reported.results.get(method, {}).get(dataset)
        name = f"{method}, {reported.dataset_name(dataset)}"
        if table:
            flag = "" if table.verified else "; unverified"
            notes.append(f"{name}: {table.metric}; reported: {table.source}{flag}; split: {table.protocol}")
        else:
            primary = next((run.primary for cell, run in runs.items()
                            if (cell.method, cell.dataset) == (method, dataset)), None)
            if primary:
                notes.append(f"{name}: {primary} (the run's own metric); no reported values")
    return notes


def _cell_text(value: float | int | None, row: str, exact: bool = False) -> str:
    if value is None:
        return DASH
    if isinstance(value, int):
        return str(value)
    if exact:
        return repr(value)
    return f"{value:+.4f}" if row.startswith("Δ") else f"{value:.4f}"


def _headers(table: Table, reported: ReportedFile) -> list[str]:
    return ["method", "direction", "row"] + [f"{reported.dataset_name(d)} {b}" for d, b in table.columns]


def to_markdown(table: Table, reported: ReportedFile) -> str:
    header = _headers(table, reported)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, direction, row, values in table.rows:
        lines.append("| " + " | ".join([method, direction, row] + [_cell_text(v, row) for v in values]) + " |")
    notes = [""] + [f"- {note}" for note in table.notes] + [
        f"- best = the epoch with the best mean primary metric over the ranked directions (best.pt); "
        f"{DASH} = no run or no reported value"]
    return "\n".join(lines + notes) + "\n"


def to_csv(table: Table, reported: ReportedFile) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_headers(table, reported))
    for method, direction, row, values in table.rows:
        writer.writerow([method, direction, row] + [_cell_text(v, row, exact=True) for v in values])
    return out.getvalue()


def _latex(text: str) -> str:
    text = re.sub(r"([&%$#_{}])", r"\\\1", text)
    return text.replace("→", r"$\to$").replace("Δ", r"$\Delta$").replace(DASH, "--")


def to_latex(table: Table, reported: ReportedFile) -> str:
    datasets = list(dict.fromkeys(d for d, _ in table.columns))
    per = len(table.columns) // len(datasets) if datasets else 0
    groups = " & ".join(rf"\multicolumn{{{per}}}{{c}}{{{_latex(reported.dataset_name(d))}}}" for d in datasets)
    bits = " & ".join(str(b) for _, b in table.columns)
    lines = [r"\begin{tabular}{lll" + "r" * len(table.columns) + "}", r"\hline",
             rf"method & direction & row & {groups} \\", rf" & & & {bits} \\", r"\hline"]
    for method, direction, row, values in table.rows:
        cells = [_latex(method), _latex(direction), _latex(row)] + [_latex(_cell_text(v, row)) for v in values]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\hline", r"\end{tabular}"] + [f"% {_latex(note)}" for note in table.notes]
    return "\n".join(lines) + "\n"


def plot_dataset(table: Table, dataset: str, reported: ReportedFile, path: Path) -> None:
    """Ours (best epoch) as solid lines against the reported values as dashed ones, one colour per method and
    direction, over the code lengths of one dataset."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    index = [i for i, (d, _) in enumerate(table.columns) if d == dataset]
    bits = [table.columns[i][1] for i in index]
    rows = {(m, d, r): values for m, d, r, values in table.rows}
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for number, (method, direction) in enumerate(dict.fromkeys((m, d) for m, d, _ in rows)):
        color = f"C{number % 10}"
        for row, style in (("ours best", "o-"), ("reported", "x--")):
            points = [(b, rows[method, direction, row][i]) for b, i in zip(bits, index)
                      if rows[method, direction, row][i] is not None]
            if points:
                ax.plot(*zip(*points), style, color=color, label=f"{method} {direction} {row}")
    ax.set(xscale="log", xlabel="bits", ylabel="mAP (the paper's metric)",
           title=f"{reported.dataset_name(dataset)}: ours (solid) vs reported (dashed)")
    ax.set_xticks(bits, [str(b) for b in bits])
    ax.minorticks_off()
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    atomic_write(path, lambda f: FigureCanvasAgg(fig).print_png(f))


def write_table(table: Table, reported: ReportedFile, out: Path) -> list[Path]:
    """table.md, table.csv, table.tex and plot_<dataset>.png under ``out``; returns the paths."""
    written = []
    for name, render in (("table.md", to_markdown), ("table.csv", to_csv), ("table.tex", to_latex)):
        atomic_write_text(out / name, render(table, reported))
        written.append(out / name)
    for dataset in dict.fromkeys(d for d, _ in table.columns):
        plot_dataset(table, dataset, reported, out / f"plot_{dataset}.png")
        written.append(out / f"plot_{dataset}.png")
    return written


def table_axes(args, root: Path, reported: ReportedFile) -> tuple[list[str], list[str], list[int]]:
    """The grid a table shows: what was asked for, else everything the reported file and the root hold."""
    found = [p.relative_to(root).parts for p in sorted(root.glob("*/*/*/metrics.json"))] if root.is_dir() else []
    methods = args.methods or list(dict.fromkeys([*reported.results, *(p[0] for p in found)]))
    datasets = args.datasets or list(dict.fromkeys(
        [d for m in methods for d in reported.results.get(m, {})] + [p[1] for p in found if p[0] in methods]))
    bits = args.bits or sorted({b for m in methods for t in reported.results.get(m, {}).values()
                                for v in t.values.values() for b in v} | {int(p[2]) for p in found if p[2].isdigit()})
    unknown = [m for m in methods if m not in reported.results and not (ROOT / "configs" / m).is_dir()]
    unknown += [d for d in datasets if not any(d in reported.results.get(m, {})
                                               or (ROOT / "configs" / m / f"{d}.yaml").is_file() for m in methods)]
    if unknown:
        raise ReproduceError(f"{', '.join(unknown)}: neither a config (configs/<METHOD>/<dataset>.yaml) nor in the "
                             f"reported numbers")
    return methods, datasets, bits


# ---------------------------------------------------------------------------------------------- the pages
def block_markers(method: str) -> tuple[str, str]:
    return (f"<!-- reported:{method} (generated from docs/reported.yaml by `python tools/reproduce.py docs`) -->",
            f"<!-- /reported:{method} -->")


def reported_block(method: str, reported: ReportedFile) -> str:
    """The Markdown a method's page shows for its reported numbers: one table per metric and source, printed
    with as many decimals as the paper gives."""
    begin, end = block_markers(method)
    tables, note = reported.results.get(method, {}), reported.notes.get(method)
    parts = [begin]
    if not tables:
        parts.append(fill(f"Reported numbers: none. {note or ''}".strip()))
    groups: dict[tuple, list[str]] = {}
    for dataset, table in tables.items():
        groups.setdefault((table.metric, table.source, table.verified), []).append(dataset)
    for (metric, source, verified), datasets in groups.items():
        protocols = {tables[d].protocol for d in datasets}
        splits = protocols.pop() if len(protocols) == 1 else "; ".join(
            f"{reported.dataset_name(d)}: {tables[d].protocol}" for d in datasets)
        flag = " **Unverified**: not checked against the paper itself." if not verified else ""
        parts.append(fill(f"Reported {metric}, from {source}. Split: {splits}.{flag}"))
        values = [v for d in datasets for by_bits in tables[d].values.values() for v in by_bits.values()]
        decimals = max(len(repr(v).partition(".")[2]) for v in values)
        bits = sorted({b for d in datasets for by_bits in tables[d].values.values() for b in by_bits})
        directions = list(dict.fromkeys(x for d in datasets for x in tables[d].values))
        header = ["Task"] + [f"{reported.dataset_name(d)} {b}" if i == 0 else str(b)
                             for d in datasets for i, b in enumerate(bits)]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for direction in directions:
            row = [tables[d].values.get(direction, {}).get(b) for d in datasets for b in bits]
            lines.append("| " + " | ".join([direction_name(direction)]
                                           + [DASH if v is None else f"{v:.{decimals}f}" for v in row]) + " |")
        parts.append("\n".join(lines))
    if tables and note:
        parts.append(fill(note))
    parts.append(end)
    return "\n\n".join(parts)


def fill(text: str) -> str:
    """A paragraph wrapped at the pages' 110 columns."""
    return textwrap.fill(text, width=110, break_long_words=False, break_on_hyphens=False)


def render_docs(reported: ReportedFile, folder: Path = METHOD_DOCS, check: bool = False) -> list[str]:
    """Rewrite every reported block of the method pages from the reported file; a method with its own page but
    no block gets it appended. With ``check``, write nothing and return what differs."""
    problems = []
    for page in sorted(folder.glob("*.md")):
        text = page.read_text()
        updated = text
        for method in reported.results:
            end = block_markers(method)[1]
            pattern = re.compile(re.escape(f"<!-- reported:{method} ") + r".*?" + re.escape(end), re.S)
            if pattern.search(updated):
                updated = pattern.sub(lambda _: reported_block(method, reported), updated)
            elif page.stem == method:
                updated = updated.rstrip("\n") + "\n\n" + reported_block(method, reported) + "\n"
        if updated != text:
            problems.append(f"{page.relative_to(ROOT) if page.is_relative_to(ROOT) else page} does not show "
                            f"docs/reported.yaml: run python tools/reproduce.py docs")
            if not check:
                atomic_write_text(page, updated)
    return problems


# ---------------------------------------------------------------------------------------------- the command line
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def grid_options(sub, required: bool) -> None:
        sub.add_argument("--methods", nargs="+", required=required, metavar="METHOD", help="registered methods")
        sub.add_argument("--datasets", nargs="+", required=required, metavar="DATASET",
                         help="dataset config names (configs/<METHOD>/<DATASET>.yaml)")
        sub.add_argument("--bits", nargs="+", type=int, required=required, metavar="BITS", help="code lengths")
        sub.add_argument("--root", type=Path, default=Path("runs/repro"),
                         help="run directories <root>/<method>/<dataset>/<bits> (default: runs/repro)")

    run = commands.add_parser("run", help="train every unfinished cell of the grid")
    grid_options(run, required=True)
    run.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="passed to every cell's main.py")
    run.add_argument("--launcher", choices=("sequential", "torchrun", "slurm"), default="sequential")
    run.add_argument("--nproc-per-node", type=int, default=1, metavar="N", help="torchrun / slurm: GPUs per cell")
    run.add_argument("--partition", help="slurm: partition")
    run.add_argument("--time", default="3-00:00:00", help="slurm: time limit per cell (default 3-00:00:00)")
    run.add_argument("--cpus-per-task", type=int, default=8, help="slurm: CPU cores per cell (default 8)")
    run.add_argument("--script", type=Path, help="slurm: where to write the script (default <root>/reproduce.sbatch)")
    run.add_argument("--accept-config-changes", action="store_true",
                     help="resume cells whose config changed since they started (e.g. a longer run.epochs)")
    run.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")

    estimate = commands.add_parser("estimate", help="time a few steps and one evaluation per cell, extrapolate")
    grid_options(estimate, required=True)
    estimate.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="passed to every cell")
    estimate.add_argument("--steps", type=int, default=5, help="timed training steps per cell (default 5)")

    table = commands.add_parser("table", help="the runs beside the reported numbers: Markdown, CSV, LaTeX, plots")
    grid_options(table, required=False)
    table.add_argument("--out", type=Path, help="folder of the table files (default <root>/table)")
    table.add_argument("--reported", type=Path, default=REPORTED, help="reported-numbers file")

    docs = commands.add_parser("docs", help="render the reported numbers into docs/methods/*.md")
    docs.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page differs")
    docs.add_argument("--reported", type=Path, default=REPORTED, help="reported-numbers file")
    args = parser.parse_args(argv)
    for name in ("nproc_per_node", "steps", "cpus_per_task"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def command_run(args) -> int:
    cells = make_grid(args.methods, args.datasets, args.bits, args.opts)
    if args.launcher == "slurm":
        script = slurm_script(cells, args.root, args.opts, args.nproc_per_node, args.partition, args.time,
                              args.cpus_per_task, args.accept_config_changes)
        if args.dry_run:
            print(script, end="")
            return 0
        path = args.script or args.root / "reproduce.sbatch"
        atomic_write_text(path, script)
        (args.root / "slurm").mkdir(parents=True, exist_ok=True)
        print(f"wrote {path}: an array of {len(cells)} tasks, one per cell; submit it with\n  sbatch {path}")
        return 0
    nproc = args.nproc_per_node if args.launcher == "torchrun" else None
    return 1 if run_grid(cells, args.root, args.opts, nproc, args.dry_run, args.accept_config_changes) else 0


def command_table(args) -> int:
    reported = load_reported(args.reported)
    methods, datasets, bits = table_axes(args, args.root, reported)
    table = build_table(methods, datasets, bits, args.root, reported)
    print(to_markdown(table, reported), end="")
    for path in write_table(table, reported, args.out or args.root / "table"):
        print(f"wrote {path}")
    return 0


def command_docs(args) -> int:
    problems = render_docs(load_reported(args.reported), check=args.check)
    for problem in problems:
        print(problem if args.check else f"updated {problem.split(' does not')[0]}")
    return 1 if args.check and problems else 0


COMMANDS: dict[str, Callable] = {
    "run": command_run,
    "estimate": lambda args: estimate_grid(make_grid(args.methods, args.datasets, args.bits, args.opts),
                                           args.opts, args.steps) or 0,
    "table": command_table,
    "docs": command_docs,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except (ReproduceError, OSError) as err:
        print(f"reproduce.py: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
