"""tools/reproduce.py: a real 2 x 1 x 2 grid (killed, resumed), a failing cell, its table, the SLURM script, the
cost estimate, the reported numbers and the method pages rendered from them."""
import contextlib
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from tests.stubs import snapshot
from tools import reproduce

REPO = Path(__file__).resolve().parents[2]
TOOL = [sys.executable, str(REPO / "tools" / "reproduce.py")]
GRID = ["--methods", "CLIPBaseline", "DCMHT", "--datasets", "synthetic", "--bits", "16", "32"]
CELLS = [f"{m}/synthetic/{b}" for m in ("CLIPBaseline", "DCMHT") for b in (16, 32)]
EPOCHS = 2


def tiny_opts(data_root) -> list[str]:
    return [f"dataset.root={data_root}", "dataset.num_samples=120", "dataset.query_num=20", "dataset.train_num=60",
            f"run.epochs={EPOCHS}", "run.batch_size=20", "run.progress=false", "run.num_workers=0", "run.device=cpu"]


def last_epoch(run_dir: Path) -> int | None:
    metrics = reproduce.read_json(run_dir / "metrics.json")
    return metrics["last"]["epoch"] if metrics else None


def summary(stdout: str) -> dict[str, str]:
    """The status of each cell in the tool's closing summary."""
    return dict(re.findall(r"^  (\S+)\s+(finished|trained|FAILED)", stdout, re.M))


def run_in_process(args: list[str]) -> tuple[int, str]:
    """The tool's exit code and its own output (the cells' main.py write to the test's stdout and stderr)."""
    stdout, stderr = io.StringIO(), io.TextIOWrapper(io.BytesIO())
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = reproduce.main(args)
    return code, stdout.getvalue()


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The grid run for real, killed (with the cell it runs) once its first cell is complete, then run again to
    the end, and once more."""
    tmp = tmp_path_factory.mktemp("repro")
    root, opts = tmp / "runs", tiny_opts(tmp / "data")
    args = ["run", *GRID, "--root", str(root), "--opts", *opts]
    dirs = [root / cell for cell in CELLS]
    with open(tmp / "killed.log", "w") as log:
        first = subprocess.Popen([*TOOL, *args], stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
        while first.poll() is None and last_epoch(dirs[0]) != EPOCHS:
            time.sleep(0.05)
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    at_kill = {"first": snapshot(dirs[0]), "others": [last_epoch(d) for d in dirs[1:]]}
    return {"root": root, "dirs": dirs, "opts": opts, "at_kill": at_kill, "finished": run_in_process(args),
            "again": run_in_process(args)}


def test_grid_killed_after_its_first_cell_completes_only_the_missing_cells(grid):
    dirs, at_kill = grid["dirs"], grid["at_kill"]
    assert at_kill["others"] == [None, None, None]  # killed before any other cell finished an epoch
    code, out = grid["finished"]
    assert code == 0 and summary(out) == dict(zip(CELLS, ["finished", "trained", "trained", "trained"])), out
    code, out = grid["again"]
    assert code == 0 and "== " not in out and summary(out) == dict.fromkeys(CELLS, "finished"), out
    assert snapshot(dirs[0]) == at_kill["first"]  # the first cell was never touched again
    for run_dir in dirs:
        history = json.loads((run_dir / "metrics.json").read_text())["history"]
        assert [entry["epoch"] for entry in history] == list(range(1, EPOCHS + 1))
    found = {str(p.relative_to(grid["root"])) for p in grid["root"].glob("*/*/*")}
    assert set(CELLS) <= found and all("-replaced-" in name for name in found - set(CELLS))


def test_a_failed_cell_is_reported_and_the_others_go_on(grid, monkeypatch):
    """Each cell's command replaced by a stand-in that succeeds, or fails the way main.py does."""
    launched = []

    def stand_in(cell, run_dir, state, opts, nproc, accept_config_changes):
        launched.append((cell.name, state, accept_config_changes))
        script = "import sys; sys.exit('error: cannot train here')" if cell.bits == 32 else "pass"
        return [sys.executable, "-c", script]

    monkeypatch.setattr(reproduce, "main_command", stand_in)
    code, out = run_in_process(["run", *GRID, "--root", str(grid["root"]), "--accept-config-changes", "--opts",
                                *grid["opts"], "run.epochs=3"])
    assert code == 1 and launched == [(cell, "resume", True) for cell in CELLS]
    assert summary(out) == dict(zip(CELLS, ["trained", "FAILED", "trained", "FAILED"]))
    assert "4 cells, 2 failed" in out
    assert f"exit code 1: error: cannot train here (log: {grid['dirs'][1] / 'train.log'})" in out


def test_dry_run_and_torchrun_launcher_print_the_commands_and_run_nothing(grid, capsys):
    assert reproduce.main(["run", *GRID, "--root", str(grid["root"]), "--launcher", "torchrun", "--nproc-per-node",
                           "2", "--dry-run", "--opts", *grid["opts"], "run.epochs=3"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "would resume" in line]
    assert len(lines) == 4 and all("torch.distributed.run --standalone --nproc-per-node=2" in line for line in lines)
    assert all(f"--resume {d / 'checkpoints' / 'last.pt'}" in out for d in grid["dirs"])
    assert [last_epoch(d) for d in grid["dirs"]] == [EPOCHS] * 4


def read_markdown(path: Path) -> tuple[list[str], dict[tuple[str, str, str], list[str]]]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[tuple(cells[:3])] = cells[3:]
    return header, rows


def read_csv(path: Path) -> tuple[list[str], dict[tuple[str, str, str], list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], {tuple(row[:3]): row[3:] for row in rows[1:]}


def read_latex(path: Path) -> dict[tuple[str, str, str], list[str]]:
    rows = {}
    for line in path.read_text().splitlines():
        if line.endswith(r"\\") and not line.startswith(("method", " &")):
            cells = [cell.strip() for cell in line[:-2].split("&")]
            rows[tuple(cells[:3])] = cells[3:]
    return rows


def test_table_cells_equal_metrics_json_and_show_dashes_for_reported_only_cells(grid, tmp_path):
    out = tmp_path / "table"
    assert reproduce.main(["table", "--root", str(grid["root"]), "--methods", "CLIPBaseline", "DCMHT", "--datasets",
                           "synthetic", "coco", "--bits", "16", "32", "--out", str(out)]) == 0
    header, markdown = read_markdown(out / "table.md")
    csv_header, table_csv = read_csv(out / "table.csv")
    latex = read_latex(out / "table.tex")
    assert header == csv_header == ["method", "direction", "row", "synthetic 16", "synthetic 32", "MS-COCO 16",
                                    "MS-COCO 32"]
    for cell in CELLS:
        method, _, bits = cell.split("/")
        column = [16, 32].index(int(bits))
        metrics = json.loads((grid["root"] / cell / "metrics.json").read_text())
        best = next(e for e in metrics["history"] if e["epoch"] == metrics["best"]["mean"]["epoch"])
        for direction, name in (("i2t", "I→T"), ("t2i", "T→I")):
            expected = {"ours best": best[direction]["mAP@all"], "ours last": metrics["last"][direction]["mAP@all"],
                        "best epoch": metrics["best"]["mean"]["epoch"], "last epoch": metrics["last"]["epoch"]}
            for row, value in expected.items():
                assert float(table_csv[method, name, row][column]) == value
                text = str(value) if isinstance(value, int) else f"{value:.4f}"
                assert markdown[method, name, row][column] == text
                assert latex[method, reproduce._latex(name), row][column] == text
            for row in ("reported", "Δ best", "Δ last"):
                assert markdown[method, name, row][column] == table_csv[method, name, row][column] == "–"
                assert latex[method, reproduce._latex(name), reproduce._latex(row)][column] == "--"
    # MS-COCO has no runs: DCMHT's reported values beside dashes, CLIPBaseline (none reported) all dashes
    reported = reproduce.load_reported().results["DCMHT"]["coco"].values
    for direction, name in (("i2t", "I→T"), ("t2i", "T→I")):
        assert markdown["DCMHT", name, "reported"][2:] == [f"{reported[direction][b]:.4f}" for b in (16, 32)]
        assert markdown["DCMHT", name, "ours best"][2:] == markdown["CLIPBaseline", name, "reported"][2:] == ["–"] * 2
    assert (out / "plot_synthetic.png").stat().st_size > 0 and (out / "plot_coco.png").stat().st_size > 0


def legacy_map(query, db, query_labels, db_labels, k):
    """The reference calc_map_k, written out: per query, the mean of j / position_j over the first min(R, k)
    relevant items of the full stable Hamming ranking."""
    values = []
    for code, label in zip(query, query_labels):
        order = np.argsort(0.5 * (db.shape[1] - db @ code), kind="stable")
        positions = np.flatnonzero((db_labels[order] @ label) > 0)[:k] + 1
        values.append(np.mean(np.arange(1, len(positions) + 1) / positions) if len(positions) else 0.0)
    return float(np.mean(values))


def test_table_computes_the_papers_variant_from_the_saved_codes(grid):
    reported = reproduce.load_reported()
    reported.results["DCMHT"]["synthetic"] = reproduce.Reported("a test", True, "legacy@50", "tiny", {"i2t": {16: 0.5}})
    rows = {(d, r): v for _, d, r, v in reproduce.build_table(["DCMHT"], ["synthetic"], [16], grid["root"],
                                                               reported).rows}
    codes = {key: value.astype(np.float64) for key, value in
             scipy.io.loadmat(grid["root"] / "DCMHT/synthetic/16/codes/best.mat").items() if not key.startswith("__")}
    expected = legacy_map(codes["q_img"], codes["r_txt"], codes["q_l"], codes["r_l"], 50)
    assert rows["I→T", "ours best"][0] == pytest.approx(expected, abs=1e-6)
    assert rows["I→T", "Δ best"][0] == pytest.approx(expected - 0.5, abs=1e-6)
    assert rows["I→T", "reported"] == [0.5] and rows["T→I", "reported"] == [None]


def test_slurm_script_has_one_array_task_per_cell_and_passes_bash_n(tmp_path, capsys):
    assert reproduce.main(["run", *GRID, "--root", str(tmp_path), "--launcher", "slurm", "--partition", "gpu",
                           "--nproc-per-node", "4", "--time", "12:00:00", "--opts", "run.num_workers=8"]) == 0
    script = tmp_path / "reproduce.sbatch"
    assert f"sbatch {script}" in capsys.readouterr().out
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "#SBATCH --array=0-3" in text and "#SBATCH --partition=gpu" in text and "#SBATCH --gres=gpu:4" in text
    tasks = re.findall(r"^  (\d+)\) exec (.*) ;;$", text, re.M)
    assert [int(i) for i, _ in tasks] == [0, 1, 2, 3]
    for (_, command), cell in zip(tasks, CELLS):
        method, dataset, bits = cell.split("/")
        assert f"--methods {method} --datasets {dataset} --bits {bits}" in command
        assert "--launcher torchrun --nproc-per-node 4 --opts run.num_workers=8" in command


def test_estimate_prints_hours_per_cell_and_total(grid, capsys, one_thread):
    assert reproduce.main(["estimate", *GRID, "--steps", "2", "--opts", *grid["opts"]]) == 0
    out = capsys.readouterr().out
    hours = [float(h) for h in re.findall(r"^\S+: .* = ([\d.e+-]+) CPU-hours$", out, re.M)]
    assert len(hours) == 4 and all(h > 0 for h in hours)
    assert re.search(r"^\S+/synthetic/16: [\d.]+ s/step x 3 steps x 2 epochs \+ 2 evaluations", out, re.M)
    total = float(re.search(r"^total: ([\d.e+-]+) CPU-hours for 4 of 4 cells$", out, re.M).group(1))
    assert total == pytest.approx(sum(hours), rel=0.02)  # each printed to 3 digits


def test_estimate_on_a_real_config_names_the_missing_files(tmp_path, capsys):
    missing = tmp_path / "nodata"
    argv = ["estimate", "--methods", "DCMHT", "--datasets", "coco", "mirflickr", "--bits", "16", "--opts",
            f"dataset.root={missing}", "model.backbone.arch=tiny", "model.backbone.weights=null"]
    assert reproduce.main(argv) == 0
    out = capsys.readouterr().out
    for dataset in ("coco", "mirflickr"):
        assert f"DCMHT/{dataset}/16: cannot estimate: dataset file not found: {missing / 'index.mat'}" in out
    assert "total: 0 hours for 0 of 2 cells (2 could not be estimated: DCMHT/coco/16, DCMHT/mirflickr/16)" in out
    assert reproduce.main(["estimate", "--methods", "DCMHT", "--datasets", "coco", "--bits", "16"]) == 0
    assert "cannot estimate: CLIP weights file not found: ViT-B-32.pt" in capsys.readouterr().out


# Every value the reproduction issue quotes, by method, dataset and direction (16 / 32 / 64 bits).
QUOTED = {
    "DSPH": {"mirflickr": {"i2t": (0.8129, 0.8482, 0.8541), "t2i": (0.8000, 0.8238, 0.8294)},
             "nuswide": {"i2t": (0.6830, 0.6979, 0.7162), "t2i": (0.6997, 0.7153, 0.7304)},
             "coco": {"i2t": (0.7044, 0.7510, 0.7694), "t2i": (0.7040, 0.7556, 0.7713)}},
    "DNPH": {"mirflickr": {"i2t": (0.8108, 0.8269, 0.8229), "t2i": (0.8015, 0.8176, 0.8166)},
             "nuswide": {"i2t": (0.6689, 0.6811, 0.6939), "t2i": (0.6871, 0.6994, 0.7182)},
             "coco": {"i2t": (0.6438, 0.6910, 0.7294), "t2i": (0.6468, 0.7012, 0.7388)}},
    "WCH": {"cifar10": {"i2i": (0.897, 0.910, 0.932)}, "nuswide": {"i2i": (0.799, 0.823, 0.838)},
            "coco": {"i2i": (0.776, 0.808, 0.834)}},
    # the authors' tables, as the method specs and pages gave them
    "DCMHT": {"mirflickr": {"i2t": (0.8263, 0.8272, 0.8441), "t2i": (0.8116, 0.8137, 0.8281)},
              "nuswide": {"i2t": (0.6799, 0.6992, 0.7038), "t2i": (0.6876, 0.7104, 0.7253)},
              "coco": {"i2t": (0.6447, 0.6757, 0.6915), "t2i": (0.6531, 0.6832, 0.7025)}},
    "MITH": {"mirflickr": {"i2t": (0.8464, 0.8645, 0.8718), "t2i": (0.8228, 0.8389, 0.8468)},
             "nuswide": {"i2t": (0.7004, 0.7148, 0.7297), "t2i": (0.7140, 0.7276, 0.7401)},
             "coco": {"i2t": (0.7039, 0.7359, 0.7664), "t2i": (0.7017, 0.7358, 0.7661)}},
    "TwDH": {"mirflickr": {"i2t": (0.8783, 0.8927, 0.8993), "t2i": (0.8566, 0.8718, 0.8759)},
             "nuswide": {"i2t": (0.7842, 0.8144, 0.8191), "t2i": (0.7748, 0.7965, 0.7955)},
             "coco": {"i2t": (0.7348, 0.8051, 0.8422), "t2i": (0.7348, 0.8027, 0.8514)}},
}
METRICS = {"DSPH": "mAP@all", "DNPH": "mAP@all", "DCMHT": "mAP@all", "MITH": "mAP@all", "TwDH": "legacy@5000"}


def test_reported_file_holds_every_quoted_value_with_its_source():
    reported = reproduce.load_reported()
    for method, datasets in QUOTED.items():
        assert set(reported.results[method]) == set(datasets)
        for dataset, directions in datasets.items():
            table = reported.results[method][dataset]
            assert table.values == {d: dict(zip((16, 32, 64), v)) for d, v in directions.items()}
            assert table.metric == METRICS.get(method, "mAP@1000" if dataset == "cifar10" else "mAP@5000")
            assert table.protocol
    for method in ("DSPH", "DNPH"):
        assert all("KDPH" in t.source and not t.verified for t in reported.results[method].values())
    assert all("DimpleCrq/WCH images/2.png" in t.source for t in reported.results["WCH"].values())
    assert reported.results["WCH"]["cifar10"].protocol.startswith("cifar10 ")
    for method in ("DIMCH", "UMoED"):
        assert reported.results[method] == {} and reported.notes[method].startswith("Not found")


def test_table_of_the_real_datasets_prints_the_reported_values_beside_dashes(tmp_path, capsys):
    out = tmp_path / "table"
    assert reproduce.main(["table", "--root", str(tmp_path / "no-runs"), "--methods", "DSPH", "DNPH", "WCH", "DIMCH",
                           "--datasets", "mirflickr", "nuswide", "coco", "cifar10", "--bits", "16", "32", "64",
                           "--out", str(out)]) == 0
    _, rows = read_csv(out / "table.csv")
    columns = [(d, b) for d in ("mirflickr", "nuswide", "coco", "cifar10") for b in (16, 32, 64)]
    names = {"i2t": "I→T", "t2i": "T→I", "i2i": "I→I"}
    for method in ("DSPH", "DNPH", "WCH"):
        for direction in {d for by_dataset in QUOTED[method].values() for d in by_dataset}:
            expected = [QUOTED[method].get(d, {}).get(direction, (None,) * 3)[(16, 32, 64).index(b)]
                        for d, b in columns]
            assert [None if c == "–" else float(c) for c in rows[method, names[direction], "reported"]] == expected
            assert rows[method, names[direction], "ours best"] == ["–"] * len(columns)
    assert not any(key[0] == "DIMCH" for key in rows)
    text = (out / "table.md").read_text()
    assert "DSPH, MS-COCO: mAP@all; reported: Table 1 of the KDPH manuscript" in text and "; unverified;" in text
    assert "DIMCH: Not found" in text and "WCH, CIFAR-10: mAP@1000" in text
    assert capsys.readouterr().out.startswith(text)


def test_method_pages_show_the_reported_file():
    assert reproduce.render_docs(reproduce.load_reported(), check=True) == []
    for method in reproduce.load_reported().results:
        page = reproduce.METHOD_DOCS / f"{method}.md"
        if page.is_file():
            assert reproduce.block_markers(method)[0] in page.read_text()


def test_a_page_without_its_block_fails_the_check_until_rendered(tmp_path):
    reported = reproduce.load_reported()
    page = tmp_path / "WCH.md"
    page.write_text("## WCH\n\nText.\n")
    problems = reproduce.render_docs(reported, tmp_path, check=True)
    assert len(problems) == 1 and "WCH.md does not show docs/reported.yaml" in problems[0]
    assert page.read_text() == "## WCH\n\nText.\n"
    reproduce.render_docs(reported, tmp_path)
    assert reproduce.render_docs(reported, tmp_path, check=True) == []
    text = page.read_text()  # one table per metric, the paper's decimals kept
    assert "Reported mAP@1000, from the paper's main table as copied in DimpleCrq/WCH images/2.png" in text
    assert "| Task | CIFAR-10 16 | 32 | 64 |\n|---|---|---|---|\n| I→I | 0.897 | 0.910 | 0.932 |\n" in text
    assert "| Task | NUS-WIDE 16 | 32 | 64 | MS-COCO 16 | 32 | 64 |" in text
    assert "| I→I | 0.799 | 0.823 | 0.838 | 0.776 | 0.808 | 0.834 |" in text
    stale = text.replace("0.897", "0.900")
    page.write_text(stale)
    assert reproduce.render_docs(reported, tmp_path, check=True) and page.read_text() == stale


@pytest.mark.parametrize("edit, message", [
    (("0.8263", "1.8263"), "methods.DCMHT.results.mirflickr.values.i2t.16 must be a number between 0 and 1"),
    (("metric: legacy@5000", "metric: mAP@top"), "methods.TwDH.results.mirflickr.metric must be mAP@all, mAP@K"),
    (("          i2t: {16: 0.8129", "          x2y: {16: 0.8129"), "methods.DSPH.results.mirflickr.values must be"),
    (("    results: {}\n\n  MITH", "\n\n  MITH"), "methods.CLIPBaseline must be a mapping with the keys note and"),
])
def test_a_wrong_reported_file_is_one_line_naming_file_and_key(tmp_path, edit, message):
    path = tmp_path / "reported.yaml"
    text = reproduce.REPORTED.read_text()
    assert edit[0] in text
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(reproduce.ReproduceError, match=re.escape(f"{path}: {message}")) as err:
        reproduce.load_reported(path)
    assert "\n" not in str(err.value)


def test_bad_grids_are_refused_before_anything_runs(tmp_path, capsys):
    assert reproduce.main(["run", "--methods", "DCMHT", "NoSuch", "--datasets", "synthetic", "--bits", "16",
                           "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == ("reproduce.py: no config file configs/NoSuch/synthetic.yaml (a cell "
                                               "needs configs/<METHOD>/<dataset>.yaml)")
    assert reproduce.main(["run", *GRID, "--root", str(tmp_path), "--opts", "model.bits=8"]) == 2
    assert "--opts must not set model.bits" in capsys.readouterr().err
    assert reproduce.main(["table", "--root", str(tmp_path), "--methods", "DCHMT", "DCMHT", "--datasets",
                           "mirflicker", "coco"]) == 2
    assert capsys.readouterr().err.strip() == ("reproduce.py: DCHMT, mirflicker: neither a config "
                                               "(configs/<METHOD>/<dataset>.yaml) nor in the reported numbers")
    assert not any(tmp_path.iterdir())


def test_cell_state_decides_skip_resume_or_restart_from_the_run_directory(tmp_path):
    run_dir = tmp_path / "DCMHT" / "synthetic" / "16"
    cell = reproduce.Cell("DCMHT", "synthetic", 16)
    assert reproduce.cell_state(run_dir, 2) == "new"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("run: {}\n")  # killed before its first checkpoint
    assert reproduce.cell_state(run_dir, 2) == "restart"
    assert reproduce.main_command(cell, run_dir, "restart", [], None)[-1] == "--overwrite"
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"")
    (run_dir / "metrics.json").write_text(json.dumps({"last": {"epoch": 1}, "best": {}, "history": []}))
    assert reproduce.cell_state(run_dir, 2) == "resume"
    assert reproduce.main_command(cell, run_dir, "resume", ["run.epochs=2"], 2, True)[3:] == [
        "--standalone", "--nproc-per-node=2", str(REPO / "main.py"), "--config-file", str(cell.config_file),
        "--save-dir", str(run_dir), "--opts", "model.bits=16", "run.epochs=2", "--resume",
        str(run_dir / "checkpoints" / "last.pt"), "--accept-config-changes"]
    (run_dir / "metrics.json").write_text(json.dumps({"last": {"epoch": 2}, "best": {}, "history": []}))
    assert reproduce.cell_state(run_dir, 2) == "done" and reproduce.cell_state(run_dir, 3) == "resume"


def test_estimate_extrapolates_steps_and_evaluations_to_the_schedule():
    estimate = reproduce.Estimate(setup_s=36.0, step_s=0.5, steps_per_epoch=160, epochs=100, eval_s=90.0,
                                  evaluations=100, device="cuda")
    assert estimate.hours == (36 + 0.5 * 160 * 100 + 90 * 100) / 3600 and estimate.unit == "GPU-hours"
